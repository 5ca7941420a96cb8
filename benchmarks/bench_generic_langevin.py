"""The generic Langevin engine (hebm_ext.langevin) against the papers' eager loops, on the two chains that need a
convolutional network:

- LEBM posterior (ALGORITHMS.md 1.2): SVHN-shaped generator (SvhnDecoder, nz = 100) and the LEBM prior
  100 -> 200 -> 200 -> 1, B = 100, K = 20, s = 0.1, sigma = 0.3; baseline reference.lebm_posterior_loop;
- dual-MCMC x-chain (5.3): CIFAR-10-shaped data EBM (DataEBM, spectral norm, train mode as the code), B = 100,
  K = 30, s = 0.5, n = 1e-3; baseline reference.dual_mcmc_x_loop.

Backends side by side in one run: the papers' loop, the eager engine (autograd per step + the fused update op),
and on CUDA the graph engine (the whole loop captured once, replayed). Medians over repeats after a warm-up (the
warm-up also captures the graph). The paper widths (ngf = 64, ndf = 512) on CUDA; on the CPU the default widths are
smaller (ngf = 16, ndf = 32: the paper's CIFAR-10 EBM costs about a TFLOP per step at B = 100), with the same shapes
otherwise. Prints a markdown table and writes JSON.

    python benchmarks/bench_generic_langevin.py [--batch 100] [--ngf N] [--ndf N] [--devices cpu cuda] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hebm_ext as H  # noqa: E402
from hebm_ext.sampling.reference import dual_mcmc_x_loop, lebm_posterior_loop  # noqa: E402
from common import environment, markdown_table, median_time, write_json  # noqa: E402

PAPER_WIDTHS = {"ngf": 64, "ndf": 512}
CPU_WIDTHS = {"ngf": 16, "ndf": 32}


def lebm_posterior_case(device, B, K, ngf):
    torch.manual_seed(0)
    netG = H.nn.SvhnDecoder(100, ngf=ngf).to(device)
    prior = H.LatentEBMPrior([100], [(H.EnergyMLP(100, 200, 2, activation="gelu"), 0)]).to(device)
    x = torch.rand(B, 3, 32, 32, device=device) * 2 - 1
    z0 = torch.randn(B, 100, device=device)
    post = H.generator_posterior(netG, x, prior=prior, sigma=0.3)
    sch = H.LangevinSchedule.lebm(steps=K, step_size=0.1)
    return {
        "chain": "LEBM posterior", "shape": f"SVHN G ngf={ngf}, z 100, B={B}, K={K}",
        "papers_loop": lambda: lebm_posterior_loop(netG, prior.heads[0], x, z0, steps=K, step_size=0.1, sigma=0.3),
        "eager": lambda: H.langevin(post, z0, sch, backend="eager"),
        "graph": lambda: H.langevin(post, z0, sch, backend="graph"),
    }


def dual_mcmc_x_case(device, B, K, ndf):
    torch.manual_seed(0)
    ebm = H.nn.DataEBM("cifar10", ndf=ndf).to(device)
    x0 = torch.rand(B, 3, 32, 32, device=device) * 2 - 1
    target = H.data_ebm_target(ebm)
    sch = H.LangevinSchedule.decoupled(K, 0.5, 1e-3)
    return {
        "chain": "dual-MCMC x-chain", "shape": f"CIFAR-10 E ndf={ndf}, B={B}, K={K}",
        "papers_loop": lambda: dual_mcmc_x_loop(ebm, x0, steps=K, step_size=0.5, noise_std=1e-3),
        "eager": lambda: H.langevin(target, x0, sch, backend="eager"),
        "graph": lambda: H.langevin(target, x0, sch, backend="graph"),
    }


def bench(device, B, ngf, ndf, repeats, budget_s):
    rows = []
    for case in (lebm_posterior_case(device, B, 20, ngf), dual_mcmc_x_case(device, B, 30, ndf)):
        times = {}
        for name in ("papers_loop", "eager", "graph"):
            if name == "graph" and device != "cuda":
                continue
            times[name], _ = median_time(case[name], device, warmup=1, repeats=repeats, budget_s=budget_s)
        row = {"device": device, "chain": case["chain"], "shape": case["shape"],
               **{f"{k}_ms": v * 1e3 for k, v in times.items()},
               "eager_vs_loop": times["papers_loop"] / times["eager"]}
        if "graph" in times:
            row["graph_vs_eager"] = times["eager"] / times["graph"]
            row["graph_vs_loop"] = times["papers_loop"] / times["graph"]
        rows.append(row)
        print(f"  {device} {case['chain']} ({case['shape']}): " +
              ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in times.items()), flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--ngf", type=int, default=None, help="generator width (default: 64 on CUDA, 16 on the CPU)")
    ap.add_argument("--ndf", type=int, default=None, help="data-EBM width (default: 512 on CUDA, 32 on the CPU)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, default=30.0, help="seconds per measurement before stopping early")
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    args = ap.parse_args(argv)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() and H.ops.available()["cuda"] else []))
    env = environment()
    print(f"# generic Langevin engine vs the papers' loops; {env}", flush=True)
    rows = []
    for dev in devices:
        widths = PAPER_WIDTHS if dev == "cuda" else CPU_WIDTHS
        rows += bench(dev, args.batch, args.ngf or widths["ngf"], args.ndf or widths["ndf"], args.repeats,
                      args.budget)

    def ms(key):
        return lambda r: f"{r[key]:.1f}" if key in r else "-"

    def ratio(key):
        return lambda r: f"{r[key]:.2f}x" if key in r else "-"

    table = markdown_table(rows, [
        ("device", lambda r: r["device"]), ("chain", lambda r: r["chain"]), ("shapes", lambda r: r["shape"]),
        ("papers' loop ms", ms("papers_loop_ms")), ("eager ms", ms("eager_ms")), ("graph ms", ms("graph_ms")),
        ("eager vs loop", ratio("eager_vs_loop")), ("graph vs eager", ratio("graph_vs_eager")),
        ("graph vs loop", ratio("graph_vs_loop"))])
    path = os.path.join(args.out, "generic_langevin.json")
    write_json(path, {"env": env, "rows": rows})
    print(f"\nJSON: {path}")
    print(table)
    return rows


if __name__ == "__main__":
    main()
