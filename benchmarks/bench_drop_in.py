"""The speeds and the spectral-norm difference quoted in docs/PORTING.md: each of the papers' chains as the user's
code has it (python_tests/papers_style.py: the papers' networks and Langevin loops in their style) against the call
that replaces it, side by side in one run. Medians over repeats after a warm-up, the two calls
of a row timed alternately; CPU; float32.

    python benchmarks/bench_drop_in.py [--repeats 5] [--quick] [--out benchmarks/out]

Rows:
  lebm_prior      train_svhn.py's _netE (nz 100, ndf 200, nez 1, LeakyReLU 0.2), sample_langevin_prior_z K = 60,
                  s = 0.4 -> sample_prior(LatentEBMPrior.from_module(netE, 100, input=(100, 1, 1)), ...); without and
                  with spectral-norm hooks (e_sn), netE in train mode as during training
  cui_prior       train_fid.py's energy_model over 5 layers of 10 (2 x 100, LeakyReLU 0.2, spectral-norm hooks),
                  langevin_prior K = 100, s = 0.3 -> from_module(..., output="log_density", input="layers")
  lebm_posterior  sample_langevin_post_z through the SVHN _netG (ngf 64), B = 64, K = 20, s = 0.1 -> langevin(
                  generator_posterior(G, x, prior, sigma=0.3), ...) (the prior's gradient from the fused op)
  diffusion       Gao et al.'s annealed recovery-likelihood sampling through a conv EBM (16 x 16 x 3, T = 6, K = 30,
                  B = 16)
                  -> langevin(f, x_T, LangevinSchedule.recovery_likelihood(6, 30, 2e-4, form="gao"))
and the spectral-norm study: the fused chain (W / sigma with the stored u, v) against the papers' loop in train mode
(one power iteration per forward), on the LEBM setting after 20 Adam steps of LEBM's EBM update.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn

import hebm_ext as H
from hebm_ext.bench import alternating_medians, environment, markdown_table, write_json

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python_tests"))
import papers_style as P  # noqa: E402


BUDGET_S = 60.0  # per timing: repeats stop after this (never fewer than 3), to keep a run short on a shared CPU


def _pair(eager, fused, repeats):
    """Medians of the two calls timed alternately (one warm-up each first); repeats stop after BUDGET_S (never
    fewer than 3)."""
    return tuple(alternating_medians([eager, fused], warmup=1, repeats=repeats, min_repeats=3, budget_s=BUDGET_S))


def _row(name, B, eager_s, fused_s, what):
    print(f"{name:36s} B={B:5d}  papers' loop {eager_s:8.3f} s  hebm {fused_s:8.3f} s  {eager_s / fused_s:5.1f}x",
          flush=True)
    return {"chain": name, "B": B, "eager_s": eager_s, "hebm_s": fused_s, "speedup": eager_s / fused_s, "call": what}


def lebm_prior(B, repeats, e_sn):
    torch.manual_seed(0)
    nz, steps, s = 100, 60, 0.4
    netE = P._netE(nz, 200, 1, "lrelu", e_sn=e_sn).train()
    z0 = torch.randn(B, nz, 1, 1)
    noise = torch.randn(steps, B, nz)
    prior = H.LatentEBMPrior.from_module(netE, nz, input=(nz, 1, 1))
    sched = H.LangevinSchedule.lebm(steps, s)
    t_e, t_f = _pair(lambda: P.sample_langevin_prior_z(z0, netE, noise, s),
                     lambda: H.sample_prior(prior, z0.view(B, nz), sched, backend="fused"), repeats)
    return _row(f"lebm_prior{' (e_sn)' if e_sn else ''}", B, t_e, t_f, "sample_prior(from_module)")


def cui_prior(B, repeats):
    torch.manual_seed(1)
    dims, steps, s = [10] * 5, 100, 0.3
    netE = P.add_sn(P.energy_model(sum(dims), 2, 100)).train()
    zs0 = [torch.randn(B, d) for d in dims]
    noise = torch.randn(steps, B, sum(dims))
    prior = H.LatentEBMPrior.from_module(netE, dims, output="log_density", input="layers")
    sched = H.LangevinSchedule.lebm(steps, s)
    y0 = torch.cat(zs0, 1)
    t_e, t_f = _pair(lambda: P.langevin_prior(zs0, netE, noise, s),
                     lambda: H.sample_prior(prior, y0, sched, backend="fused"), repeats)
    return _row("cui_prior (5 x 10)", B, t_e, t_f, "sample_prior(from_module)")


def lebm_posterior(B, repeats):
    torch.manual_seed(2)
    nz, steps, s = 100, 20, 0.1
    netG = P._netG(nz, 64, 3)
    netE = P._netE(nz, 200, 1, "lrelu", e_sn=False).train()
    x = torch.rand(B, 3, 32, 32) * 2 - 1
    z0 = torch.randn(B, nz, 1, 1)
    noise = torch.randn(steps, B, nz)
    prior = H.LatentEBMPrior.from_module(netE, nz, input=(nz, 1, 1))
    G = nn.Sequential(nn.Unflatten(1, (nz, 1, 1)), netG)
    target = H.generator_posterior(G, x, prior, sigma=0.3)
    sched = H.LangevinSchedule.lebm(steps, s)
    t_e, t_f = _pair(lambda: P.sample_langevin_post_z(z0, x, netG, netE, noise, s),
                     lambda: H.langevin(target, z0.view(B, nz), sched), repeats)
    return _row("lebm_posterior (SVHN _netG)", B, t_e, t_f, "langevin(generator_posterior)")


def diffusion(B, repeats):
    torch.manual_seed(3)
    T, K, b2 = 6, 30, 2e-4
    f = P.ConvEnergy(3, 32, T, 16)
    x_T = torch.randn(B, 3, 16, 16)
    noise = torch.randn(T * K, B, 3, 16, 16)
    sched = H.LangevinSchedule.recovery_likelihood(T, K, b2, form="gao")
    tab = H.sampling.diffusion_schedule(T)

    def log_prob(y, t):
        return f(y, torch.full((y.shape[0],), t, dtype=torch.long))

    t_e, t_f = _pair(lambda: P.gao_sample(f, x_T, K, b2, tab, noise),
                     lambda: H.langevin(log_prob, x_T, sched), repeats)
    return _row("diffusion (conv EBM, T 6 x K 30)", B, t_e, t_f, "langevin(recovery_likelihood gao)")


def _sigmas(netE):
    with torch.no_grad():
        return [float(torch.dot(m.weight_u, m.weight_orig @ m.weight_v)) for m in netE.ebm if isinstance(m, nn.Linear)]


def spectral_norm_study(B=100, iters=20):
    """Fused (u, v fixed at the chain's start) vs the papers' loop in train mode (a power iteration per forward),
    after `iters` EBM updates in LEBM's form (en_pos - en_neg; Adam with lr 1e-3, larger than LEBM's so that the
    weights move in a few steps; z+ a shifted Gaussian instead of posterior samples)."""
    torch.manual_seed(4)
    nz, steps, s = 100, 60, 0.4
    netE = P._netE(nz, 200, 1, "lrelu", e_sn=True).train()
    opt = torch.optim.Adam(netE.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for _ in range(iters):  # LEBM's EBM step: en_pos - en_neg, with a chain in train mode before it
        z_neg = P.sample_langevin_prior_z(torch.randn(B, nz, 1, 1), netE, torch.randn(steps, B, nz), s)
        z_pos = torch.randn(B, nz, 1, 1) * 0.7 + 0.3
        loss = netE(z_pos).mean() - netE(z_neg).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    z0 = torch.randn(B, nz, 1, 1)
    noise = torch.randn(steps, B, nz)
    prior = H.LatentEBMPrior.from_module(netE, nz, input=(nz, 1, 1))
    sched = H.LangevinSchedule.lebm(steps, s)
    y = H.sample_prior(prior, z0.view(B, nz), sched, noise=noise, backend="fused")
    netE.eval()
    ref_eval = P.sample_langevin_prior_z(z0, netE, noise, s).view(B, nz)
    netE.train()
    sig0 = _sigmas(netE)
    ref_train = P.sample_langevin_prior_z(z0, netE, noise, s).view(B, nz)
    sig1 = _sigmas(netE)
    move = (ref_train - z0.view(B, nz)).norm(dim=1).mean().item()
    return {
        "B": B, "adam_steps": iters,
        "max_abs_fused_vs_train": (y - ref_train).abs().max().item(),
        "mean_l2_fused_vs_train": (y - ref_train).norm(dim=1).mean().item(),
        "mean_l2_chain_move": move,
        "max_abs_fused_vs_eval_float32": (y - ref_eval).abs().max().item(),
        "sigma_rel_change_over_chain": max(abs(a - b) / abs(a) for a, b in zip(sig0, sig1)),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small batches, 2 repeats (a smoke run)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", default="benchmarks/out")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rep = 2 if a.quick else a.repeats
    big = 100 if a.quick else 1024
    rows = [lebm_prior(100, rep, False), lebm_prior(big, rep, False), lebm_prior(100, rep, True),
            cui_prior(100, rep), lebm_posterior(16 if a.quick else 64, rep), diffusion(8 if a.quick else 16, rep)]
    study = spectral_norm_study()
    cols = [("chain", lambda r: r["chain"]), ("B", lambda r: str(r["B"])),
            ("papers' loop (s)", lambda r: f"{r['eager_s']:.3f}"), ("hebm (s)", lambda r: f"{r['hebm_s']:.3f}"),
            ("speed-up", lambda r: f"{r['speedup']:.1f}x"), ("call", lambda r: f"`{r['call']}`")]
    table = markdown_table(rows, cols)
    env = environment()
    print(table)
    print("spectral norm, fused vs train-mode loop:", {k: (round(v, 6) if isinstance(v, float) else v)
                                                      for k, v in study.items()})
    print(env)
    write_json(os.path.join(a.out, f"drop_in{'_t' + str(a.threads) if a.threads else ''}.json"), {"rows": rows, "spectral_norm": study, "env": env})
    return rows, study


if __name__ == "__main__":
    main()
