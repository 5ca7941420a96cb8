"""Model builders shared by the sampler tests, and the pieces shared by the method and CLI tests."""
import json
import math
import os
import subprocess
import sys

import torch

import hebm_ext as H


def sharpen(module: torch.nn.Module, scale: float) -> torch.nn.Module:
    """Scale every weight so that the energy's gradient matters for the chains (default inits are too flat)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("weight") or name.endswith("weight_orig"):
                p.mul_(scale)
    return module


def lebm_prior(activation="lrelu", dtype=torch.float64, scale=2.0, in_dim=100, hidden=200, depth=2):
    head = sharpen(H.EnergyMLP(in_dim, hidden, depth, activation=activation), scale).to(dtype)
    return H.LatentEBMPrior([in_dim], [(head, 0)])


def multi_head_prior(dtype=torch.float64, time_steps=0, sigma=1.0, out_scale=1.0):
    """Three layers [16, 24, 8], five heads: per-layer, "all", a linear one; ``out_scale`` scales the energies
    (recovery-likelihood schedules multiply them by 1/s^2)."""
    dims = [16, 24, 8]
    heads = [
        (sharpen(H.EnergyMLP(16, 32, 2, "lrelu", slope=0.1, time_steps=time_steps), 2.0), 0),
        (sharpen(H.EnergyMLP(24, 20, 1, "gelu", time_steps=time_steps), 2.0), 1),
        (sharpen(H.EnergyMLP(8, 12, 3, "tanh"), 2.0), 2),
        (sharpen(H.EnergyMLP(48, 40, 2, "silu", time_steps=time_steps), 2.0), "all"),
        (sharpen(H.EnergyMLP(24, 1, 0), 1.0), 1),  # a linear energy (no hidden layer)
    ]
    with torch.no_grad():
        for m, _ in heads:
            m.linears[-1].weight.mul_(out_scale)
    return H.LatentEBMPrior(dims, [(m.to(dtype), w) for m, w in heads], sigma=sigma)


def run_both(prior, y0, schedule, **kw):
    S = schedule.max_steps if kw.get("timesteps") is not None else schedule.total_steps
    noise = torch.randn(S, *y0.shape, dtype=y0.dtype)
    ref = H.sample_prior(prior, y0, schedule, noise=noise, backend="reference", **kw)
    fused = H.sample_prior(prior, y0, schedule, noise=noise, backend="fused", **kw)
    return ref, fused, noise


TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def joint_prior(param="z", dtype=torch.float64, scale=2.5):
    """ALGORITHMS.md 3.1: z2 in R^100 (top), z1 in R^128; p(z1|z2) by a 4 x 200 LReLU MLP, sigma_min 0.01,
    sigma_top 1.01; heads f1 128 -> 200 -> 200 -> 200 -> 1 on z1 and f2 100 -> 100 -> 100 -> 1 on z2."""
    ladder = sharpen(H.GaussianLadder([100, 128], 200, 4, "lrelu", sigma_min=0.01, sigma_top=1.01), 1.3)
    f2 = sharpen(H.EnergyMLP(100, 100, 2), scale)
    f1 = sharpen(H.EnergyMLP(128, 200, 3), scale)
    return H.LatentEBMPrior([100, 128], [(f2, 0), (f1, 1)], base=ladder, param=param).to(dtype)


def deep_ladder_prior(param="u", dtype=torch.float64, time_steps=0, soft_clamp=True, out_scale=1.0):
    """A 4-layer hierarchy [6, 10, 12, 8] (top first) with per-layer heads and one over all layers."""
    dims = [6, 10, 12, 8]
    ladder = H.GaussianLadder(dims, 16, 2, "silu", sigma_min=0.05, sigma_top=1.2, soft_clamp=soft_clamp)
    sharpen(ladder, 1.2)
    heads = [(sharpen(H.EnergyMLP(6, 12, 1, "tanh", time_steps=time_steps), 2.0), 0),
             (sharpen(H.EnergyMLP(12, 20, 2, "lrelu", time_steps=time_steps), 2.0), 2),
             (sharpen(H.EnergyMLP(8, 9, 1, "gelu"), 2.0), 3),
             (sharpen(H.EnergyMLP(36, 24, 2, "silu", time_steps=time_steps), 2.0), "all")]
    with torch.no_grad():
        for m, _ in heads:
            m.linears[-1].weight.mul_(out_scale)
    return H.LatentEBMPrior(dims, heads, base=ladder, param=param).to(dtype)


# ---------------------------------------------------------------------------------------------- method tests
def digits_batch(n=16):
    return H.data.Digits(split="train").images[:n]


def params(m):
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def assert_round_trip(m, twin, x):
    """``twin`` loaded with m's state_dict takes the same next train_step as m, to the bit."""
    torch.manual_seed(42)
    a = m.train_step(x)
    torch.manual_seed(42)
    b = twin.train_step(x)
    assert a == b
    for (k, v), (k2, v2) in zip(m.state_dict()["modules"].items(), twin.state_dict()["modules"].items()):
        assert k == k2 and torch.equal(v, v2), k


def hebm(*args, env=None, timeout=300, check=True):
    """Run ``python -m hebm_ext.cli ARGS`` on one thread; AssertionError with its output when it fails (check)."""
    e = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    p = subprocess.run([sys.executable, "-m", "hebm_ext.cli", *args], capture_output=True, text=True, env=e,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"hebm {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def losses(run):
    """The rows of RUN/losses.jsonl."""
    with open(os.path.join(run, "losses.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def moment_problem():
    """A 2-D energy for the statistical tests of a kernel's own noise: (prior (float32), y0 (1024 x 2), its
    schedule (250 steps), the density's first and second moments E[x], E[y], E[x^2], E[y^2] (normalised on a
    grid, float64), the Gaussian base's)."""
    from hebm_ext.toy import grid_probabilities

    torch.manual_seed(0)
    head = sharpen(H.EnergyMLP(2, 8, 1, activation="tanh"), 3.0)
    prior = H.LatentEBMPrior([2], [(head, 0)], sigma=1.5)
    lo, hi, bins = -6.0, 6.0, 120
    p = grid_probabilities(prior.double().log_prob, lo, hi, bins).double()[:-1].reshape(bins, bins)
    c = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    c = 0.5 * (c[1:] + c[:-1])
    gx, gy = torch.meshgrid(c, c, indexing="ij")
    exact = torch.stack([(p * gx).sum(), (p * gy).sum(), (p * gx * gx).sum(), (p * gy * gy).sum()])
    base = torch.tensor([0.0, 0.0, 2.25, 2.25], dtype=torch.float64)
    prior.float()
    y0 = torch.randn(1024, 2) * 1.5
    return prior, y0, H.LangevinSchedule.lebm(steps=250, step_size=0.3, sigma=1.5), exact, base


def assert_moments(y, exact, base, z_max=4.5):
    """The chains' moments within z_max standard errors of `exact`, and `exact` more than 10 standard errors from
    the base's (the energy moves the moments: the test can fail)."""
    y = y.double()
    m = torch.stack([y[:, 0], y[:, 1], y[:, 0] ** 2, y[:, 1] ** 2], dim=1)
    se = m.std(dim=0) / math.sqrt(y.shape[0])
    assert ((exact - base).abs() > 10 * se).any()
    z = ((m.mean(dim=0) - exact) / se).abs()
    assert (z < z_max).all(), (m.mean(dim=0), exact, z)
