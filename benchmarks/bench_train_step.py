"""One LEBM training iteration, end to end, at the SVHN shapes: the papers' loop (bpucla/latent-space-EBM-prior
train_svhn.py in its own style, python_tests/papers_style.py: posterior chain K = 20 through _netG, prior chain
K = 60, then the generator's and the EBM's Adam steps) against `hebm_ext`'s LEBM.train_step (the fused prior
sampler, the generic engine's posterior chain: CUDA-graph replay on a GPU), on random SVHN-shaped images
(B x 3 x 32 x 32 in [-1, 1]; nothing is downloaded). Same networks (nz 100, ngf 64, ndf 200, GELU as train_svhn.py's
default), step sizes, chain lengths and optimizers; medians over repeats after a warm-up, the two timed
alternately, CUDA synchronised around each iteration.

    python benchmarks/bench_train_step.py [--batch 100] [--repeats 5] [--devices cpu cuda] [--out DIR]
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

NZ, NGF, NDF = 100, 64, 200
E_STEPS, E_STEP, G_STEPS, G_STEP, SIGMA = 60, 0.4, 20, 0.1, 0.3
E_LR, G_LR, BETAS = 2e-5, 1e-4, (0.5, 0.999)


def papers_iteration(B, device):
    """train_svhn.py's iteration: both chain starts, the posterior and prior chains, the generator's and the EBM's
    updates (the loop draws its Langevin noise step by step; here the same draws are taken up front)."""
    netG = P._netG(NZ, NGF, 3).to(device)
    netE = P._netE(NZ, NDF, 1, "gelu", e_sn=False).to(device)
    optG = torch.optim.Adam(netG.parameters(), lr=G_LR, betas=BETAS)
    optE = torch.optim.Adam(netE.parameters(), lr=E_LR, betas=BETAS)
    mse = nn.MSELoss(reduction="sum")

    def step(x):
        z_g_0 = torch.randn(B, NZ, 1, 1, device=device)
        z_e_0 = torch.randn(B, NZ, 1, 1, device=device)
        z_g_k = P.sample_langevin_post_z(z_g_0, x, netG, netE, torch.randn(G_STEPS, B, NZ, device=device), G_STEP,
                                         SIGMA)
        z_e_k = P.sample_langevin_prior_z(z_e_0, netE, torch.randn(E_STEPS, B, NZ, device=device), E_STEP)
        optG.zero_grad()
        loss_g = mse(netG(z_g_k), x) / B
        loss_g.backward()
        optG.step()
        optE.zero_grad()
        en_pos = P.energy(netE(z_g_k.detach()), "identity").mean()
        en_neg = P.energy(netE(z_e_k.detach()), "identity").mean()
        loss_e = en_pos - en_neg
        loss_e.backward()
        optE.step()
        return loss_g.item(), loss_e.item()

    return step


def hebm_iteration(B, device):
    m = H.methods.create("lebm", "svhn", batch_size=B, e_activation="gelu", e_lr=E_LR, g_lr=G_LR).to(device)
    return m.train_step


def bench(device, B, repeats):
    torch.manual_seed(0)
    x = (torch.rand(B, 3, 32, 32) * 2 - 1).to(device)
    papers, ours = papers_iteration(B, device), hebm_iteration(B, device)
    # two warm-up rounds: the CUDA-graph capture of the posterior chain, cuBLAS handles
    p, h = alternating_medians([lambda: papers(x), lambda: ours(x)], device, warmup=2, repeats=repeats)
    print(f"{device:5s} B={B:4d}  papers' loop {1e3 * p:9.2f} ms  hebm_ext {1e3 * h:9.2f} ms  {p / h:5.2f}x",
          flush=True)
    return {"device": device, "B": B, "papers_ms": 1e3 * p, "hebm_ms": 1e3 * h, "speedup": p / h,
            "repeats": repeats}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--out", default=os.path.join("benchmarks", "out"))
    a = ap.parse_args(argv)
    if a.batch < 1:
        ap.error(f"--batch must be >= 1, got {a.batch}")
    if a.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {a.repeats}")
    devices = a.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for d in devices:
        if d not in ("cpu", "cuda"):
            ap.error(f"--devices takes cpu and cuda, got {d!r}")
        if d == "cuda" and not torch.cuda.is_available():
            ap.error("--devices: cuda asked for and no CUDA GPU is visible")
    rows = [bench(d, a.batch, a.repeats) for d in devices]
    cols = [("device", lambda r: r["device"]), ("B", lambda r: str(r["B"])),
            ("papers' loop ms", lambda r: f"{r['papers_ms']:.2f}"), ("hebm_ext ms", lambda r: f"{r['hebm_ms']:.2f}"),
            ("speed-up", lambda r: f"{r['speedup']:.2f}x")]
    print("\n### LEBM training iteration (SVHN shapes, random images)\n\n" + markdown_table(rows, cols))
    path = os.path.join(a.out, "train_step.json")
    write_json(path, {"env": environment(), "rows": rows})
    print(f"JSON: {path}")
    return rows


if __name__ == "__main__":
    main()
