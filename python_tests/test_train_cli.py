"""`hebm train / sample / eval`: the run directory, atomic checkpoints (exact resumption after SIGKILL: see
test_resume.py), the divergence guard, the anomaly protocol and data-parallel training under torchrun (issue: a real research tool)."""
import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from hebm_ext import checkpoint as ckpt_io

from helpers import hebm, losses

FAST = ["e_l_steps=10", "g_l_steps=5"]




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "lebm")
    p = hebm("train", "--method", "lebm", "--preset", "digits", "--out", run, "--max-steps", "12", "--ckpt-every",
             "5", "--sample-every", "6", "--log-every", "2", "--n-eval", "100", "--no-progress", *FAST)
    return run, p.stdout


def test_run_directory(trained):
    run, stdout = trained
    for f in ("config.json", "log.txt", "losses.jsonl", "samples/step_0000006.png", "samples/step_0000012.png",
              "samples.png", "loss_curve.png", "metrics.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert os.path.exists(os.path.join(run, f)), f
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert {"digits_fid", "digits_fid_gaussian_prior", "mse"} <= set(metrics) and metrics["step"] == 12
    cfg = json.load(open(os.path.join(run, "config.json")))
    assert cfg["method"] == "lebm" and cfg["config"]["e_l_steps"] == 10 and cfg["max_steps"] == 12
    assert [r["step"] for r in losses(run)] == [2, 4, 6, 8, 10, 12]
    c = ckpt_io.load(os.path.join(run, "checkpoints", "last.pt"))
    assert c["method"]["step"] == 12
    for word in ("samples:", "checkpoint:", "metrics:"):
        assert word in stdout
    # a finished run is not silently overwritten
    p = hebm("train", "--method", "lebm", "--out", run, "--max-steps", "2", "--no-progress", check=False)
    assert p.returncode != 0 and "already holds a run" in p.stderr


def test_sample_and_eval(trained, tmp_path):
    run, _ = trained
    ck = os.path.join(run, "checkpoints", "last.pt")
    out = str(tmp_path / "s.png")
    hebm("sample", ck, "-n", "16", "--out", out, "--tensor")
    assert os.path.getsize(out) > 0 and torch.load(str(tmp_path / "s.pt")).shape == (16, 1, 8, 8)
    hebm("eval", ck, "--fid", "--mse", "-n", "100", "--out", str(tmp_path / "m.json"))
    res = json.load(open(tmp_path / "m.json"))
    assert res["digits_fid"] > 0 and res["mse"] > 0 and "digits_fid_gaussian_prior" in res
    # without -n / --seed, eval uses the run's counts and seed: it reproduces metrics.json
    p = hebm("eval", ck, "--no-progress")
    again = json.load(open(os.path.join(run, "metrics_eval.json")))
    want = json.load(open(os.path.join(run, "metrics.json")))
    assert str(os.path.join(run, "metrics_eval.json")) in p.stdout
    for k in ("digits_fid", "digits_fid_gaussian_prior", "mse"):
        assert again[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k
    with pytest.raises(ValueError, match="not a hebm_ext checkpoint|could not be read"):
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"not a checkpoint")
        ckpt_io.load(str(bad))


def test_divergence_guard(tmp_path):
    run = str(tmp_path / "div")
    p = hebm("train", "--method", "lebm", "--preset", "digits", "--out", run, "--max-steps", "40", "--ckpt-every",
             "1", "--log-every", "1", "--no-progress", "g_lr=1e4", "e_lr=1e4", *FAST, check=False)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "diverged at step" in p.stderr and "the last good checkpoint is" in p.stderr
    c = ckpt_io.load(os.path.join(run, "checkpoints", "last.pt"))
    assert f"(step {c['method']['step']})" in p.stderr
    assert all(torch.isfinite(v).all() for v in c["method"]["modules"].values() if v.is_floating_point())
    # and it resumes from there (with the same settings it would diverge again, so stop right away)
    assert hebm("train", "--method", "lebm", "--out", run, "--resume", "--max-steps", str(c["method"]["step"]),
                "--no-progress", "--n-eval", "50", *FAST).returncode == 0


def test_anomaly_protocol(tmp_path):
    run = str(tmp_path / "anom")
    hebm("train", "--method", "lebm", "--preset", "digits", "--out", run, "--max-steps", "4", "--heldout-digit", "1",
         "--n-eval", "50", "--no-progress", *FAST)
    hebm("eval", os.path.join(run, "checkpoints", "last.pt"), "--anomaly", "--out", str(tmp_path / "a.json"))
    res = json.load(open(tmp_path / "a.json"))
    assert 0 <= res["anomaly_auprc"] <= 1 and 0 <= res["anomaly_auroc"] <= 1 and res["anomaly_anomalies"] > 100


# the launcher's local TCP rendezvous can lose a race for its port (known flakes of torch.distributed's own tests):
# such a launch is retried once, with a warning; any other failure fails the test. Also retried: a rank aborting at
# interpreter exit with "terminate called without an active exception" after its work is done, seen once in six
# launches under torch 2.14.1+cu130 (the CUDA wheel venv of .ci/run; never under 2.13): a torch teardown issue
# (Gloo's C++ threads at exit; hebm's main() now leaves the group, barrier then destroy_process_group, before
# the interpreter's teardown), not this package's; the retry, in a clean output directory, keeps a real failure
# failing.
_TRANSPORT_FLAKES = ("Address already in use", "Connection closed by peer", "Connection reset by peer",
                     "Connection refused", "terminate called without an active exception")


def _torchrun(*args, fresh=None, timeout=300):
    """Run ``args`` under a 2-process torchrun; ``fresh`` (a path) is removed before a retry, so that the retry
    starts where the first launch did (a training run refuses a directory that already holds a run)."""
    e = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    for attempt in range(2):
        if attempt and fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
        p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)
        out = p.stdout[-3000:] + p.stderr[-3000:]
        if p.returncode == 0 or attempt or not any(f in p.stdout + p.stderr for f in _TRANSPORT_FLAKES):
            break
        warnings.warn(f"torchrun launch failed on the local transport, retrying once:\n{out}")
    assert p.returncode == 0, out
    return p


def test_torchrun_two_processes(tmp_path):
    run = str(tmp_path / "ddp")
    _torchrun("-m", "hebm_ext.cli", "train", "--method", "lebm", "--preset", "digits", "--out", run, "--max-steps",
              "6", "--ckpt-every", "3", "--log-every", "1", "--n-eval", "60", "--no-progress", *FAST, fresh=run)
    rows = losses(run)
    assert [r["step"] for r in rows] == list(range(1, 7))
    cfg = json.load(open(os.path.join(run, "config.json")))
    assert cfg["world"] == 2
    assert ckpt_io.load(os.path.join(run, "checkpoints", "last.pt"))["trainer"]["world"] == 2


def test_fid_statistics_of_two_processes_equal_one(tmp_path):
    import hebm_ext as H
    from hebm_ext import distributed as hdist, evaluate

    out = str(tmp_path / "stats.pt")
    script = os.path.join(os.path.dirname(__file__), "dist_fid_stats.py")
    _torchrun(script, out)
    two = torch.load(out)
    one = evaluate.data_stats(H.data.Digits(split="test"), 300, hdist.DistInfo(), "digits")
    assert two["n"] == one.n == 300
    torch.testing.assert_close(torch.as_tensor(two["mu"]), torch.as_tensor(one.mu), rtol=0, atol=1e-10)
    torch.testing.assert_close(torch.as_tensor(two["sigma"]), torch.as_tensor(one.sigma), rtol=0, atol=1e-10)
