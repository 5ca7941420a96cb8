"""Eager baselines vs the fused sampler hebm::latent_langevin, side by side in one run (hebm_ext.bench).

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

import hebm_ext as H
from hebm_ext.bench import DEFAULT_BATCHES, run_latent_bench


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="lebm", choices=sorted(DEFAULT_BATCHES))
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument("--activation", default="lrelu", choices=H.nn.ACTIVATIONS)
    ap.add_argument("--steps", type=int, default=None, help="K per timestep (default: the model's)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--out", default="benchmarks/out")
    a = ap.parse_args(argv)
    return run_latent_bench(a.model, a.batches, a.activation, a.steps, a.repeats, a.devices, a.out)


if __name__ == "__main__":
    main()
