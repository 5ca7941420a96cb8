"""The `hebm` command line.

    hebm train --method M --preset P [--data-root DIR] [--out DIR] [--max-steps N] [key=value ...]
    hebm sample CKPT [-n 64] [--out FILE]
    hebm eval CKPT [--fid] [--mse] [--anomaly] [--data-root DIR]
    hebm bench [--model lebm|joint|diffusion] [--batches ...]
    hebm demo

`hebm train` under torchrun (torchrun --nproc_per_node=G -m hebm_ext.cli train ...) trains data-parallel.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time

import torch


def _parse_overrides(items):
    out = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"hebm: config overrides are key=value, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


# ---------------------------------------------------------------------------------------------------- train
def _datasets(dataset, root, heldout_digit):
    from . import data
    from .metrics import heldout_digit_split

    if heldout_digit is not None:
        if dataset not in ("mnist", "digits"):
            raise SystemExit("hebm: --heldout-digit is the MNIST anomaly protocol (datasets mnist and digits)")
        parts = [data.open_dataset(dataset, root, "train"), data.open_dataset(dataset, root, "test")]
        return heldout_digit_split(parts, heldout_digit)
    return data.open_dataset(dataset, root, "train"), data.open_dataset(dataset, root, data.TEST_SPLIT[dataset])


def cmd_train(args) -> int:
    from . import distributed as hdist
    from . import methods
    from .train import TrainOptions, Trainer, TrainingDiverged

    dist_info = hdist.init_from_env(args.device)
    overrides = _parse_overrides(args.overrides)
    torch.manual_seed(args.seed)  # the same initial parameters on every rank
    method = methods.create(args.method, args.preset, **overrides).to(dist_info.device)
    if args.backbone:  # a finished stage 1, reused frozen (hebm_ext.methods.backbone_stage.BackboneStage)
        if not hasattr(method, "load_backbone"):
            raise SystemExit(f"hebm: --backbone needs a method on a backbone (diffusion-ebm with backbone=spatial, "
                             f"joint-ebm with scheme=two-stage); {args.method} --preset {args.preset} has none")
        try:
            method.load_backbone(args.backbone)
        except (FileNotFoundError, ValueError, TypeError) as e:
            raise SystemExit(f"hebm: --backbone {args.backbone}: {e}") from e
    hdist.broadcast_module(method)
    torch.manual_seed(args.seed + 7919 * dist_info.rank)  # chains and data augmentation differ across ranks
    train_set, test_set = _datasets(method.config.dataset, args.data_root, args.heldout_digit)
    out = args.out or os.path.join("runs", f"{args.method}-{args.preset}")
    opts = TrainOptions(out=out, max_steps=args.max_steps, data_root=args.data_root, log_every=args.log_every,
                        sample_every=args.sample_every, ckpt_every=args.ckpt_every, eval_every=args.eval_every,
                        n_eval=args.n_eval, seed=args.seed, resume=args.resume, heldout_digit=args.heldout_digit,
                        progress=not args.no_progress, fid_weights=args.fid_weights, monitor=args.monitor)
    trainer = Trainer(method, train_set, test_set, opts, dist_info, method.config.dataset,
                      command="hebm " + " ".join(sys.argv[1:]))
    try:
        ev = trainer.fit()
    except TrainingDiverged as e:
        print(f"hebm train: {e}", file=sys.stderr)
        return 3
    if dist_info.main:
        p = trainer.paths
        print(f"\nhebm train: {method.step} steps of {args.method} ({args.preset}) finished.")
        for k, v in ev.items():
            if k != "step":
                print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
        print(f"  samples:    {p['grid']}  (and {p['samples']}/)")
        print(f"  checkpoint: {p['last']}  (best: {p['best']})")
        print(f"  metrics:    {p['metrics']}")
        print(f"  log:        {p['log']}, {p['losses']}, {p['curve']}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


# ---------------------------------------------------------------------------------------------------- sample / eval
def _load(path, device):
    from . import checkpoint as ckpt_io

    c = ckpt_io.load(path)
    return c, ckpt_io.method_from_checkpoint(c, device)


def cmd_sample(args) -> int:
    from .images import image_grid, save_image

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    _, m = _load(args.checkpoint, device)
    torch.manual_seed(args.seed)
    x = m.sample(args.n)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "..", f"sample_{args.seed}.png")
    out = os.path.normpath(out)
    save_image(image_grid(x, nrow=int(args.n ** 0.5) or 1, scale=4 if x.shape[-1] <= 8 else 1), out)
    if args.tensor:
        from .checkpoint import atomic_save
        atomic_save(x.cpu(), os.path.splitext(out)[0] + ".pt")
    print(f"hebm sample: {args.n} samples of {m.name} -> {out}")
    return 0


def cmd_eval(args) -> int:
    from . import data, evaluate
    from . import distributed as hdist
    from .metrics import heldout_digit_split

    dist_info = hdist.init_from_env(args.device)
    c, m = _load(args.checkpoint, dist_info.device)
    opts = c["trainer"]["options"]
    dataset = m.config.dataset
    root = args.data_root or opts.get("data_root")
    if not (args.fid or args.mse or args.anomaly):
        args.fid = args.mse = True
    test = data.open_dataset(dataset, root, data.TEST_SPLIT[dataset])
    res = {"checkpoint": args.checkpoint, "step": m.step}
    torch.manual_seed(args.seed)
    if args.fid:
        kind = evaluate.fid_kind(dataset, args.fid_weights)
        if kind is None:
            raise SystemExit("hebm eval --fid: Inception FID needs the pytorch-fid weights file "
                             "(pt_inception-2015-12-05-6726825d.pth): --fid-weights PATH or HEBM_FID_WEIGHTS=PATH")
        name = "digits_fid" if kind == "digits" else "fid"
        res[name] = evaluate.fid(m, test, args.n, dist_info, kind, args.fid_weights, ref_stats=args.fid_stats,
                                 seed=args.seed)
        res[name + "_gaussian_prior"] = evaluate.fid(m, test, args.n, dist_info, kind, args.fid_weights, base=True,
                                                     ref_stats=args.fid_stats, seed=args.seed)
    if args.mse:
        res["mse"] = evaluate.reconstruction_mse(m, test, args.n, dist_info)
    if args.anomaly:
        digit = opts.get("heldout_digit")
        if digit is None:
            raise SystemExit("hebm eval --anomaly: the checkpoint was not trained with --heldout-digit")
        parts = [data.open_dataset(dataset, root, "train"), data.open_dataset(dataset, root, "test")]
        _, test_anom = heldout_digit_split(parts, digit)
        res.update({f"anomaly_{k}": v for k, v in evaluate.anomaly(m, test_anom, dist_info).items()})
    if dist_info.main:
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "..", "metrics_eval.json")
        with open(out + ".tmp", "w") as f:
            json.dump(res, f, indent=2)
        os.replace(out + ".tmp", out)
        print(json.dumps(res, indent=2))
        print(f"hebm eval: written to {os.path.normpath(out)}")
    return 0


# ---------------------------------------------------------------------------------------------------- bench
def cmd_bench(args) -> int:
    from .bench import run_latent_bench

    run_latent_bench(args.model, batches=args.batches, steps=args.steps, repeats=args.repeats, out=args.out)
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

    ap = argparse.ArgumentParser(prog="hebm", description="Energy-based latent priors with fused Langevin kernels.")
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a method (a run directory with samples, checkpoints, metrics)")
    t.add_argument("--method", required=True, choices=METHODS)
    t.add_argument("--preset", default="digits", help="digits (embedded data) or the papers' svhn, cifar10, "
                                                      "celeba64, mnist")
    t.add_argument("--data-root", default=None, help="directory of the dataset files (not needed for digits)")
    t.add_argument("--out", default=None, help="run directory (default runs/METHOD-PRESET)")
    t.add_argument("--max-steps", type=int, default=None, help="default: the preset's epochs")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", choices=["cpu", "cuda"], default=None)
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--sample-every", type=int, default=1000)
    t.add_argument("--ckpt-every", type=int, default=500)
    t.add_argument("--eval-every", type=int, default=0, help="0: evaluate at the end")
    t.add_argument("--n-eval", type=int, default=1000, help="samples for FID")
    t.add_argument("--monitor", choices=["auto", "fid", "mse"], default="auto", help="what best.pt minimises")
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
    s.add_argument("--out", default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--tensor", action="store_true", help="also save the samples as a .pt tensor")
    s.add_argument("--device", choices=["cpu", "cuda"], default=None)
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="FID, reconstruction MSE, anomaly AUPRC of a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--fid", action="store_true")
    e.add_argument("--mse", action="store_true")
    e.add_argument("--anomaly", action="store_true")
    e.add_argument("-n", type=int, default=2000, help="samples / test images")
    e.add_argument("--data-root", default=None)
    e.add_argument("--fid-weights", default=None)
    e.add_argument("--fid-stats", default=None, help="reference statistics .npz (mu, sigma) instead of the test set")
    e.add_argument("--out", default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", choices=["cpu", "cuda"], default=None)
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="fused sampler vs the eager reference (medians, a table)")
    b.add_argument("--model", choices=["lebm", "joint", "diffusion"], default="lebm")
    b.add_argument("--batches", type=int, nargs="+", default=None)
    b.add_argument("--steps", type=int, default=None)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--out", default=os.path.join("benchmarks", "out"))
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
    for name in ("chains", "steps", "bins", "max_steps", "n"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            print(f"hebm: --{name.replace('_', '-')} must be at least 1, got {v}", file=sys.stderr)
            return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
