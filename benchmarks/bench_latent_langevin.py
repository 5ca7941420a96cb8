"""Eager baselines vs the fused sampler hebm::latent_langevin: the eager reference sampler (sample_prior backend
"reference", autograd per step) and LEBM's own bare loop on the same MLP (reference.lebm_prior_loop).

LEBM prior 100 -> 200 -> 200 -> 1 (ALGORITHMS.md 1.1), K = 60, s = 0.4, B in {16, 100, 1024, 8192};
medians over repeats after a warm-up, both backends measured side by side in one run; CPU always, CUDA when a GPU
and the CUDA kernels are there. Prints a markdown table and writes JSON (and a PNG when matplotlib is installed).

    python benchmarks/bench_latent_langevin.py [--batches 16 100 1024 8192] [--activation lrelu] [--out DIR]
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


def lebm_prior(activation, device):
    torch.manual_seed(0)
    head = H.EnergyMLP(100, 200, 2, activation=activation)
    return H.LatentEBMPrior([100], [(head, 0)]).to(device)


def bench(device, batches, activation, steps, repeats):
    prior = lebm_prior(activation, device)
    head = prior.heads[0]
    sch = H.LangevinSchedule.lebm(steps=steps, step_size=0.4)
    rows = []
    for B in batches:
        y0 = torch.randn(B, 100, device=device)
        t_ref, _ = median_time(lambda: H.sample_prior(prior, y0, sch, backend="reference"), device, repeats=repeats,
                               budget_s=20)
        t_loop, _ = median_time(lambda: lebm_prior_loop(head, y0, steps, 0.4), device, repeats=repeats, budget_s=20)
        t_fused, _ = median_time(lambda: H.sample_prior(prior, y0, sch, backend="fused"), device, repeats=repeats)
        flops = 4.0 * B * steps * (100 * 200 + 200 * 200 + 200)  # forward + backward to the input, 2 flops/MAC
        rows.append({"device": device, "B": B, "K": steps, "activation": activation, "eager_ms": t_ref * 1e3,
                     "papers_loop_ms": t_loop * 1e3, "fused_ms": t_fused * 1e3, "speedup": t_ref / t_fused,
                     "speedup_vs_papers_loop": t_loop / t_fused, "fused_gflops": flops / t_fused / 1e9})
        print(f"  {device} B={B}: eager reference {t_ref*1e3:.2f} ms, LEBM loop {t_loop*1e3:.2f} ms, "
              f"fused {t_fused*1e3:.2f} ms, x{t_ref/t_fused:.1f} / x{t_loop/t_fused:.1f}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 100, 1024, 8192])
    ap.add_argument("--activation", default="lrelu", choices=H.nn.ACTIVATIONS)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    args = ap.parse_args(argv)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() and H.ops.available()["cuda"] else []))
    env = environment()
    print(f"# latent Langevin: LEBM 100-200-200-1 ({args.activation}), K={args.steps}; {env}", flush=True)
    rows = []
    for dev in devices:
        rows += bench(dev, args.batches, args.activation, args.steps, args.repeats)
    table = markdown_table(rows, [
        ("device", lambda r: r["device"]), ("B", lambda r: str(r["B"])),
        ("eager reference ms", lambda r: f"{r['eager_ms']:.2f}"),
        ("LEBM loop ms", lambda r: f"{r['papers_loop_ms']:.2f}"), ("fused ms", lambda r: f"{r['fused_ms']:.2f}"),
        ("vs reference", lambda r: f"{r['speedup']:.1f}x"),
        ("vs LEBM loop", lambda r: f"{r['speedup_vs_papers_loop']:.1f}x"),
        ("fused GFLOP/s", lambda r: f"{r['fused_gflops']:.1f}")])
    path = os.path.join(args.out, f"latent_langevin_{args.activation}.json")
    write_json(path, {"env": env, "rows": rows})
    png = plot_ratios(os.path.join(args.out, f"latent_langevin_{args.activation}.png"), rows,
                      f"fused vs eager, LEBM prior K={args.steps}")
    print(f"\nJSON: {path}" + (f"\nPNG: {png}" if png else ""))
    print(table)
    return rows


if __name__ == "__main__":
    main()
