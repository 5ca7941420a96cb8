"""One launch of each fused LEBM configuration that docs/CUDA_KERNELS.md models, for a profiler to read
(gpu_check.sh runs it under Nsight Compute where the machine lets ncu read the counters): LEBM 100-200-200-1,
K = 60, at B = 100 (the 4-block cluster) in fp32 and bf16, and at B = 65536 (the throughput path) in fp32 and bf16.
The profiler's shared-memory wavefronts, instructions and stall reasons are what the document's model predicts
from the emulation's counts. Each configuration is one launch of the sampler, in this order.

    python benchmarks/profile_kernels.py [--device cuda|cpu] [--steps 60] [--batches 100 65536]
    ncu --clock-control none -k regex:latent_ --csv --page details python benchmarks/profile_kernels.py
"""
from __future__ import annotations

import argparse

import torch

import hebm_ext as H

CONFIGS = [(100, "fp32"), (100, "bf16"), (65536, "fp32"), (65536, "bf16")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default: 100 65536")
    a = ap.parse_args(argv)
    if a.steps < 1:
        ap.error(f"--steps must be >= 1, got {a.steps}")
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA GPU is visible")
    torch.manual_seed(0)
    head = H.EnergyMLP(100, 200, 2, activation="lrelu")
    prior = H.LatentEBMPrior([100], [(head, 0)]).to(a.device)
    sch = H.LangevinSchedule.lebm(a.steps, 0.4)
    for B, prec in CONFIGS:
        if a.batches and B not in a.batches:
            continue
        if a.device == "cpu" and prec != "fp32":
            continue  # the CPU kernel is fp32 only
        y0 = torch.randn(B, 100, device=a.device)
        H.sample_prior(prior, y0, sch, seed=1, backend="fused", precision=prec)
        if a.device == "cuda":
            torch.cuda.synchronize()
        print(f"profiled: LEBM B={B} {prec} on {a.device}", flush=True)


if __name__ == "__main__":
    main()
