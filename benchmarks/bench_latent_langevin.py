"""Eager baselines vs the fused sampler hebm::latent_langevin, side by side in one run.

Models (--model):
  lebm       LEBM prior 100 -> 200 -> 200 -> 1 (ALGORITHMS.md 1.1), K = 60, s = 0.4, B in {16, 100, 1024, 8192};
             baselines: the eager reference sampler (sample_prior backend "reference") and LEBM's own bare loop on
             the same MLP (reference.lebm_prior_loop).
  joint      the joint latent EBM prior of section 3.1 (z2 = 100 top, z1 = 128; ladder MLP 4 x 200; heads
             128-200-200-200-1 and 100-100-100-1), z-space, K = 60, s = 0.4, B in {100, 1024}.
  diffusion  the hierarchical EBM diffusion sampler: 3-layer u-space hierarchy [100, 128, 128] (ladder 2 x 200),
             time-conditioned heads per layer, T = 3 recovery likelihood, K = 50, B = 100 (section 6.7).
Medians over repeats after a warm-up; CPU always, CUDA when a GPU and the CUDA kernels are there. Prints a markdown
table and writes JSON (and a PNG when matplotlib is installed).

    python benchmarks/bench_latent_langevin.py [--model lebm|joint|diffusion] [--batches ...] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hebm_ext as H  # noqa: E402
from hebm_ext.sampling.reference import lebm_prior_loop  # noqa: E402
from common import environment, markdown_table, median_time, plot_ratios, write_json  # noqa: E402

DEFAULT_BATCHES = {"lebm": [16, 100, 1024, 8192], "joint": [100, 1024], "diffusion": [100]}


def mlp_flops(m) -> int:
    return sum(lin.in_features * lin.out_features for lin in m.linears)


def build(model, activation, steps):
    """(prior, schedule, latent dim, forward multiply-adds per chain and step)"""
    torch.manual_seed(0)
    if model == "lebm":
        head = H.EnergyMLP(100, 200, 2, activation=activation)
        return H.LatentEBMPrior([100], [(head, 0)]), H.LangevinSchedule.lebm(steps or 60, 0.4), 100, mlp_flops(head)
    if model == "joint":
        ladder = H.GaussianLadder([100, 128], 200, 4, activation, sigma_min=0.01, sigma_top=1.01)
        heads = [(H.EnergyMLP(100, 100, 2, activation), 0), (H.EnergyMLP(128, 200, 3, activation), 1)]
        prior = H.LatentEBMPrior([100, 128], heads, base=ladder, param="z")
        macs = sum(mlp_flops(m) for m in ladder.nets) + sum(mlp_flops(m) for m, _ in heads)
        return prior, H.LangevinSchedule.lebm(steps or 60, 0.4), 228, macs
    dims = [100, 128, 128]
    ladder = H.GaussianLadder(dims, 200, 2, activation, soft_clamp=True)
    heads = [(H.EnergyMLP(d, 200, 2, activation, time_steps=3), l) for l, d in enumerate(dims)]
    prior = H.LatentEBMPrior(dims, heads, base=ladder, param="u")
    macs = sum(mlp_flops(m) for m in ladder.nets) + sum(mlp_flops(m) for m, _ in heads)
    return prior, H.LangevinSchedule.recovery_likelihood(3, steps or 50, 3e-5), sum(dims), macs


def bench(model, device, batches, activation, steps, repeats):
    prior, sch, D, macs = build(model, activation, steps)
    prior = prior.to(device)
    rows = []
    for B in batches:
        y0 = torch.randn(B, D, device=device)
        t_ref, _ = median_time(lambda: H.sample_prior(prior, y0, sch, backend="reference"), device, repeats=repeats,
                               budget_s=20)
        t_fused, _ = median_time(lambda: H.sample_prior(prior, y0, sch, backend="fused"), device, repeats=repeats)
        flops = 4.0 * B * sch.total_steps * macs  # forward + backward to the input, 2 flops per multiply-add
        row = {"model": model, "device": device, "B": B, "steps": sch.total_steps, "activation": activation,
               "eager_ms": t_ref * 1e3, "fused_ms": t_fused * 1e3, "speedup": t_ref / t_fused,
               "fused_gflops": flops / t_fused / 1e9}
        msg = f"  {model} {device} B={B}: eager reference {t_ref*1e3:.2f} ms, fused {t_fused*1e3:.2f} ms, x{t_ref/t_fused:.1f}"
        if model == "lebm":
            head = prior.heads[0]
            t_loop, _ = median_time(lambda: lebm_prior_loop(head, y0, sch.K[0], 0.4), device, repeats=repeats,
                                    budget_s=20)
            row.update(papers_loop_ms=t_loop * 1e3, speedup_vs_papers_loop=t_loop / t_fused)
            msg += f" (LEBM loop {t_loop*1e3:.2f} ms, x{t_loop/t_fused:.1f})"
        rows.append(row)
        print(msg, flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="lebm", choices=sorted(DEFAULT_BATCHES))
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument("--activation", default="lrelu", choices=H.nn.ACTIVATIONS)
    ap.add_argument("--steps", type=int, default=None, help="K per timestep (default: the model's)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    args = ap.parse_args(argv)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() and H.ops.available()["cuda"] else []))
    batches = args.batches or DEFAULT_BATCHES[args.model]
    env = environment()
    print(f"# latent Langevin, model {args.model} ({args.activation}); {env}", flush=True)
    rows = []
    for dev in devices:
        rows += bench(args.model, dev, batches, args.activation, args.steps, args.repeats)
    cols = [("model", lambda r: r["model"]), ("device", lambda r: r["device"]), ("B", lambda r: str(r["B"])),
            ("steps", lambda r: str(r["steps"])), ("eager reference ms", lambda r: f"{r['eager_ms']:.2f}")]
    if args.model == "lebm":
        cols.append(("LEBM loop ms", lambda r: f"{r['papers_loop_ms']:.2f}"))
    cols += [("fused ms", lambda r: f"{r['fused_ms']:.2f}"), ("vs reference", lambda r: f"{r['speedup']:.1f}x")]
    if args.model == "lebm":
        cols.append(("vs LEBM loop", lambda r: f"{r['speedup_vs_papers_loop']:.1f}x"))
    cols.append(("fused GFLOP/s", lambda r: f"{r['fused_gflops']:.1f}"))
    table = markdown_table(rows, cols)
    stem = f"latent_langevin_{args.model}_{args.activation}"
    path = os.path.join(args.out, stem + ".json")
    write_json(path, {"env": env, "rows": rows})
    png = plot_ratios(os.path.join(args.out, stem + ".png"), rows, f"fused vs eager reference, {args.model}")
    print(f"\nJSON: {path}" + (f"\nPNG: {png}" if png else ""))
    print(table)
    return rows


if __name__ == "__main__":
    main()
