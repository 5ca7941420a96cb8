"""The prior hole on the embedded digits: train each method for a fixed budget (fixed seed), then compare the
maximum mean discrepancy (MMD, hebm_ext.metrics.mmd) to the aggregate posterior of
  - samples of the learned prior (the EBM prior, sampled by the fused kernels), and
  - samples of the Gaussian base (N(0, I), or the GaussianLadder of a multi-layer generator).
The EBM prior closes the hole when its MMD is well below the base's (issue 5 asks for at most 0.8x).

    python benchmarks/prior_hole.py [--methods lebm joint-ebm:mcmc ...] [--steps N] [--out docs/PRIOR_HOLE.md]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hebm_ext as H  # noqa: E402
from common import (command, digits_batches, environment, markdown_table, study_args, study_setup,  # noqa: E402
                    write_doc, write_json)

DEFAULT = ["lebm", "joint-ebm:mcmc", "joint-ebm:variational", "diffusion-ebm"]


def build(spec: str, seed: int, overrides: dict):
    name, _, scheme = spec.partition(":")
    kw = dict(overrides)
    if scheme:
        kw["scheme"] = scheme
    torch.manual_seed(seed)
    return H.methods.create(name, "digits", **kw)


def measure(m, n_eval, seed):
    """(MMD^2(prior, posterior), MMD^2(base, posterior)) with the kernel bandwidth of the posterior samples."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    x = torch.cat([H.data.Digits(split="test").images, H.data.Digits(split="train").images])[:n_eval]
    post = m.posterior_latents(x)
    prior = m.prior_latents(n_eval)
    base = m.base_latents(n_eval)
    torch.random.set_rng_state(state)
    bw = H.metrics.median_bandwidth(post)
    return H.metrics.mmd(prior, post, bw), H.metrics.mmd(base, post, bw)


def run(spec, steps, seed, n_eval, overrides, eval_every=0):
    m = build(spec, seed, overrides)
    t0 = time.perf_counter()
    log = []
    for step, x in zip(range(steps), digits_batches(m, seed)):
        out = m.train_step(x)
        if step % 100 == 0 or step == steps - 1:
            log.append({"step": step, **out})
        if eval_every and (step + 1) % eval_every == 0:
            a, b = measure(m, n_eval, seed + 1)
            print(f"  {spec} step {step + 1} ({time.perf_counter() - t0:.0f} s): MMD^2 prior {a:.4f} base {b:.4f} "
                  f"ratio {a / b:.2f}  {dict((k, round(v, 3)) for k, v in out.items())}", flush=True)
    train_s = time.perf_counter() - t0
    mmd_prior, mmd_base = measure(m, n_eval, seed + 1)
    return {"method": spec, "steps": steps, "train_s": train_s, "mmd_prior": mmd_prior, "mmd_base": mmd_base,
            "ratio": mmd_prior / mmd_base, "log": log}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=DEFAULT)
    ap.add_argument("--steps", type=int, default=None, help="train steps per method (default: per method)")
    ap.add_argument("--n-eval", type=int, default=1797, help="digits (test first, then train) / prior samples for "
                                                                "the MMD")
    ap.add_argument("--eval-every", type=int, default=0, help="also measure every N steps (tuning)")
    study_args(ap, "docs/PRIOR_HOLE.md", threads=None)
    args = ap.parse_args(argv)
    overrides = study_setup(args)
    rows = []
    for spec in args.methods:
        steps = args.steps or {"lebm": 1500, "joint-ebm:mcmc": 1200, "joint-ebm:variational": 8000,
                              "diffusion-ebm": 8000}[spec]
        r = run(spec, steps, args.seed, args.n_eval, overrides, args.eval_every)
        print(f"{spec}: {steps} steps in {r['train_s']:.0f} s; MMD^2 prior {r['mmd_prior']:.4f}, "
              f"base {r['mmd_base']:.4f}, ratio {r['ratio']:.2f}", flush=True)
        rows.append(r)
    table = markdown_table(rows, [
        ("method", lambda r: r["method"]), ("train steps", lambda r: str(r["steps"])),
        ("train time (s)", lambda r: f"{r['train_s']:.0f}"), ("MMD^2(EBM prior, posterior)", lambda r: f"{r['mmd_prior']:.4f}"),
        ("MMD^2(Gaussian base, posterior)", lambda r: f"{r['mmd_base']:.4f}"), ("ratio", lambda r: f"{r['ratio']:.2f}")])
    print(table)
    env = environment()
    write_json(os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "prior_hole.json"),
               {"env": env, "rows": rows, "args": vars(args)})
    if args.out:
        write_doc(args.out, f"# The prior hole on the embedded digits\n\nCommand: `{command('prior_hole.py', argv)}`, "
                            f"{env['date']}, commit {env['commit']}, {env['threads']} CPU threads "
                            f"({env['cpu_capability']}).\n\n{__doc__.split(chr(10) + chr(10))[0]}\n\n{table}\n")
    return rows


if __name__ == "__main__":
    main()
