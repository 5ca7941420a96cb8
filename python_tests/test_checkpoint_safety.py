"""Checkpoints cannot run code (weights_only=True; a crafted pickle is refused by `hebm sample`, `hebm eval` and
`hebm train --resume` and runs nothing), old-format files still load, a full disk says so and keeps the previous
checkpoint, and temporary files of writers killed mid-write are removed."""
import errno
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import hebm_ext as H
from hebm_ext import checkpoint as ckpt_io

FAST = ["e_l_steps=5", "g_l_steps=3"]


class _Evil:
    """Unpickling this runs a shell command (what a crafted checkpoint does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(path, marker):
    torch.save({"format": ckpt_io.FORMAT, "method": _Evil(str(marker)), "trainer": {}, "rng": {}}, str(path))


def hebm(*args, timeout=300):
    e = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "hebm_ext.cli", *args], capture_output=True, text=True, env=e,
                          timeout=timeout)


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    _crafted(bad, marker)
    # the file really is dangerous: loaded as torch.load used to, it runs the command
    torch.load(str(bad), weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ckpt_io.CheckpointError, match=r"evil\.pt.* holds objects other than tensors .*refused"):
        ckpt_io.load(str(bad))
    assert not marker.exists()


def test_cli_refuses_a_crafted_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    _crafted(bad, marker)
    for args in (["sample", str(bad), "-n", "4", "--out", str(tmp_path / "s.png")],
                 ["eval", str(bad), "--mse", "--out", str(tmp_path / "m.json")]):
        p = hebm(*args)
        assert p.returncode == 2 and "refused" in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert not marker.exists(), f"hebm {args[0]} ran the crafted checkpoint's command"
    # a run directory whose last.pt was replaced by a crafted file
    run = tmp_path / "run"
    assert hebm("train", "--method", "lebm", "--out", str(run), "--max-steps", "2", "--n-eval", "20",
                "--sample-every", "0", "--no-progress", *FAST).returncode == 0
    assert os.path.isabs(json.load(open(run / "config.json"))["options"]["out"])  # a run stores absolute paths
    _crafted(run / "checkpoints" / "last.pt", marker)
    p = hebm("train", "--out", str(run), "--resume", "--max-steps", "4", "--no-progress")
    assert p.returncode == 2 and "refused" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not marker.exists(), "hebm train --resume ran the crafted checkpoint's command"


def test_real_checkpoints_are_plain_data(tmp_path):
    """What the trainer writes loads with torch.load(weights_only=True) and no extra globals, after training
    steps (optimizer moments, schedulers) of every method."""
    for name in H.methods.METHODS:
        torch.manual_seed(0)
        m = H.methods.create(name, "digits", batch_size=8, **({"vae_steps": 1} if name == "diffusion-ebm" else {}),
                             **({"e_l_steps": 2} if name != "dual-mcmc" else {"e_l_steps": 2, "l_steps": 2}),
                             **({"g_l_steps": 2} if name in ("lebm", "joint-ebm", "multistage-nce") else {}))
        x = H.data.Digits(split="train")
        batch = torch.stack([x[i][0] for i in range(8)])
        for _ in range(2):
            m.train_step(batch)
        m.end_epoch()
        p = str(tmp_path / f"{name}.pt")
        ckpt_io.atomic_save({"format": ckpt_io.FORMAT, "method": m.state_dict(), "rng": ckpt_io.rng_state()}, p)
        raw = torch.load(p, weights_only=True)
        assert raw["method"]["step"] == 2
        m2 = ckpt_io.method_from_checkpoint(ckpt_io.load(p))
        for (k, a), b in zip(m.state_dict()["modules"].items(), m2.state_dict()["modules"].values()):
            assert torch.equal(a, b), k


def test_rng_state_round_trip():
    s = ckpt_io.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt_io.set_rng_state(s)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_format_1_checkpoints_still_load(tmp_path):
    """The first trainer pickled numpy's state as an ndarray and Python's as a tuple: read without running code
    (numpy's array reconstructor is the only extra global), and its RNG states restore."""
    np.random.seed(5)
    random.seed(5)
    old = {"format": 1, "method": H.methods.create("lebm", "digits").state_dict(),
           "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
           "trainer": {"epoch": 0}}
    p = str(tmp_path / "old.pt")
    torch.save(old, p)
    with pytest.raises(Exception):
        torch.load(p, weights_only=True)  # plain weights_only refuses numpy arrays
    c = ckpt_io.load(p)
    want = (np.random.rand(2), random.random())
    ckpt_io.set_rng_state(c["rng"])
    assert np.array_equal(np.random.rand(2), want[0]) and random.random() == want[1]
    ckpt_io.method_from_checkpoint(c)


def test_damaged_and_foreign_files(tmp_path):
    for content, match in ((b"not a checkpoint", "could not be read"), (None, "is not a hebm_ext checkpoint")):
        p = tmp_path / "x.pt"
        if content is None:
            torch.save({"weights": torch.zeros(2)}, str(p))
        else:
            p.write_bytes(content)
        with pytest.raises(ckpt_io.CheckpointError, match=match):
            ckpt_io.load(str(p))
    with pytest.raises(ckpt_io.CheckpointError, match="does not exist"):
        ckpt_io.load(str(tmp_path / "missing.pt"))


def test_full_disk_names_the_path_and_keeps_the_previous_file(tmp_path, monkeypatch):
    """Writes to /dev/full fail with ENOSPC, as on a full disk."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    path = str(tmp_path / "last.pt")
    ckpt_io.atomic_save({"step": 1, "w": torch.ones(3)}, path)
    monkeypatch.setattr(ckpt_io, "_open_tmp", lambda tmp: (open(tmp, "wb").close(), open("/dev/full", "wb"))[1])
    big = {"step": 2, "w": torch.ones(1 << 16)}
    with pytest.raises(OSError, match=r"No space left on device: could not write .*last\.pt") as e:
        ckpt_io.atomic_save(big, path)
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(OSError, match="No space left on device"):
        ckpt_io.write_text_atomic(str(tmp_path / "metrics.json"), "x" * (1 << 16))
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1, "the previous checkpoint must stay"
    assert os.listdir(tmp_path) == ["last.pt"], "no temporary file may stay behind"


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    host = ckpt_io._HOST
    names = {f".last.pt.tmp.{host}.{dead.pid}": False,      # ours, dead: removed
             f".last.pt.tmp{dead.pid}": False,                # the first trainer's naming, dead: removed
             f".best.pt.tmp.{host}.{os.getppid()}": True,     # a live writer: kept
             f".last.pt.tmp.otherhost.{dead.pid}": True,      # another host's writer may be alive: kept
             "last.pt": True, "notes.tmp": True}
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    removed = ckpt_io.remove_stale_tmp(str(tmp_path))
    assert sorted(os.path.basename(p) for p in removed) == sorted(n for n, keep in names.items() if not keep)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, keep in names.items() if keep)
    assert ckpt_io.tmp_path(str(tmp_path / "a.pt")).endswith(f".a.pt.tmp.{host}.{os.getpid()}")
