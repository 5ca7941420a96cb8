"""The papers' configuration at digits scale: a spatial backbone (hebm_ext.backbones.SpatialHVAE, groups of
(c, h, w)) trained by its ELBO as stage 1, then frozen, and one conv EBM per group as stage 2. For each method it
compares the EBM prior with the backbone's Gaussian prior (u ~ N(0, I), z = T(u)):
  - the digits FID (hebm_ext.metrics.digits_fid) of decoded samples against the test digits, and
  - the prior-hole MMD^2 to the aggregate posterior (as docs/PRIOR_HOLE.md),
with the time of each stage.

    python benchmarks/spatial_digits.py [--methods diffusion-ebm:digits-spatial joint-ebm:digits-two-stage]
        [--stage2-steps N] [--n-eval 1000] [--out docs/SPATIAL_DIGITS.md] [--set key=value ...]
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

DEFAULT = ["diffusion-ebm:digits-spatial", "joint-ebm:digits-two-stage"]

NOTES = """Reading the table: the digits FID is the Frechet distance in the features of a small digits classifier
(hebm_ext.metrics.digits_fid, against the 359 test digits); both priors decode through the same frozen backbone, so
the difference is the prior alone. The MMD^2 compares latents (the flat concatenation of the groups) with the
aggregate posterior of the same digits, at the posterior's median bandwidth. Timings: 1 torch thread on a 2-core
machine that four other developers' builds and tests shared at the same time (load average 7-12), so they are upper
bounds; the same preset through the command line, `OMP_NUM_THREADS=1 hebm train --method diffusion-ebm --preset
digits-spatial`, is the run the README quotes (both stages and the final evaluation)."""


def measure(m, n_eval, seed):
    """digits FID of the EBM prior's and the Gaussian prior's samples, and their MMD^2 to the posterior."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    test = H.data.Digits(split="test").images
    x = torch.cat([test, H.data.Digits(split="train").images])[:n_eval]
    post = m.posterior_latents(x)
    t0 = time.perf_counter()
    prior = m.prior_latents(n_eval)
    sample_s = time.perf_counter() - t0
    base = m.base_latents(n_eval)
    fid_prior = H.metrics.digits_fid(m.decode(prior), "test")
    fid_base = H.metrics.digits_fid(m.decode(base), "test")
    torch.random.set_rng_state(state)
    bw = H.metrics.median_bandwidth(post)
    return {"fid_prior": fid_prior, "fid_base": fid_base, "mmd_prior": H.metrics.mmd(prior, post, bw),
            "mmd_base": H.metrics.mmd(base, post, bw), "sample_s": sample_s}


def run(spec, seed, n_eval, overrides, stage2_steps=None, eval_every=0):
    name, _, preset = spec.partition(":")
    torch.manual_seed(seed)
    m = H.methods.create(name, preset, **overrides)
    vae_steps = m.config.vae_steps
    steps = vae_steps + (stage2_steps if stage2_steps is not None else
                         m.config.epochs * (1438 // m.config.batch_size) - vae_steps)  # the trainer drops the last partial batch
    times = {1: 0.0, 2: 0.0}
    log = []
    for step, x in zip(range(steps), digits_batches(m, seed)):
        stage = m.stage
        t0 = time.perf_counter()
        out = m.train_step(x)
        times[stage] += time.perf_counter() - t0
        if step % 100 == 0 or step == steps - 1:
            log.append({"step": step, **out})
        if eval_every and step >= vae_steps and (step + 1 - vae_steps) % eval_every == 0:
            r = measure(m, n_eval, seed + 1)
            print(f"  {spec} step {step + 1} (stage 1 {times[1]:.0f} s, stage 2 {times[2]:.0f} s): "
                  + " ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    r = measure(m, n_eval, seed + 1)
    return {"method": spec, "vae_steps": vae_steps, "ebm_steps": steps - vae_steps, "stage1_s": times[1],
            "stage2_s": times[2], **r, "log": log}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=DEFAULT, help="method:preset")
    ap.add_argument("--stage2-steps", type=int, default=None, help="EBM steps (default: the preset's epochs)")
    ap.add_argument("--n-eval", type=int, default=1000, help="samples (and posterior digits) per measure")
    ap.add_argument("--eval-every", type=int, default=0, help="also measure every N EBM steps (tuning)")
    study_args(ap, "docs/SPATIAL_DIGITS.md")
    args = ap.parse_args(argv)
    overrides = study_setup(args)
    rows = []
    for spec in args.methods:
        r = run(spec, args.seed, args.n_eval, overrides, args.stage2_steps, args.eval_every)
        print(f"{spec}: stage 1 {r['vae_steps']} steps {r['stage1_s']:.0f} s, stage 2 {r['ebm_steps']} steps "
              f"{r['stage2_s']:.0f} s; digits FID EBM prior {r['fid_prior']:.3f}, Gaussian prior {r['fid_base']:.3f}; "
              f"MMD^2 {r['mmd_prior']:.4f} vs {r['mmd_base']:.4f}", flush=True)
        rows.append(r)
    table = markdown_table(rows, [
        ("method:preset", lambda r: r["method"]),
        ("stage 1 steps / s", lambda r: f"{r['vae_steps']} / {r['stage1_s']:.0f}"),
        ("stage 2 steps / s", lambda r: f"{r['ebm_steps']} / {r['stage2_s']:.0f}"),
        ("digits FID, EBM prior", lambda r: f"{r['fid_prior']:.3f}"),
        ("digits FID, Gaussian prior", lambda r: f"{r['fid_base']:.3f}"),
        ("MMD^2(EBM prior, posterior)", lambda r: f"{r['mmd_prior']:.4f}"),
        ("MMD^2(Gaussian prior, posterior)", lambda r: f"{r['mmd_base']:.4f}"),
        ("sampling (s)", lambda r: f"{r['sample_s']:.1f}")])
    print(table)
    env = environment()
    write_json(os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "spatial_digits.json"),
               {"env": env, "rows": rows, "args": vars(args)})
    if args.out:
        write_doc(args.out, f"# EBM priors on a spatial backbone, digits scale\n\nCommand: "
                            f"`{command('spatial_digits.py', argv)}`, {env['date']}, commit {env['commit']}, "
                            f"{env['threads']} CPU thread(s) ({env['cpu_capability']}), on a machine shared with "
                            f"other jobs (timings are upper bounds).\n\n{__doc__.split(chr(10) + chr(10))[0]}\n\n"
                            f"{table}\n\n{NOTES}\n")
    return rows


if __name__ == "__main__":
    main()
