"""The methods (issue: methods part 1): a few train_steps on the embedded digits, the documented shapes, exact
state_dict round trips, presets against ALGORITHMS.md, and no Langevin loop inside a method."""
import inspect
import re

import pytest
import torch

from hebm_ext import methods
from helpers import assert_round_trip, digits_batch, params

CASES = [("lebm", {}), ("joint-ebm", {"scheme": "mcmc"}), ("joint-ebm", {"scheme": "variational", "refine_steps": 2}),
         ("diffusion-ebm", {"vae_steps": 2})]
SMALL = {"lebm": dict(e_l_steps=5, g_l_steps=5), "joint-ebm": dict(e_l_steps=5, g_l_steps=5),
         "diffusion-ebm": dict(e_l_steps=4)}


def make(name, **kw):
    torch.manual_seed(0)
    return methods.create(name, "digits", **SMALL[name], **kw)


@pytest.mark.parametrize("name,kw", CASES, ids=lambda v: v if isinstance(v, str) else str(v.get("scheme", "")))
def test_train_steps_shapes_and_round_trip(name, kw):
    m = make(name, **kw)
    x = digits_batch()
    before = params(m)
    for _ in range(4):  # the diffusion prior passes from stage 1 to stage 2 here
        out = m.train_step(x)
        assert out and all(isinstance(v, float) and v == v and abs(v) < 1e12 for v in out.values()), out
    changed = [k for k, v in params(m).items() if not torch.equal(v, before[k])]
    assert changed, "no parameter changed"
    if name == "diffusion-ebm":
        assert m.stage == 2 and any(k.startswith("heads.") for k in changed)
    assert m.sample(5).shape == (5, 1, 8, 8)
    s = m.sample(5)
    assert s.min() >= -1 and s.max() <= 1
    assert m.reconstruct(x[:3]).shape == (3, 1, 8, 8)
    score = m.anomaly_score(x[:3])
    assert score.shape == (3,) and torch.isfinite(score).all()

    # a state_dict round trip reproduces the next train_step exactly
    state = m.state_dict()
    twin = make(name, **kw)
    twin.load_state_dict(state)
    assert_round_trip(m, twin, x)


def test_create_errors():
    with pytest.raises(ValueError, match="name must be one of"):
        methods.create("vae")
    with pytest.raises(ValueError, match="preset must be one of"):
        methods.create("lebm", "imagenet")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['e_steps'\]"):
        methods.create("lebm", e_steps=3)
    with pytest.raises(ValueError, match="scheme must be one of"):
        methods.create("joint-ebm", scheme="vi")
    m = make("lebm")
    with pytest.raises(ValueError, match=r"x must be a batch of images \[B, 1, 8, 8\]"):
        m.train_step(torch.randn(4, 64))
    with pytest.raises(ValueError, match="state is for method 'lebm', this is 'joint-ebm'"):
        make("joint-ebm").load_state_dict(m.state_dict())


def test_presets_follow_the_papers():
    """ALGORITHMS.md section 9 (K, s), 1.3, 3.1 and 6.3-6.6 (sigma, learning rates, betas, batch sizes)."""
    c = methods.create("lebm", "svhn").config
    assert (c.e_l_steps, c.e_l_step_size, c.g_l_steps, c.g_l_step_size) == (60, 0.4, 20, 0.1)
    assert (c.g_llhd_sigma, c.e_prior_sig, c.nz, c.ndf, c.ngf) == (0.3, 1.0, 100, 200, 64)
    assert (c.g_lr, c.e_lr, c.g_betas, c.e_betas, c.batch_size, c.e_gamma) == (1e-4, 2e-5, (0.5, 0.999), (0.5, 0.999), 100, 0.998)
    c = methods.create("joint-ebm", "cifar10").config
    assert (c.e_l_steps, c.e_l_step_size, c.g_l_steps, c.g_l_step_size, c.g_llhd_sigma) == (60, 0.4, 40, 0.1, 0.3)
    assert tuple(c.z_dims) == (100, 128) and (c.ladder_hidden, c.ladder_depth, c.sigma_min, c.sigma_top) == (200, 4, 0.01, 1.01)
    assert tuple(c.head_hidden) == (100, 200) and tuple(c.head_depth) == (2, 3)
    assert (c.g_lr, c.e_lr, c.batch_size) == (1e-4, 2e-5, 100)
    c = methods.create("diffusion-ebm", "cifar10").config
    assert (c.T, c.e_l_steps, c.b_square, c.e_lr, c.e_betas, c.e_weight_decay, c.e_gamma) == (3, 50, 3e-5, 4e-5, (0.99, 0.999), 3e-5, 0.9)
    c = methods.create("diffusion-ebm", "cifar10-mlp").config  # the flat stand-in keeps the paper's heads and top
    assert (c.e_spectral_norm, c.sigma_top) == (True, 1.01)  # ebm_net.py's spectral norm; NVAE's top exp(0) + 0.01
    c = methods.create("diffusion-ebm", "celeba64").config
    assert (c.e_l_steps, c.b_square, c.e_gamma, c.e_spectral_norm, c.sigma_top) == (30, 2e-5, 0.98, True, 1.01)
    m = methods.create("diffusion-ebm", "cifar10-mlp")
    assert all(h.spectral_norm for h in m.heads) and m.gen.ladder.sigma_top == 1.01
    for dataset in ("svhn", "cifar10"):  # LEBM's weights_init_xavier on the generator's convs (1.1)
        m = methods.create("lebm", dataset)
        assert m.config.g_init == "xavier"
        w = next(mod for mod in m.generator.modules() if isinstance(mod, torch.nn.ConvTranspose2d)).weight
        fan_in, fan_out = w.shape[1] * w[0, 0].numel(), w.shape[0] * w[0, 0].numel()
        assert float(w.detach().std()) == pytest.approx((2.0 / (fan_in + fan_out)) ** 0.5, rel=0.05)
    c = methods.create("multistage-nce", "svhn").config  # the shared parts are LEBM's (4.1, section 9)
    assert (c.e_l_steps, c.e_l_step_size, c.g_l_steps, c.g_l_step_size, c.g_llhd_sigma) == (60, 0.4, 20, 0.1, 0.3)
    assert (c.nz, c.ngf, c.g_lr, c.g_betas, c.batch_size) == (100, 64, 1e-4, (0.5, 0.999), 100)
    m = methods.create("dual-mcmc", "cifar10")  # 5.2-5.4
    c = m.config
    assert (c.nz, c.ngf, c.ndf, c.nif, c.Gfactor, c.Sfactor, c.Ifactor) == (128, 512, 512, 128, 1.0, 50.0, 0.1)
    assert (c.e_l_steps, c.e_l_step_size, c.e_n_step_size, c.l_steps, c.l_step_size, c.n_step_size, c.sig) == \
        (30, 0.5, 1e-3, 10, 0.1, 0.1, 0.3)
    assert m.mcmc_temp == pytest.approx(4e-6) and (m.x_schedule.h[0], m.x_schedule.n[0]) == (0.125, 1e-3)
    assert (m.z_schedule.h[0], m.z_schedule.n[0]) == (pytest.approx(0.005), 0.1)
    assert [(g["lr"], g["betas"], g["weight_decay"]) for k in "gei" for g in m.optimizers[k].param_groups] == \
        [(3e-4, (0.0, 0.9), 5e-4), (1e-4, (0.0, 0.9), 0.0), (1e-4, (0.0, 0.9), 5e-4)]
    assert (c.use_temp, c.fine_tune, c.add_sn, c.bn_mode, c.gamma, c.batch_size) == \
        (True, True, True, "train", 0.998, 100)
    c = methods.create("dual-mcmc", "celeba64").config
    assert (c.ngf, c.ndf, c.e_l_step_size, c.Sfactor) == (1024, 1024, 0.3, 70.0)
    assert (c.crop, c.hflip) == ("dual-mcmc", True)  # dataset.py's crop box and flips (5.4)
    assert methods.create("lebm", "celeba64").config.crop == "lebm"
    for name in methods.METHODS:
        for preset in methods.presets(name):
            if preset != "digits":
                methods.create(name, preset)  # every paper preset builds


def test_no_method_has_its_own_langevin_loop():
    """Every chain goes through sample_prior (fused) or langevin (generic): no autograd.grad in a method file."""
    for mod in ("lebm", "joint_ebm", "diffusion_ebm", "hvae", "base", "multistage_nce", "dual_mcmc"):
        src = inspect.getsource(__import__(f"hebm_ext.methods.{mod}", fromlist=["x"]))
        assert "autograd.grad" not in src and not re.search(r"randn_like\(z\)", src), mod
