"""A run directory owns its configuration, and a run survives SIGKILL (also mid-write), SIGINT and SIGTERM:
`--resume` continues it bit for bit, each step is logged once, no temporary file stays, and a command line that
would change the run is refused without touching a file."""
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from hebm_ext import checkpoint as ckpt_io

from helpers import hebm, losses

FAST = ["e_l_steps=5", "g_l_steps=3"]
STEPS = 32
ARGS = ["train", "--method", "lebm", "--preset", "digits", "--max-steps", str(STEPS), "--ckpt-every", "4",
        "--log-every", "1", "--sample-every", "0", "--n-eval", "40", "--no-progress", *FAST]
ENV = dict(os.environ, OMP_NUM_THREADS="1")




def snapshot(run):
    """Every file of a run directory and its content hash."""
    out = {}
    for d, _, files in os.walk(run):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, run)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def tmp_files(run):
    return [os.path.join(d, f) for d, _, files in os.walk(run) for f in files if ".tmp" in f]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("ref") / "ref")
    hebm(*ARGS, "--out", run)
    return run


def _wait_for(pred, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not pred():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the moment this test interrupts it"


def test_kill_anywhere_and_resume_is_exact(reference, tmp_path):
    """SIGKILL mid-write (inside the second checkpoint's write: the temporary file is complete, the rename has not
    happened), SIGKILL at a random moment, SIGTERM; each time --resume; the result equals the uninterrupted run."""
    run = str(tmp_path / "killed")
    last = os.path.join(run, "checkpoints", "last.pt")
    # 1. a writer that stalls inside the second checkpoint write (after its data, before fsync + rename)
    stall = ("import os, sys, time; import hebm_ext.checkpoint as c; real = c._fsync; "
             f"c._fsync = lambda fd: time.sleep(600) if os.path.exists({last!r}) else real(fd); "
             "from hebm_ext.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", stall, *ARGS, "--out", run], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_for(lambda: os.path.exists(last) and [f for f in tmp_files(run) if "last.pt" in f], proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(tmp_files(run)) == 1 and ckpt_io.step_of(last) == 4, "killed mid-write: old checkpoint + a tmp file"
    # 2. --resume, then SIGKILL at a random moment after the next checkpoint
    rng = random.Random(os.getpid())
    proc = subprocess.Popen([sys.executable, "-m", "hebm_ext.cli", *ARGS, "--out", run, "--resume"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: (ckpt_io.step_of(last) or 0) >= 8, proc)
    assert not tmp_files(run), "the resumed run removes the dead writer's temporary file"
    time.sleep(rng.uniform(0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = ckpt_io.step_of(last)
    assert step is not None and step >= 8, "never a corrupt checkpoint"
    # 3. --resume, then SIGTERM: a checkpoint at the current step and exit 143 with one line
    proc = subprocess.Popen([sys.executable, "-m", "hebm_ext.cli", *ARGS, "--out", run, "--resume"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (ckpt_io.step_of(last) or 0) > step, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    stopped = ckpt_io.step_of(last)
    assert f"interrupted by SIGTERM at step {stopped}: checkpoint {last} written" in err and "Traceback" not in err
    assert stopped < STEPS and len(err.strip().splitlines()) == 1, err
    log = open(os.path.join(run, "log.txt")).read()
    assert f"interrupted by SIGTERM: checkpoint {last} written at step {stopped}" in log
    # 4. the last --resume finishes the run
    hebm(*ARGS, "--out", run, "--resume")
    a, b = losses(reference), losses(run)
    assert [r["step"] for r in b] == list(range(1, STEPS + 1)), "each step logged once"
    assert a == b, "the resumed run's losses differ from the uninterrupted run's"
    assert not tmp_files(run)
    ra, rb = (json.load(open(os.path.join(r, "metrics.json"))) for r in (reference, run))
    ra.pop("train_seconds"), rb.pop("train_seconds")
    assert ra == rb, "the resumed run's metrics differ from the uninterrupted run's"
    log = open(os.path.join(run, "log.txt")).read()
    assert "removed 1 temporary file(s) of writers killed mid-write" in log
    steps = [int(line.split(" step ")[1].split("]")[0]) for line in log.splitlines() if " step " in line[:20]]
    assert steps == sorted(steps), "the log was cut back to each checkpoint: its steps never go back"


def test_sigint_writes_a_checkpoint_and_exits_130(tmp_path):
    run = str(tmp_path / "int")
    last = os.path.join(run, "checkpoints", "last.pt")
    proc = subprocess.Popen([sys.executable, "-m", "hebm_ext.cli", *ARGS, "--out", run], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: os.path.exists(last), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT at step" in err and f"hebm train --resume --out {run}" in err
    assert [r["step"] for r in losses(run)] == list(range(1, ckpt_io.step_of(last) + 1))


def test_resume_refuses_what_would_change_the_run(reference, tmp_path):
    before = snapshot(reference)
    for extra, words in ((["e_l_steps=6"], ["e_l_steps: the run has 5, the command line 6"]),
                         (["--seed", "3"], ["--seed: the run has 0, the command line 3"]),
                         (["--preset", "mnist", "g_lr=1.0"], ["--preset: the run has digits, the command line mnist"]),
                         (["g_lr=0.5", "e_l_steps=7"], ["e_l_steps: the run has 5", "g_lr: the run has 0.001"])):
        p = hebm("train", "--out", reference, "--resume", *extra, check=False)
        assert p.returncode == 2, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
        for w in words:
            assert w in p.stderr, p.stderr
    assert snapshot(reference) == before, "a refused --resume changed a file"
    # repeating the run's own settings is fine (a finished run: nothing to train, the same metrics again)
    p = hebm("train", "--out", reference, "--resume", "e_l_steps=5", "--seed", "0", "--method", "lebm",
             "--no-progress")
    assert "32 steps of lebm (digits) finished" in p.stdout
    cfg_before = before["config.json"]
    assert snapshot(reference)["config.json"] == cfg_before, "config.json is never rewritten"


def test_resume_needs_a_run_and_a_checkpoint(tmp_path):
    missing = str(tmp_path / "typo")
    p = hebm("train", "--out", missing, "--resume", check=False)
    assert p.returncode == 2 and f"--resume: {missing} does not exist" in p.stderr
    assert not os.path.exists(missing), "nothing is created for a refused command"
    # a run killed before its first checkpoint: neither resumed nor silently restarted into its old logs
    run = str(tmp_path / "early")
    args = list(ARGS)
    args[args.index("--ckpt-every") + 1] = "1000"
    proc = subprocess.Popen([sys.executable, "-m", "hebm_ext.cli", *args, "--out", run], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: os.path.exists(os.path.join(run, "losses.jsonl")) and len(losses(run)) >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = snapshot(run)
    p = hebm("train", "--out", run, "--resume", check=False)
    assert p.returncode == 2 and "has no checkpoint" in p.stderr and f"rm -r {run}" in p.stderr, p.stderr
    p = hebm(*ARGS, "--out", run, check=False)
    assert p.returncode == 2 and "stopped before its first checkpoint" in p.stderr and f"rm -r {run}" in p.stderr
    assert snapshot(run) == before


def test_log_lines_after_the_checkpoint_are_cut(tmp_path):
    """log.txt lines carry their step; a resume from step 4 drops what the killed session logged after it (an eval
    at step 6, a line cut by the kill) and keeps the rest."""
    from hebm_ext.train import _cut_log

    log = tmp_path / "log.txt"
    lines = ["[10:00:00 step 0] training lebm", "[10:00:01 step 4] eval at step 4: {}", "an untagged line",
             "[10:00:02 step 6] eval at step 6: {}", "[10:00:03 step 8] eval at st"]
    log.write_text("\n".join(lines))
    _cut_log(str(log), 4)
    assert log.read_text() == "\n".join(lines[:3]) + "\n"


def test_tensorboard_hides_the_events_after_the_checkpoint(tmp_path, monkeypatch):
    """On resume the SummaryWriter gets purge_step = checkpoint step + 1: TensorBoard hides what the killed
    session logged after the checkpoint (a stand-in writer: tensorboard is an extra)."""
    import types

    import hebm_ext as H
    from hebm_ext import distributed as hdist
    from hebm_ext.train import TrainOptions, Trainer

    opened = []

    class Writer:
        def __init__(self, log_dir, purge_step=None):
            opened.append(purge_step)

        def add_scalar(self, *a):
            pass

        flush = close = add_scalar

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    data = H.data.Digits(split="train")
    for steps, resume in ((3, False), (4, True)):
        m = H.methods.create("lebm", "digits", e_l_steps=2, g_l_steps=2)
        Trainer(m, data, data, TrainOptions(out=str(tmp_path), max_steps=steps, n_eval=20, ckpt_every=1,
                                            sample_every=0, progress=False, resume=resume), hdist.DistInfo()).fit()
    assert opened == [None, 4]
