"""Statistical test of the fused sampler with its own (Philox) noise: long chains on a 2-D energy whose density is
normalised on a grid (issue: fused latent sampler, "Done when" 4)."""
import torch

import hebm_ext as H
from hebm_ext.toy import grid_probabilities, histogram2d
from helpers import sharpen

LO, HI, BINS = -4.0, 4.0, 12


def grid_bin_probabilities(prior):
    return grid_probabilities(prior.log_prob, LO, HI, BINS)


def histogram(y):
    return histogram2d(y, LO, HI, BINS)


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
