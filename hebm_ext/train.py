"""The trainer behind `hebm train`: one loop for every method (hebm_ext.methods), a run directory, progress bars,
periodic sample grids, atomic checkpoints (last and best), exact resumption, a divergence guard, and data-parallel
training over torch.distributed (torchrun).

Run directory:
    config.json        the resolved method config, the training options and the environment
    log.txt            what happened, human-readable;  losses.jsonl: one line of losses per logged step
    samples/           periodic sample grids (step_000500.png ...); samples.png: the final grid
    loss_curve.png     the logged losses;  metrics.json: the final evaluation
    checkpoints/       last.pt (every --ckpt-every steps and at the end) and best.pt (the best monitored value)
    tb/                TensorBoard events (when tensorboard is installed)

A run directory owns its configuration: config.json is written once, when the run starts; ``--resume`` rebuilds the
method from it (cli.py: an override or --seed that differs from it is an error listing the differences) and cuts the
logs (losses.jsonl, log.txt, TensorBoard) back to the checkpoint's step, so that no step appears twice. A fresh start
in a directory that holds a run (finished, or stopped before its first checkpoint) is refused. SIGINT / SIGTERM write
a checkpoint at the current step and stop (Interrupted; exit 130 / 143). Temporary files of writers killed mid-write
are removed when a run starts or resumes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass

import torch

from . import checkpoint as ckpt_io
from . import distributed as hdist
from . import evaluate
from .images import image_grid, save_image
from .plots import loss_curves
from .methods.base import Diverged
from .sampling.generic import NonFiniteChainError


class TrainingDiverged(RuntimeError):
    pass


class RunError(ValueError):
    """The run directory does not hold what the command needs (no run to resume, a run in the way, a mismatch)."""


class Interrupted(Exception):
    """SIGINT / SIGTERM stopped training after a checkpoint was written at the current step."""

    def __init__(self, signum: int, step: int, path: str):
        self.signum, self.step, self.path = signum, step, path
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}: checkpoint {path} written")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


RUN_FILES = {"config": "config.json", "log": "log.txt", "losses": "losses.jsonl", "samples": "samples",
             "grid": "samples.png", "curve": "loss_curve.png", "metrics": "metrics.json",
             "last": "checkpoints/last.pt", "best": "checkpoints/best.pt", "tb": "tb"}


def run_paths(out: str) -> dict:
    return {k: os.path.join(out, v) for k, v in RUN_FILES.items()}


def check_fresh_start(out: str) -> None:
    """RunError when ``out`` already holds a run: finished or with a checkpoint (resume it), or stopped before its
    first checkpoint (nothing to resume: remove it). Writes nothing."""
    p = run_paths(out)
    if os.path.exists(p["last"]):
        step = ckpt_io.step_of(p["last"])
        raise RunError(f"{out} already holds a run (checkpoints/last.pt{f' at step {step}' if step is not None else ''}"
                       "): use --resume to continue it, or another --out")
    found = [RUN_FILES[k] for k in ("config", "losses", "log") if os.path.exists(p[k])]
    if found:
        rows = _read_jsonl(p["losses"])
        upto = f", losses logged up to step {rows[-1]['step']}" if rows else ""
        raise RunError(f"{out} holds a run that stopped before its first checkpoint ({', '.join(found)}{upto}): "
                       f"there is nothing to resume; remove it (rm -r {out}) to start again, or use another --out")


def read_run_for_resume(out: str) -> dict:
    """The stored config.json of the run in ``out``; RunError when there is no run or no checkpoint to resume."""
    p = run_paths(out)
    if not os.path.exists(p["config"]):
        what = "does not exist" if not os.path.exists(out) else "holds no run (no config.json)"
        raise RunError(f"--resume: {out} {what}: check --out, or start the run without --resume")
    if not os.path.exists(p["last"]):
        raise RunError(f"--resume: {out} has no checkpoint (checkpoints/last.pt): the run stopped before its first "
                       f"one, so there is nothing to resume; remove it (rm -r {out}) to start again")
    try:
        with open(p["config"]) as f:
            run = json.load(f)
        run["method"], run["config"], run["options"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunError(f"--resume: {p['config']} could not be read ({type(e).__name__}: {e})") from e
    return run


@dataclass
class TrainOptions:
    out: str = "runs/run"
    max_steps: int | None = None       # default: the config's epochs x batches per epoch
    data_root: str | None = None
    log_every: int = 10
    sample_every: int = 1000
    ckpt_every: int = 500
    eval_every: int = 0                # 0: evaluate at the end only
    n_eval: int = 1000                 # samples for FID
    seed: int = 0
    resume: bool = False
    heldout_digit: int | None = None   # anomaly protocol: train without this digit (mnist, digits)
    divergence: float = 1e8            # |loss| above this counts as diverged
    progress: bool = True
    fid_weights: str | None = None
    monitor: str = "auto"              # best.pt by: "fid" (digits FID / Inception FID), "mse", or "auto"


def _append_jsonl(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _read_jsonl(path, max_step=None):
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if max_step is None or r["step"] <= max_step:
                rows.append(r)
    return rows


_write_text_atomic = ckpt_io.write_text_atomic
_LOG_STEP = re.compile(r"^\[[0-9:]+ step (\d+)\]")


def _cut_log(path: str, step: int) -> None:
    """Drop the log lines written after ``step`` (lines carry their step: "[HH:MM:SS step N] ...")."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    keep = [ln for ln in lines if not ((m := _LOG_STEP.match(ln)) and int(m.group(1)) > step)]
    if keep and not keep[-1].endswith("\n"):  # a line cut by a kill
        keep[-1] += "\n"
    if keep != lines:
        _write_text_atomic(path, "".join(keep))


class _StopSignals:
    """SIGINT / SIGTERM set a flag that the loop reads after each step (a second one stops at once)."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # the second signal: do not wait for the step to end
            self.__exit__()
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


class _SkipSampler(torch.utils.data.Sampler):
    """A sampler's indices after the first `skip` (resuming mid-epoch)."""

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it)
        yield from it

    def __len__(self):
        return len(self.sampler) - self.skip


class Trainer:
    def __init__(self, method, train_set, test_set, options: TrainOptions, dist_info: hdist.DistInfo,
                 dataset_name: str = "digits", command: str = "", note: str = "", checkpoint: dict | None = None):
        self.note = note  # said in the log when the run resumes (the options this session changed)
        self.checkpoint = checkpoint  # last.pt, already read (resume), or None
        self.m, self.train_set, self.test_set, self.o, self.dist = method, train_set, test_set, options, dist_info
        self.dataset_name = dataset_name
        self.command = command
        self.main = dist_info.main
        self.bs = method.config.batch_size
        if len(train_set) < self.bs * dist_info.world:
            raise ValueError(f"the training set has {len(train_set)} images, fewer than one batch "
                             f"({self.bs} per process x {dist_info.world})")
        self.per_epoch = len(train_set) // (self.bs * dist_info.world)
        self.max_steps = options.max_steps or method.config.epochs * self.per_epoch
        self.epoch = 0
        self.best = math.inf
        self.history = []
        self.fid_kind = evaluate.fid_kind(dataset_name, options.fid_weights)
        self.monitor = options.monitor if options.monitor != "auto" else ("fid" if self.fid_kind else "mse")
        method.check_training_length(self.max_steps)
        self.paths = run_paths(options.out)
        self.tb = None
        if dist_info.enabled:
            method.grad_sync = hdist.average_gradients

    # ------------------------------------------------------------------ output
    def log(self, msg):
        if self.main:
            line = f"[{time.strftime('%H:%M:%S')} step {self.m.step}] {msg}"
            try:
                with open(self.paths["log"], "a") as f:
                    f.write(line + "\n")
            except OSError as e:  # a full disk must not hide the message that says so
                print(f"{line}  (not written to {self.paths['log']}: {e.strerror})", file=sys.stderr, flush=True)
                return
            if not self.o.progress:
                print(line, flush=True)

    def _open_tensorboard(self, purge_step=None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log("TensorBoard is not installed (pip install tensorboard): no event files")
            return
        # purge_step: events at or after it, of the session that was killed, are hidden from TensorBoard
        self.tb = SummaryWriter(self.paths["tb"], purge_step=purge_step)

    def _state(self, batch_in_epoch):
        return {"format": ckpt_io.FORMAT, "method": self.m.state_dict(), "rng": ckpt_io.rng_state(),
                "trainer": {"epoch": self.epoch, "batch_in_epoch": batch_in_epoch, "best": self.best,
                            "options": dataclasses.asdict(self.o), "dataset": self.dataset_name,
                            "max_steps": self.max_steps, "world": self.dist.world}}

    def save(self, which, batch_in_epoch):
        bad = [n for n, p in self.m.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(f"non-finite parameters ({', '.join(bad[:3])}) at step {self.m.step}: not saved; "
                                   f"{self._last_good()}")
        if self.main:
            ckpt_io.atomic_save(self._state(batch_in_epoch), self.paths[which])

    # ------------------------------------------------------------------ evaluation
    def _fork_rng(self):
        """Evaluation and sample grids draw their own random numbers: training's stream is left untouched."""
        devs = [self.m.device] if self.m.device.type == "cuda" else []
        return torch.random.fork_rng(devices=devs)

    def evaluate(self, final=False) -> dict:
        with self._fork_rng():
            return self._evaluate(final)

    def _evaluate(self, final=False) -> dict:
        m, o = self.m, self.o
        # the method decides its modules' modes (e.g. dual-MCMC's BatchNorm option); `hebm eval` calls the same
        # function with the run's counts and seed, so it reproduces these numbers
        return evaluate.standard_metrics(m, self.test_set, self.dist, self.fid_kind, o.n_eval, min(o.n_eval, 500),
                                         o.seed, o.fid_weights, gaussian=final)

    def _monitored(self, ev):
        key = {"fid": "digits_fid" if self.fid_kind == "digits" else "fid", "mse": "mse"}[self.monitor]
        return ev.get(key, math.inf)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train to max_steps (from the checkpoint in out with options.resume); the final evaluation dict."""
        o, m = self.o, self.m
        if not o.resume:  # every rank, before any writes (the cli checked it before building anything)
            check_fresh_start(o.out)
        hdist.barrier()  # every rank has checked the run directory before rank 0 writes into it
        if self.main:
            os.makedirs(os.path.join(o.out, "checkpoints"), exist_ok=True)
            os.makedirs(self.paths["samples"], exist_ok=True)
            stale = ckpt_io.remove_stale_tmp(o.out) + ckpt_io.remove_stale_tmp(os.path.join(o.out, "checkpoints"))
        hdist.barrier()
        start_batch = 0
        if o.resume:
            start_batch = self._resume()
        elif self.main:
            cfg = {"method": m.name, "config": dataclasses.asdict(m.config), "options": dataclasses.asdict(o),
                   "dataset": self.dataset_name, "world": self.dist.world, "max_steps": self.max_steps,
                   "command": self.command, "torch": torch.__version__}
            _write_text_atomic(self.paths["config"], json.dumps(cfg, indent=2))
            self._open_tensorboard()
        if self.main and stale:
            self.log(f"removed {len(stale)} temporary file(s) of writers killed mid-write: "
                     f"{', '.join(os.path.basename(p) for p in stale)}")
        self.log(f"training {m.name} ({m.config.preset} preset) on {self.dataset_name}: {self.max_steps} steps, "
                 f"batch {self.bs} x {self.dist.world} process(es), {self.per_epoch} steps per epoch")
        bar = None
        if self.main and o.progress:
            from tqdm import tqdm
            bar = tqdm(total=self.max_steps, initial=m.step, desc=m.name, dynamic_ncols=True,
                       mininterval=0.5 if sys.stderr.isatty() else 10)
        sampler = torch.utils.data.DistributedSampler(self.train_set, num_replicas=self.dist.world,
                                                      rank=self.dist.rank, shuffle=True, seed=o.seed, drop_last=True)
        t0 = time.perf_counter()
        batch_in_epoch = start_batch
        try:
            with _StopSignals() as stop:
                while m.step < self.max_steps:
                    sampler.set_epoch(self.epoch)
                    # own generator: a DataLoader iterator otherwise draws a seed from the global RNG, which would
                    # shift every later random number of a resumed run by one draw
                    loader = torch.utils.data.DataLoader(self.train_set, batch_size=self.bs,
                                                         sampler=_SkipSampler(sampler, batch_in_epoch * self.bs),
                                                         drop_last=True, generator=torch.Generator())
                    for x, _ in loader:
                        if m.step >= self.max_steps:
                            break
                        self._step(x, bar)
                        batch_in_epoch += 1
                        if o.sample_every and m.step % o.sample_every == 0:
                            self._grid(os.path.join(self.paths["samples"], f"step_{m.step:07d}.png"))
                        if o.eval_every and m.step % o.eval_every == 0:
                            self._eval_and_keep_best(batch_in_epoch)
                        if o.ckpt_every and m.step % o.ckpt_every == 0:
                            self.save("last", batch_in_epoch)
                        signum = self._stop_requested(stop)
                        if signum:
                            self.save("last", batch_in_epoch)
                            self.log(f"interrupted by {signal.Signals(signum).name}: checkpoint "
                                     f"{self.paths['last']} written at step {m.step}")
                            raise Interrupted(signum, m.step, self.paths["last"])
                    if batch_in_epoch >= self.per_epoch:
                        m.end_epoch()
                        self.epoch += 1
                        batch_in_epoch = 0
                self.save("last", batch_in_epoch)
        except TrainingDiverged as e:
            self.log(f"STOPPED: {e}")
            raise
        except OSError as e:
            self.log(f"STOPPED: {e}")
            raise
        finally:
            if bar is not None:
                bar.close()
            if self.tb is not None:
                self.tb.flush()
        train_s = time.perf_counter() - t0
        ev = self._eval_and_keep_best(batch_in_epoch, final=True)
        ev["train_seconds"] = train_s
        if self.main:
            self._grid(self.paths["grid"])
            loss_curves(self.history, self.paths["curve"])
            _write_text_atomic(self.paths["metrics"], json.dumps(ev, indent=2))
            if self.tb:
                self.tb.close()
        self.log(f"done: {m.step} steps in {train_s:.0f} s; {json.dumps(ev)}")
        return ev

    def _step(self, x, bar):
        m, o = self.m, self.o
        try:
            losses = m.train_step(x)
        except (NonFiniteChainError, Diverged) as e:
            raise TrainingDiverged(f"training diverged at step {m.step + 1}: {e} Nothing was saved "
                                   f"after it; {self._last_good()}.") from e
        self._guard(losses)
        if m.step % o.log_every == 0 or m.step == self.max_steps:
            row = {"step": m.step, **hdist.all_reduce_mean(losses, m.device)}
            self.history.append(row)
            if self.main:
                _append_jsonl(self.paths["losses"], row)
                if self.tb:
                    for k, v in row.items():
                        if k != "step":
                            self.tb.add_scalar(f"train/{k}", v, m.step)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(losses.items())[:4]}, refresh=False)

    def _stop_requested(self, stop) -> int:
        """The signal that asked to stop (0: none), the same on every rank (a signal may reach one rank only)."""
        if not self.dist.enabled:
            return stop.signum or 0
        t = torch.tensor([float(stop.signum or 0)], device=self.m.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def _resume(self) -> int:
        """Load checkpoints/last.pt into the method and the trainer, cut the logs back to its step; returns the
        batch position in the epoch."""
        m = self.m
        c = self.checkpoint if self.checkpoint is not None else ckpt_io.load(self.paths["last"], map_location=m.device)
        self.checkpoint = None
        tr = c["trainer"]
        if tr["world"] != self.dist.world:
            raise RunError(f"{self.paths['last']} was written by {tr['world']} processes, this run has "
                           f"{self.dist.world}: resume with the same number")
        stored = {k: v for k, v in c["method"]["config"].items() if k != "preset"}
        have = {k: v for k, v in dataclasses.asdict(m.config).items() if k != "preset"}
        from .methods.config import validate
        stored = {k: v for k, v in validate(type(m.config), stored).items() if k != "preset"}
        diff = [f"{k}: checkpoint {stored.get(k)!r}, config.json {have.get(k)!r}"
                for k in sorted(set(stored) | set(have)) if stored.get(k) != have.get(k)]
        if diff or c["method"]["method"] != m.name:
            raise RunError(f"{self.paths['last']} does not match {self.paths['config']} ("
                           f"{'; '.join(diff) or 'method ' + c['method']['method']}): the run directory was edited")
        m.load_state_dict(c["method"])
        self.epoch, start_batch, self.best = tr["epoch"], tr["batch_in_epoch"], tr["best"]
        ckpt_io.set_rng_state(c["rng"])
        if self.main:  # drop what the killed session logged after that checkpoint
            rows = _read_jsonl(self.paths["losses"], max_step=m.step)
            _write_text_atomic(self.paths["losses"], "".join(json.dumps(r) + "\n" for r in rows))
            _cut_log(self.paths["log"], m.step)
            self._open_tensorboard(purge_step=m.step + 1)
        self.history = _read_jsonl(self.paths["losses"], max_step=m.step)
        self.log(f"resumed from {self.paths['last']} at step {m.step} (epoch {self.epoch}, batch {start_batch})"
                 + (f"; {self.note}" if self.note else ""))
        return start_batch

    def _last_good(self) -> str:
        step = ckpt_io.step_of(self.paths["last"])
        if step is not None:
            return f"the last good checkpoint is {self.paths['last']} (step {step})"
        return "no checkpoint was written before it"

    def _guard(self, losses):
        bad = {k: v for k, v in losses.items() if not math.isfinite(v) or abs(v) > self.o.divergence}
        if bad:
            raise TrainingDiverged(
                f"training diverged at step {self.m.step}: {', '.join(f'{k} = {v:.4g}' for k, v in bad.items())} "
                f"(threshold {self.o.divergence:g}); nothing was saved after it, {self._last_good()} (resume with "
                "--resume after lowering the learning rates or step sizes)")

    def _grid(self, path):
        with self._fork_rng():
            torch.manual_seed(self.o.seed + 11)
            imgs = self.m.sample(64)
        if self.main:
            save_image(image_grid(imgs, nrow=8, scale=4 if imgs.shape[-1] <= 8 else 2 if imgs.shape[-1] <= 32 else 1),
                       path)

    def _eval_and_keep_best(self, batch_in_epoch, final=False):
        ev = self.evaluate(final=final)
        self.log(f"eval at step {self.m.step}: {json.dumps(ev)}")
        if self.main and self.tb:
            for k, v in ev.items():
                if k != "step":
                    self.tb.add_scalar(f"eval/{k}", v, self.m.step)
        v = self._monitored(ev)
        if v < self.best:
            self.best = v
            self.save("best", batch_in_epoch)
        return ev
