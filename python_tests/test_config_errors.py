"""Configs are checked before anything runs: every field's kind and range (methods/config.py) at methods.create,
with the field named; the CLI prints such errors as one line (exit 2) and writes nothing; train_step refuses
images that are not floats in [-1, 1]; diffusion-ebm refuses a run that ends inside its first stage."""
import dataclasses
import importlib
import os
import subprocess
import sys

import pytest
import torch

import hebm_ext as H
from hebm_ext.methods import METHODS
from hebm_ext.methods.config import ConfigError, unranged_fields, validate

_FILES = {"lebm": "lebm", "joint-ebm": "joint_ebm", "diffusion-ebm": "diffusion_ebm",
          "multistage-nce": "multistage_nce", "dual-mcmc": "dual_mcmc"}


def _config_class(name):
    mod = importlib.import_module(f"hebm_ext.methods.{_FILES[name]}")
    return mod, next(v for k, v in vars(mod).items() if k.endswith("Config") and dataclasses.is_dataclass(v))


@pytest.mark.parametrize("name", METHODS)
def test_every_field_has_a_rule_and_every_preset_is_valid(name):
    mod, cls = _config_class(name)
    assert unranged_fields(cls) == [], (f"{cls.__name__}: numeric fields without a range; add a rule to RULES or "
                                        "CLASS_RULES in hebm_ext/methods/config.py")
    for preset, values in mod.PRESETS.items():
        validate(cls, values)


# the bad values of the issue, and more: (method, overrides, words the one-line message must contain)
BAD = [
    ("lebm", {"e_l_steps": -5}, ["e_l_steps must be an integer >= 1, got -5"]),
    ("lebm", {"e_betas": 0.5}, ["e_betas must be a tuple of 2 numbers >= 0 and < 1", "got 0.5"]),
    ("lebm", {"prior_backend": "foo"}, ["prior_backend must be one of ('auto', 'fused', 'reference'), got 'foo'"]),
    ("lebm", {"posterior_backend": "fused"}, ["posterior_backend must be one of ('auto', 'eager', 'graph')"]),
    ("lebm", {"e_activation": "relu"}, ["e_activation must be one of"]),
    ("lebm", {"e_lr": float("nan")}, ["e_lr must be a finite number"]),
    ("lebm", {"g_lr": 0}, ["g_lr must be a number > 0, got 0"]),
    ("lebm", {"e_gamma": 1.5}, ["e_gamma must be a number > 0 and <= 1"]),
    ("lebm", {"nz": 2.5}, ["nz must be an integer"]),
    ("lebm", {"batch_size": True}, ["batch_size must be an integer, got True"]),
    ("lebm", {"dataset": "imagenet"}, ["dataset must be one of"]),
    ("joint-ebm", {"z_dims": (4,)}, ["z_dims must be a tuple of integers >= 1 with at least 2 items, e.g. (8, 16)"]),
    ("joint-ebm", {"z_dims": "abc"}, ["z_dims must be a tuple of integers >= 1, e.g. (8, 16), got 'abc'"]),
    ("joint-ebm", {"z_dims": (4, 8, 8)}, ["head_hidden needs one entry per item of z_dims (3"]),
    ("joint-ebm", {"scheme": "vae"}, ["scheme must be one of ('mcmc', 'variational', 'two-stage'), got 'vae'"]),
    ("joint-ebm", {"ebm_in_elbo": 1}, ["ebm_in_elbo must be True or False"]),
    ("diffusion-ebm", {"T": 1}, ["T must be an integer >= 2"]),
    ("dual-mcmc", {"bn_mode": "x", "sample_l_steps": 0}, ["bn_mode must be one of ('train', 'eval')",
                                                          "sample_l_steps must be an integer >= 1, got 0"]),
    ("multistage-nce", {"iters_per_stage": (1, 2, "a")}, ["iters_per_stage must be an integer >= 1 or a tuple"]),
    ("multistage-nce", {"reinit_prob": 2.0}, ["reinit_prob must be a number >= 0 and <= 1"]),
    ("multistage-nce", {"prior_sampling": "replay"}, ["prior_sampling must be one of ('short_run', 'persistent')"]),
]


@pytest.mark.parametrize("name,overrides,words", BAD, ids=[f"{b[0]}-{'-'.join(b[1])}" for b in BAD])
def test_bad_values_name_the_field(name, overrides, words):
    with pytest.raises(ConfigError) as e:
        H.methods.create(name, "digits", **overrides)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_values_are_normalised():
    m = H.methods.create("lebm", "digits", e_betas=[0.5, 0.9], epochs=1e3, e_lr=1, e_l_steps=5)
    c = m.config
    assert c.e_betas == (0.5, 0.9) and c.epochs == 1000 and isinstance(c.epochs, int)
    assert c.e_lr == 1.0 and isinstance(c.e_lr, float)
    # "(from the preset)" tells a preset's value from the user's
    with pytest.raises(ConfigError, match=r"head_hidden .* \(from the preset\)"):
        H.methods.create("joint-ebm", "digits", z_dims=(4, 8, 8))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['e_l_stpes'\]"):
        H.methods.create("lebm", "digits", e_l_stpes=5)


def test_train_step_refuses_images_outside_the_range():
    m = H.methods.create("lebm", "digits", e_l_steps=2, g_l_steps=2)
    x = H.data.Digits(split="train")[0][0].expand(4, -1, -1, -1)
    with pytest.raises(TypeError, match=r"floating-point images in \[-1, 1\], got torch.uint8"):
        m.train_step(((x + 1) * 127.5).to(torch.uint8))
    with pytest.raises(ValueError, match=r"pixels in \[-1, 1\], got values in \[0, [0-9.]+\] \(pixels in \[0, 255\]"):
        m.train_step((x + 1) * 127.5)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]: 2 x - 1"):
        m.train_step((x + 1) / 2 + 0.5)
    with pytest.raises(ValueError, match="pixels in"):
        m.train_step(torch.full_like(x, float("nan")))
    m.train_step(x)


def test_diffusion_ebm_run_that_ends_in_stage_1():
    from hebm_ext import distributed as hdist
    from hebm_ext.train import TrainOptions, Trainer

    m = H.methods.create("diffusion-ebm", "digits")
    data = H.data.Digits(split="train")
    with pytest.raises(ConfigError, match=r"200 steps end inside stage 1 \(the VAE, vae_steps = 1000\)"):
        Trainer(m, data, data, TrainOptions(out="unused", max_steps=200), hdist.DistInfo())
    Trainer(m, data, data, TrainOptions(out="unused", max_steps=1001), hdist.DistInfo())


def hebm(*args):
    return subprocess.run([sys.executable, "-m", "hebm_ext.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)


@pytest.mark.parametrize("args,words", [
    (["--method", "lebm", "e_l_steps=-5"], "e_l_steps must be an integer >= 1, got -5"),
    (["--method", "joint-ebm", "z_dims=abc"], "z_dims must be a tuple of integers >= 1, e.g. (8, 16), got 'abc'"),
    (["--method", "lebm", "prior_backend=foo"], "prior_backend must be one of"),
    (["--method", "diffusion-ebm", "--max-steps", "200"], "200 steps end inside stage 1"),
    (["--method", "lebm", "--preset", "svhn"], "svhn"),  # no --data-root: the reader says what it expects
    (["--method", "lebm", "e_l_steps"], "config overrides are key=value, got 'e_l_steps'"),
])
def test_cli_prints_one_line_exits_2_and_writes_nothing(tmp_path, args, words):
    out = tmp_path / "run"
    p = hebm("train", "--out", str(out), "--no-progress", *args)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("hebm train: "), err
    assert words in err, err
    assert not out.exists(), "nothing may be written before the config is valid"


def test_eval_checks_every_metric_first(tmp_path):
    run = tmp_path / "run"
    p = hebm("train", "--method", "lebm", "--out", str(run), "--max-steps", "2", "--n-eval", "20",
             "--sample-every", "0", "--no-progress", "e_l_steps=3", "g_l_steps=2")
    assert p.returncode == 0, p.stderr
    out = tmp_path / "m.json"
    # the anomaly protocol needs --heldout-digit at training: refused before FID and MSE are computed
    p = hebm("eval", str(run / "checkpoints" / "last.pt"), "--fid", "--mse", "--anomaly", "--out", str(out))
    assert p.returncode == 2 and "--anomaly: the checkpoint was not trained with --heldout-digit" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not out.exists()
    p = hebm("eval", str(run / "checkpoints" / "last.pt"), "--fid-stats", str(tmp_path / "none.npz"))
    assert p.returncode == 2 and "--fid-stats" in p.stderr and "does not exist" in p.stderr
