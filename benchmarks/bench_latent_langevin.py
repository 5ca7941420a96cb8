"""Eager baselines vs the fused sampler hebm::latent_langevin, side by side in one run: the models and baselines
are described in hebm_ext/bench.py (the same table as `hebm bench`). Medians over repeats after a warm-up; CPU
always, CUDA when a GPU and the CUDA kernels are there; a markdown table, JSON (and a PNG with matplotlib).

    python benchmarks/bench_latent_langevin.py [--model lebm|joint|diffusion] [--batches ...] [--out DIR]
        [--precision fp32|tf32|bf16]
"""
from __future__ import annotations

import argparse

import hebm_ext as H
from hebm_ext.bench import DEFAULT_BATCHES, PRECISIONS, run_latent_bench


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="lebm", choices=sorted(DEFAULT_BATCHES))
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument("--activation", default="lrelu", choices=H.nn.ACTIVATIONS)
    ap.add_argument("--steps", type=int, default=None, help="K per timestep (default: the model's)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--out", default="benchmarks/out")
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS,
                    help="the fused sampler's matmuls; the eager baseline at the same precision (CUDA only for "
                         "tf32 / bf16)")
    a = ap.parse_args(argv)
    return run_latent_bench(a.model, a.batches, a.activation, a.steps, a.repeats, a.devices, a.out,
                            precision=a.precision)


if __name__ == "__main__":
    main()
