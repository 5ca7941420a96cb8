"""Statistical test of the fused sampler with its own (Philox) noise: long chains on a 2-D energy whose density is
normalised on a grid (issue: fused latent sampler, "Done when" 4)."""
import torch

import hebm_ext as H
from helpers import sharpen

LO, HI, BINS = -4.0, 4.0, 12


def grid_bin_probabilities(prior, fine=480):
    """Bin probabilities of p(y) ~ exp(log_prob(y)) on [LO, HI]^2 (and the mass outside), by a fine grid."""
    edges = torch.linspace(LO - 2, HI + 2, fine + 1, dtype=torch.float64)
    c = (edges[:-1] + edges[1:]) / 2
    yy = torch.cartesian_prod(c, c)
    with torch.no_grad():
        lp = prior.log_prob(yy)
    w = torch.exp(lp - lp.max())
    w = w / w.sum()
    return histogram(yy, w)


def histogram(y, weights=None):
    """Probabilities of BINS x BINS cells over [LO, HI]^2 plus one cell for everything outside."""
    idx = torch.floor((y - LO) / (HI - LO) * BINS).long()
    inside = ((idx >= 0) & (idx < BINS)).all(1)
    flat = idx[:, 0].clamp(0, BINS - 1) * BINS + idx[:, 1].clamp(0, BINS - 1)
    flat = torch.where(inside, flat, torch.full_like(flat, BINS * BINS))
    w = weights if weights is not None else torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=torch.float64)
    return torch.zeros(BINS * BINS + 1, dtype=torch.float64).index_add_(0, flat, w.to(torch.float64))


def test_long_chains_match_grid_density():
    """float32, the kernels' own Philox noise (float64 exactness is covered against the reference)."""
    dtype = torch.float32
    torch.manual_seed(0)
    head = sharpen(H.EnergyMLP(2, 32, 2, activation="tanh"), 3.0).to(dtype)
    prior = H.LatentEBMPrior([2], [(head, 0)], sigma=1.5)
    p_grid = grid_bin_probabilities(prior.double())
    prior.to(dtype)
    # the energy shapes the density: far from the Gaussian base alone (so the test below can fail)
    p_base = grid_bin_probabilities(H.LatentEBMPrior([2], [], sigma=1.5))
    assert 0.5 * (p_grid - p_base).abs().sum() > 0.15

    schedule = H.LangevinSchedule.lebm(steps=1500, step_size=0.12, sigma=1.5)
    y0 = torch.randn(20000, 2, dtype=dtype) * 1.5
    y = H.sample_prior(prior, y0, schedule, backend="fused", seed=2024)
    tv = 0.5 * (histogram(y.double()) - p_grid).abs().sum().item()
    assert tv < 0.05, f"total variation {tv:.4f}"
