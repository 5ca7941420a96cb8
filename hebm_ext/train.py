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
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
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


def _write_text_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


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
                 dataset_name: str = "digits", command: str = ""):
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
        self.paths = {k: os.path.join(options.out, v) for k, v in {
            "config": "config.json", "log": "log.txt", "losses": "losses.jsonl", "samples": "samples",
            "grid": "samples.png", "curve": "loss_curve.png", "metrics": "metrics.json",
            "last": "checkpoints/last.pt", "best": "checkpoints/best.pt", "tb": "tb"}.items()}
        self.tb = None
        if dist_info.enabled:
            method.grad_sync = hdist.average_gradients

    # ------------------------------------------------------------------ output
    def log(self, msg):
        if self.main:
            line = f"[{time.strftime('%H:%M:%S')}] {msg}"
            with open(self.paths["log"], "a") as f:
                f.write(line + "\n")
            if not self.o.progress:
                print(line, flush=True)

    def _open_tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log("TensorBoard is not installed (pip install tensorboard): no event files")
            return
        self.tb = SummaryWriter(self.paths["tb"])

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
        out = {"step": m.step}
        # the method decides its modules' modes (e.g. dual-MCMC's BatchNorm option)
        if self.fid_kind:
            name = "digits_fid" if self.fid_kind == "digits" else "fid"
            out[name] = evaluate.fid(m, self.test_set, o.n_eval, self.dist, self.fid_kind, o.fid_weights,
                                     seed=o.seed + 7)
            if final:
                out[name + "_gaussian_prior"] = evaluate.fid(m, self.test_set, o.n_eval, self.dist, self.fid_kind,
                                                             o.fid_weights, base=True, seed=o.seed + 7)
        out["mse"] = evaluate.reconstruction_mse(m, self.test_set, min(o.n_eval, 500), self.dist)
        return out

    def _monitored(self, ev):
        key = {"fid": "digits_fid" if self.fid_kind == "digits" else "fid", "mse": "mse"}[self.monitor]
        return ev.get(key, math.inf)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        o, m = self.o, self.m
        if self.main:
            os.makedirs(os.path.join(o.out, "checkpoints"), exist_ok=True)
            os.makedirs(self.paths["samples"], exist_ok=True)
        hdist.barrier()
        start_batch = 0
        if o.resume and os.path.exists(self.paths["last"]):
            c = ckpt_io.load(self.paths["last"], map_location=m.device)
            if c["trainer"]["world"] != self.dist.world:
                raise ValueError(f"{self.paths['last']} was written by {c['trainer']['world']} processes, this run "
                                 f"has {self.dist.world}: resume with the same number")
            m.load_state_dict(c["method"])
            tr = c["trainer"]
            self.epoch, start_batch, self.best = tr["epoch"], tr["batch_in_epoch"], tr["best"]
            ckpt_io.set_rng_state(c["rng"])
            if self.main:  # drop log lines written after that checkpoint
                rows = _read_jsonl(self.paths["losses"], max_step=m.step)
                _write_text_atomic(self.paths["losses"], "".join(json.dumps(r) + "\n" for r in rows))
            self.history = _read_jsonl(self.paths["losses"], max_step=m.step)
            self.log(f"resumed from {self.paths['last']} at step {m.step} (epoch {self.epoch}, batch {start_batch})")
        elif o.resume:
            self.log(f"--resume: no checkpoint at {self.paths['last']}, starting from scratch")
        elif self.main and os.path.exists(self.paths["last"]):
            raise FileExistsError(f"{o.out} already holds a run (checkpoints/last.pt): use --resume to continue "
                                  "it, or another --out")
        if self.main:
            cfg = {"method": m.name, "config": dataclasses.asdict(m.config), "options": dataclasses.asdict(o),
                   "dataset": self.dataset_name, "world": self.dist.world, "max_steps": self.max_steps,
                   "command": self.command, "torch": torch.__version__}
            _write_text_atomic(self.paths["config"], json.dumps(cfg, indent=2))
            self._open_tensorboard()
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
                    try:
                        losses = m.train_step(x)
                    except (NonFiniteChainError, Diverged) as e:
                        raise TrainingDiverged(f"training diverged at step {m.step + 1}: {e} Nothing was saved "
                                               f"after it; {self._last_good()}.") from e
                    batch_in_epoch += 1
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
                    if o.sample_every and m.step % o.sample_every == 0:
                        self._grid(os.path.join(self.paths["samples"], f"step_{m.step:07d}.png"))
                    if o.eval_every and m.step % o.eval_every == 0:
                        self._eval_and_keep_best(batch_in_epoch)
                    if o.ckpt_every and m.step % o.ckpt_every == 0:
                        self.save("last", batch_in_epoch)
                if batch_in_epoch >= self.per_epoch:
                    m.end_epoch()
                    self.epoch += 1
                    batch_in_epoch = 0
        except TrainingDiverged as e:
            self.log(f"STOPPED: {e}")
            raise
        finally:
            if bar is not None:
                bar.close()
        train_s = time.perf_counter() - t0
        self.save("last", batch_in_epoch)
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

    def _last_good(self) -> str:
        p = self.paths["last"]
        if os.path.exists(p):
            try:
                return f"the last good checkpoint is {p} (step {ckpt_io.load(p)['method']['step']})"
            except (ValueError, FileNotFoundError):
                pass
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
