"""The `hebm` command line.

    hebm train --method M --preset P [--data-root DIR] [--out DIR] [--max-steps N] [key=value ...]
    hebm sample CKPT [-n 64] [--out FILE]                      (default RUN/sample_SEED.png)
    hebm eval CKPT [--fid] [--mse] [--anomaly] [--data-root DIR] (default RUN/metrics_eval.json)
    hebm bench [--model lebm|joint|diffusion] [--batches ...] [--precision fp32|tf32|bf16]
    hebm demo

`hebm train` under torchrun (torchrun --nproc_per_node=G -m hebm_ext.cli train ...) trains data-parallel.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import os
import sys
import time

import torch


def _parse_overrides(items):
    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"config overrides are key=value, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


# ---------------------------------------------------------------------------------------------------- train
def _datasets(config, root, heldout_digit):
    from . import data
    from .metrics import heldout_digit_split

    dataset = config.dataset
    if heldout_digit is not None:
        if dataset not in ("mnist", "digits"):
            raise ValueError(f"--heldout-digit is the MNIST anomaly protocol (datasets mnist and digits), the run's "
                             f"dataset is {dataset}")
        if not 0 <= heldout_digit <= 9:
            raise ValueError(f"--heldout-digit must be a digit 0-9, got {heldout_digit}")
        parts = [data.open_for(config, root, "train"), data.open_for(config, root, "test")]
        return heldout_digit_split(parts, heldout_digit)
    return data.open_for(config, root, "train"), data.open_for(config, root, data.TEST_SPLIT[dataset])


class UsageError(Exception):
    """Bad input found before anything ran: printed as one line (exit 2), without a traceback."""


@contextlib.contextmanager
def _setup():
    """Errors of the setup phase (config values, run directory, checkpoint, data files) are the user's input:
    UsageError. HEBM_DEBUG=1 keeps the traceback."""
    try:
        yield
    except (ValueError, TypeError, OSError) as e:
        if os.environ.get("HEBM_DEBUG"):
            raise
        raise UsageError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from e


# options of a training session: --resume may change them (logged); everything else defines the run
_SESSION_OPTIONS = ("max_steps", "data_root", "log_every", "sample_every", "ckpt_every", "eval_every", "n_eval",
                    "fid_weights", "monitor")


def _abs(path):
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def _resume_setup(args, out, overrides):
    """(method, TrainOptions fields, seed, note, checkpoint) of the run stored in out, read before anything is
    written; RunError listing what the command line changes of the run's method, preset, config, seed, held-out
    digit or number of processes."""
    from . import checkpoint as ckpt_io
    from . import methods
    from .methods.config import validate
    from .train import RunError, TrainOptions, read_run_for_resume

    run = read_run_for_resume(out)
    ckpt = ckpt_io.load(os.path.join(out, "checkpoints", "last.pt"))  # refused before anything is written
    name, cfg = run["method"], dict(run["config"])
    preset = cfg.pop("preset", "") or "digits"
    stored = run["options"]
    diffs = []
    for flag, given, have in (("--method", args.method, name), ("--preset", args.preset, preset),
                              ("--seed", args.seed, stored.get("seed")),
                              ("--heldout-digit", args.heldout_digit, stored.get("heldout_digit"))):
        if given is not None and given != have:
            diffs.append(f"{flag}: the run has {have}, the command line {given}")
    if run.get("world", 1) != int(os.environ.get("WORLD_SIZE", "1")):
        diffs.append(f"processes: the run has {run.get('world', 1)}, this launch {os.environ.get('WORLD_SIZE', '1')}")
    if diffs:  # before building anything
        raise RunError(f"--resume: the command line differs from the run in {out} (config.json): {'; '.join(diffs)}. "
                       "A run keeps its settings: drop these arguments, or start a new run with another --out")
    seed = stored.get("seed", 0)
    torch.manual_seed(seed)
    method = methods.create(name, preset, **{**cfg, **overrides})
    have = validate(type(method.config), cfg)
    for k in sorted(overrides):
        if have.get(k) != getattr(method.config, k):
            diffs.append(f"{k}: the run has {have.get(k)!r}, the command line {getattr(method.config, k)!r}")
    if diffs:
        raise RunError(f"--resume: the command line differs from the run in {out} (config.json): {'; '.join(diffs)}. "
                       "A run keeps its settings: drop these overrides, or start a new run with another --out")
    names = {f.name for f in dataclasses.fields(TrainOptions)}
    opts = {k: v for k, v in stored.items() if k in names}
    changed = []
    for k in _SESSION_OPTIONS:
        v = getattr(args, k)
        v = _abs(v) if k in ("data_root", "fid_weights") else v
        if v is not None and v != opts.get(k):
            changed.append(f"{k} {opts.get(k)} -> {v}")
            opts[k] = v
    note = f"options changed for this session: {', '.join(changed)}" if changed else ""
    return method, opts, seed, note, ckpt


def cmd_train(args) -> int:
    from . import distributed as hdist
    from . import methods
    from .train import Interrupted, TrainOptions, Trainer, TrainingDiverged, check_fresh_start

    with _setup():
        overrides = _parse_overrides(args.overrides)
        if args.out is None and args.method is None:
            raise ValueError("--method (a new run) or --out (the run to resume) is required")
        out = _abs(args.out or os.path.join("runs", f"{args.method}-{args.preset or 'digits'}"))
        dist_info = hdist.init_from_env(args.device)
        if args.resume:
            if args.backbone:
                raise ValueError("--backbone starts a run on a finished stage 1; a resumed run has its backbone")
            method, opts, seed, note, ckpt = _resume_setup(args, out, overrides)
            opts.update(out=out, resume=True, progress=not args.no_progress)
        else:
            if args.method is None:
                raise ValueError("--method is required to start a run (with --resume the run's own is used)")
            check_fresh_start(out)
            seed, note, ckpt = (0 if args.seed is None else args.seed), "", None
            torch.manual_seed(seed)  # the same initial parameters on every rank
            method = methods.create(args.method, args.preset or "digits", **overrides)
            if args.backbone:  # a finished stage 1, reused frozen (hebm_ext.methods.backbone_stage.BackboneStage)
                if not hasattr(method, "load_backbone"):
                    raise ValueError(f"--backbone needs a method on a backbone (diffusion-ebm with backbone=spatial, "
                                     f"joint-ebm with scheme=two-stage); {args.method} --preset {args.preset} has none")
                method.load_backbone(args.backbone)
            opts = {k: (_abs(v) if k in ("data_root", "fid_weights") else v)
                    for k in _SESSION_OPTIONS if (v := getattr(args, k)) is not None}
            opts.update(out=out, seed=seed, heldout_digit=args.heldout_digit, progress=not args.no_progress)
        method = method.to(dist_info.device)
        hdist.broadcast_module(method)
        torch.manual_seed(seed + 7919 * dist_info.rank)  # chains and data augmentation differ across ranks
        o = TrainOptions(**opts)
        train_set, test_set = _datasets(method.config, o.data_root, o.heldout_digit)
        trainer = Trainer(method, train_set, test_set, o, dist_info, method.config.dataset,
                          command="hebm " + " ".join(sys.argv[1:]), note=note, checkpoint=ckpt)
    name, preset = method.name, method.config.preset
    try:
        ev = trainer.fit()
    except TrainingDiverged as e:
        print(f"hebm train: {e}", file=sys.stderr)
        return 3
    except Interrupted as e:
        print(f"hebm train: {e}; continue with: hebm train --resume --out {out}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a full disk, a lost mount: the previous checkpoint is intact
        print(f"hebm train: {e.strerror or e}", file=sys.stderr)
        return 1
    if dist_info.main:
        p = trainer.paths
        print(f"\nhebm train: {method.step} steps of {name} ({preset}) finished.")
        for k, v in ev.items():
            if k != "step":
                print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
        print(f"  samples:    {p['grid']}  (and {p['samples']}/)")
        print(f"  checkpoint: {p['last']}  (best: {p['best']})")
        print(f"  metrics:    {p['metrics']}")
        print(f"  log:        {p['log']}, {p['losses']}, {p['curve']}")
    return 0


# ---------------------------------------------------------------------------------------------------- sample / eval
def _load(path, device):
    from . import checkpoint as ckpt_io

    c = ckpt_io.load(path)
    return c, ckpt_io.method_from_checkpoint(c, device)


def _run_dir(checkpoint: str) -> str:
    """The run directory of RUN/checkpoints/X.pt (or the checkpoint's own directory)."""
    d = os.path.dirname(os.path.abspath(checkpoint))
    return os.path.dirname(d) if os.path.basename(d) == "checkpoints" else d


SAMPLE_BATCH = 500  # hebm sample draws in batches of this many (one call when n is at most this)


def cmd_sample(args) -> int:
    from .checkpoint import atomic_save
    from .images import image_grid, save_image

    with _setup():
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        _, m = _load(args.checkpoint, device)
        out = os.path.abspath(args.out or os.path.join(_run_dir(args.checkpoint), f"sample_{args.seed}.png"))
        if not os.path.isdir(os.path.dirname(out)):
            raise FileNotFoundError(f"--out: the directory {os.path.dirname(out)} does not exist")
    torch.manual_seed(args.seed)
    bar = None
    if args.n > SAMPLE_BATCH and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=args.n, desc="hebm sample", unit="img", dynamic_ncols=True, leave=False)
    parts = []
    for i in range(0, args.n, SAMPLE_BATCH):
        parts.append(m.sample(min(SAMPLE_BATCH, args.n - i)).cpu())
        if bar is not None:
            bar.update(parts[-1].shape[0])
    if bar is not None:
        bar.close()
    x = torch.cat(parts)
    save_image(image_grid(x, nrow=int(args.n ** 0.5) or 1, scale=4 if x.shape[-1] <= 8 else 1), out)
    print(f"hebm sample: {args.n} samples of {m.name} -> {out}")
    if args.tensor:
        pt = atomic_save(x, os.path.splitext(out)[0] + ".pt")
        print(f"  tensor [{', '.join(map(str, x.shape))}] in [-1, 1] -> {pt}")
    return 0


def cmd_eval(args) -> int:
    from . import data, evaluate
    from . import distributed as hdist
    from .checkpoint import write_text_atomic
    from .metrics import heldout_digit_split

    with _setup():  # everything a requested metric needs, before any metric runs
        dist_info = hdist.init_from_env(args.device)
        c, m = _load(args.checkpoint, dist_info.device)
        opts = c.get("trainer", {}).get("options", {})
        dataset = m.config.dataset
        root = args.data_root or opts.get("data_root")
        if not (args.fid or args.mse or args.anomaly):
            args.fid = args.mse = True
        kind = None
        if args.fid:
            kind = evaluate.fid_kind(dataset, args.fid_weights or opts.get("fid_weights"))
            if kind is None:
                raise ValueError("--fid: Inception FID needs the pytorch-fid weights file "
                                 "(pt_inception-2015-12-05-6726825d.pth): --fid-weights PATH or HEBM_FID_WEIGHTS=PATH")
            if args.fid_stats is not None and not os.path.isfile(args.fid_stats):
                raise FileNotFoundError(f"--fid-stats: {args.fid_stats} does not exist")
        digit = opts.get("heldout_digit")
        if args.anomaly:
            if digit is None:
                raise ValueError("--anomaly: the checkpoint was not trained with --heldout-digit (the anomaly "
                                 "protocol trains without one digit and scores it)")
            if dist_info.enabled:
                raise ValueError("--anomaly runs in one process (run hebm eval without torchrun)")
        test = data.open_for(m.config, root, data.TEST_SPLIT[dataset])
        if args.anomaly:
            parts = [data.open_for(m.config, root, "train"), test]
        out = os.path.abspath(args.out or os.path.join(_run_dir(args.checkpoint), "metrics_eval.json"))
        if not os.path.isdir(os.path.dirname(out)):
            raise FileNotFoundError(f"--out: the directory {os.path.dirname(out)} does not exist")
    # the run's own counts and seed by default, so that the numbers of metrics.json come out again
    n_eval = opts.get("n_eval", 1000)
    n_fid, n_mse = (args.n, args.n) if args.n is not None else (n_eval, min(n_eval, 500))
    seed = args.seed if args.seed is not None else opts.get("seed", 0)
    res = {"checkpoint": os.path.abspath(args.checkpoint), "seed": seed, "n_fid": n_fid, "n_mse": n_mse}
    res.update(evaluate.standard_metrics(m, test, dist_info, kind, n_fid, n_mse, seed, args.fid_weights or
                                         opts.get("fid_weights"), gaussian=True, ref_stats=args.fid_stats,
                                         fid_=args.fid, mse=args.mse, progress=not args.no_progress))
    if args.anomaly:
        _, test_anom = heldout_digit_split(parts, digit)
        res.update({f"anomaly_{k}": v for k, v in evaluate.anomaly(
            m, test_anom, dist_info, progress=None if args.no_progress else "anomaly scores").items()})
    if dist_info.main:
        write_text_atomic(out, json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
        print(f"hebm eval: written to {out}")
    return 0


# ---------------------------------------------------------------------------------------------------- bench
def cmd_bench(args) -> int:
    from .bench import run_latent_bench

    try:
        run_latent_bench(args.model, batches=args.batches, steps=args.steps, repeats=args.repeats, out=args.out,
                         progress=not args.no_progress, precision=args.precision)
    except ValueError as e:  # --precision tf32 / bf16 without a GPU
        raise UsageError(str(e).replace("precision", "--precision", 1)) from None
    return 0


# ---------------------------------------------------------------------------------------------------- demo
def _demo_prior(seed: int):
    from .nn import EnergyMLP, LatentEBMPrior

    g = torch.Generator().manual_seed(seed)
    head = EnergyMLP(2, 64, 2, activation="tanh")
    with torch.no_grad():
        for lin in head.linears:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * (2.5 / lin.in_features ** 0.5))
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g))
        head.linears[-1].weight.mul_(1.5)
    return LatentEBMPrior([2], [(head, 0)], sigma=1.5)


def cmd_demo(args) -> int:
    from . import ops
    from .images import heatmap, save_image, side_by_side
    from .sampling import LangevinSchedule, sample_prior
    from .toy import grid_probabilities, histogram2d, total_variation

    device = args.device or ("cuda" if torch.cuda.is_available() and ops.available()["cuda"] else "cpu")
    prior = _demo_prior(args.seed)
    lo, hi, bins = -4.0, 4.0, args.bins
    p_grid = grid_probabilities(prior.double().log_prob, lo, hi, bins)
    prior = prior.float().to(device)
    schedule = LangevinSchedule.lebm(steps=args.steps, step_size=args.step_size, sigma=1.5)
    y0 = torch.randn(args.chains, 2, device=device) * 1.5
    t0 = time.perf_counter()
    y = sample_prior(prior, y0, schedule, backend="fused", seed=args.seed)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    p_samp = histogram2d(y, lo, hi, bins)
    coarse = 12  # few enough cells that the histogram's own sampling noise stays small
    tv = total_variation(histogram2d(y, lo, hi, coarse), grid_probabilities(_demo_prior(args.seed).double().log_prob,
                                                                            lo, hi, coarse))
    img = side_by_side([heatmap(p_grid[:-1].view(bins, bins).numpy()), heatmap(p_samp[:-1].view(bins, bins).numpy())])
    path = save_image(img, os.path.join(args.out, "ebm_2d.png"))
    print(f"hebm demo: {args.chains} chains x {args.steps} Langevin steps on {device} "
          f"({ops.cpu_capability() if device == 'cpu' else 'CUDA'} kernel) in {dt:.2f} s")
    print(f"  total variation between the samples and the grid-normalised density (12 x 12 cells): {tv:.3f}")
    print(f"  picture (left: density, right: samples): {path}")
    return 0


# ---------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .methods import METHODS
    from .sampling.reference import PRECISIONS

    ap = argparse.ArgumentParser(prog="hebm", description="Energy-based latent priors with fused Langevin kernels.")
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a method (a run directory with samples, checkpoints, metrics)")
    t.add_argument("--method", choices=METHODS, help="required for a new run (--resume: the run's own)")
    t.add_argument("--preset", default=None, help="digits (embedded data, the default) or the papers' svhn, "
                                                  "cifar10, celeba64, mnist")
    t.add_argument("--data-root", default=None, help="directory of the dataset files (not needed for digits)")
    t.add_argument("--out", default=None, help="run directory (default runs/METHOD-PRESET)")
    t.add_argument("--max-steps", type=int, default=None, help="default: the preset's epochs")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped, with the run's own config and seed "
                        "(the session options below may change)")
    t.add_argument("--seed", type=int, default=None, help="default 0")
    t.add_argument("--device", choices=["cpu", "cuda"], default=None)
    t.add_argument("--log-every", type=int, default=None, help="default 10")
    t.add_argument("--sample-every", type=int, default=None, help="default 1000 (0: never)")
    t.add_argument("--ckpt-every", type=int, default=None, help="default 500")
    t.add_argument("--eval-every", type=int, default=None, help="default 0: evaluate at the end only")
    t.add_argument("--n-eval", type=int, default=None, help="samples for FID (default 1000)")
    t.add_argument("--monitor", choices=["auto", "fid", "mse"], default=None, help="what best.pt minimises")
    t.add_argument("--heldout-digit", type=int, default=None, help="anomaly protocol: train without this digit")
    t.add_argument("--fid-weights", default=None, help="pytorch-fid Inception weights (or HEBM_FID_WEIGHTS)")
    t.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    t.add_argument("--backbone", default=None, metavar="PATH",
                   help="reuse the frozen backbone of a finished stage 1 (a checkpoint of a run on the same backbone "
                        "configuration) and train only the EBM stage")
    t.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. e_lr=1e-4 'z_dims=(8, 16)'")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw samples from a checkpoint into a PNG grid")
    s.add_argument("checkpoint")
    s.add_argument("-n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="PNG grid (default RUN/sample_SEED.png beside RUN/checkpoints/)")
    s.add_argument("--tensor", action="store_true", help="also save the samples as a .pt tensor (same name, .pt)")
    s.add_argument("--device", choices=["cpu", "cuda"], default=None)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="FID, reconstruction MSE, anomaly AUPRC of a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--fid", action="store_true")
    e.add_argument("--mse", action="store_true")
    e.add_argument("--anomaly", action="store_true")
    e.add_argument("-n", type=int, default=None, help="FID samples and MSE test images (default: the run's, "
                                                      "--n-eval for FID and at most 500 for MSE)")
    e.add_argument("--data-root", default=None, help="default: the run's")
    e.add_argument("--fid-weights", default=None)
    e.add_argument("--fid-stats", default=None, help="reference statistics .npz (mu, sigma) instead of the test set")
    e.add_argument("--out", default=None, help="JSON (default RUN/metrics_eval.json beside RUN/checkpoints/)")
    e.add_argument("--seed", type=int, default=None, help="default: the run's, so that metrics.json is reproduced")
    e.add_argument("--device", choices=["cpu", "cuda"], default=None)
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="fused sampler vs the eager reference (medians, a table)")
    b.add_argument("--model", choices=["lebm", "joint", "diffusion"], default="lebm")
    b.add_argument("--batches", type=int, nargs="+", default=None)
    b.add_argument("--steps", type=int, default=None)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--out", default=os.path.join("benchmarks", "out"))
    b.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="the fused sampler's matmuls, eager at the same precision (tf32 / bf16: CUDA only)")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="sample a 2-D energy-based model with the fused kernel, write a PNG")
    d.add_argument("--out", default="demo", help="output directory (default: ./demo)")
    d.add_argument("--chains", type=int, default=20000)
    d.add_argument("--steps", type=int, default=1500)
    d.add_argument("--step-size", type=float, default=0.12)
    d.add_argument("--bins", type=int, default=64)
    d.add_argument("--device", choices=["cpu", "cuda"], default=None)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("chains", "steps", "bins", "max_steps", "n", "log_every", "n_eval", "repeats"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            print(f"hebm {args.command}: --{name.replace('_', '-')} must be at least 1, got {v}", file=sys.stderr)
            return 2
    for name in ("sample_every", "ckpt_every", "eval_every"):
        v = getattr(args, name, None)
        if v is not None and v < 0:
            print(f"hebm {args.command}: --{name.replace('_', '-')} must be at least 0, got {v}", file=sys.stderr)
            return 2
    from . import distributed as hdist

    rc = 1
    try:
        rc = args.func(args)
        return rc
    except UsageError as e:
        print(f"hebm {args.command}: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # writing the outputs failed (a full disk: the message names the path)
        if os.environ.get("HEBM_DEBUG"):
            raise
        print(f"hebm {args.command}: {e.strerror or e}", file=sys.stderr)
        return 1
    finally:  # every command launched by torchrun leaves its process group, on success and on failure
        hdist.shutdown(ok=rc == 0)


if __name__ == "__main__":
    sys.exit(main())
