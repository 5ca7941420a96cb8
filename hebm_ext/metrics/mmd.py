"""Maximum mean discrepancy between two sample sets (the "prior hole" measure of the methods' tests and docs)."""
from __future__ import annotations

import torch


def median_bandwidth(ref: torch.Tensor) -> float:
    """Median pairwise Euclidean distance within ``ref`` [N, D] (the usual RBF bandwidth heuristic)."""
    ref = ref.detach().double().flatten(1)
    d = torch.cdist(ref, ref)
    return d[~torch.eye(d.shape[0], dtype=torch.bool, device=d.device)].median().item()


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float, scales=(0.25, 0.5, 1.0, 2.0, 4.0)) -> float:
    """Unbiased MMD^2 between samples x [N, D] and y [M, D] with a mixture of RBF kernels
    k(a, b) = sum_s exp(-||a - b||^2 / (2 (s * bandwidth)^2)); float64. ``bandwidth``: fix it from a reference set
    (e.g. ``median_bandwidth``) so that several comparisons against the same reference share one kernel."""
    x = x.detach().double().flatten(1)
    y = y.detach().double().flatten(1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("mmd needs at least 2 samples in x and in y")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * (s * bandwidth) ** 2)) for s in scales)

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return (term_x + term_y - 2 * kxy.mean()).item()
