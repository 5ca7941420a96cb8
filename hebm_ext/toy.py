"""Two-dimensional toy densities: grid normalisation, histograms and total variation (the statistical tests of the
samplers and `hebm demo` use these)."""
from __future__ import annotations

import torch


def bin_index(y: torch.Tensor, lo: float, hi: float, bins: int) -> torch.Tensor:
    """Flat cell index of each 2-D point in a bins x bins grid over [lo, hi]^2; points outside -> bins*bins."""
    idx = torch.floor((y - lo) / (hi - lo) * bins).long()
    inside = ((idx >= 0) & (idx < bins)).all(1)
    flat = idx[:, 0].clamp(0, bins - 1) * bins + idx[:, 1].clamp(0, bins - 1)
    return torch.where(inside, flat, torch.full_like(flat, bins * bins))


def histogram2d(y: torch.Tensor, lo: float, hi: float, bins: int, weights=None) -> torch.Tensor:
    """Probabilities [bins*bins + 1] (the last cell: the mass outside the square) of points y [N, 2]."""
    y = y.detach().to("cpu", torch.float64)
    w = weights if weights is not None else torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=torch.float64)
    return torch.zeros(bins * bins + 1, dtype=torch.float64).index_add_(0, bin_index(y, lo, hi, bins), w.double())


def grid_probabilities(log_prob, lo: float, hi: float, bins: int, fine: int = 480, margin: float = 2.0):
    """Cell probabilities of p ~ exp(log_prob) on a bins x bins grid over [lo, hi]^2 (plus the outside mass),
    normalised by a fine grid over [lo - margin, hi + margin]^2. log_prob maps [N, 2] float64 -> [N]."""
    edges = torch.linspace(lo - margin, hi + margin, fine + 1, dtype=torch.float64)
    c = (edges[:-1] + edges[1:]) / 2
    yy = torch.cartesian_prod(c, c)
    with torch.no_grad():
        lp = log_prob(yy)
    w = torch.exp(lp - lp.max())
    return histogram2d(yy, lo, hi, bins, w / w.sum())


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * (p - q).abs().sum().item()
