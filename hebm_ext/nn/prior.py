"""LatentEBMPrior: the latent program that the samplers run (ARCHITECTURE.md, "The two sampler tiers").

    log p~_t(y) = -alpha_t * sum_h E_h(z[slice_h], t) + log p_base(y)

y is the concatenation of the latent layers (in the order of ``dims``); alpha_t comes from the schedule.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LatentEBMPrior(nn.Module):
    """Energy heads over latent layers and a Gaussian base.

    dims: sizes of the latent layers, concatenated in this order into y [B, D], D = sum(dims).
    heads: list of ``(module, which)``; ``which`` is a layer index (the head sees that layer's slice) or "all"
        (the whole concatenation). A module maps [B, in] (and t) to energies [B]; the fused kernels take
        hebm_ext.EnergyMLP heads, any other module runs on the reference sampler.
    sigma: std of the Gaussian base N(0, sigma^2 I); ``math.inf`` means no base term (a flat base, as in Gao et
        al.'s recovery-likelihood form).

    energy(y, t=None) -> [B]: sum_h E_h.  base_log_prob(y) -> [B].  log_prob(y, t=None) -> [B] (unnormalised,
    alpha = 1).
    """

    def __init__(self, dims, heads, sigma: float = 1.0):
        super().__init__()
        try:
            dims = [int(d) for d in dims]
        except TypeError as e:
            raise TypeError(f"dims must be a list of layer sizes, got {dims!r}") from e
        if not dims or any(d <= 0 for d in dims):
            raise ValueError(f"dims must be a non-empty list of positive layer sizes, got {dims}")
        sigma = float(sigma)
        if not (sigma > 0):
            raise ValueError(f"sigma must be positive (or math.inf for no base), got {sigma}")
        self.dims = dims
        self.sigma = sigma
        self.offsets = [sum(dims[:i]) for i in range(len(dims))]
        self.D = sum(dims)
        mods, which = [], []
        for i, item in enumerate(heads):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise TypeError(f"heads[{i}] must be a pair (module, which), got {item!r}")
            mod, w = item
            if not isinstance(mod, nn.Module):
                raise TypeError(f"heads[{i}][0] must be an nn.Module (e.g. hebm_ext.EnergyMLP), got {type(mod).__name__}")
            if w != "all" and (isinstance(w, bool) or not isinstance(w, int) or not 0 <= w < len(dims)):
                raise ValueError(f"heads[{i}][1] must be a layer index in [0, {len(dims)}) or 'all', got {w!r}")
            in_dim = self.D if w == "all" else dims[w]
            expect = getattr(mod, "in_dim", None)
            if expect is not None and expect != in_dim:
                raise ValueError(f"heads[{i}] takes {expect} inputs but its slice ({w!r}) has {in_dim} dims")
            mods.append(mod)
            which.append(w)
        self.heads = nn.ModuleList(mods)
        self.which = which

    def head_slice(self, i: int) -> tuple[int, int]:
        """(offset, size) of head i's input in z."""
        w = self.which[i]
        return (0, self.D) if w == "all" else (self.offsets[w], self.dims[w])

    def check_y(self, y: torch.Tensor, name: str = "y") -> None:
        if not torch.is_tensor(y) or y.dim() != 2 or y.shape[1] != self.D:
            shape = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
            raise ValueError(f"{name} must be [B, {self.D}] (latent dims {self.dims}), got {shape}")

    def energy(self, y: torch.Tensor, t=None) -> torch.Tensor:
        self.check_y(y)
        e = y.new_zeros(y.shape[0])
        for i, head in enumerate(self.heads):
            off, n = self.head_slice(i)
            e = e + (head(y[:, off:off + n], t) if _takes_time(head) else head(y[:, off:off + n]))
        return e

    def base_log_prob(self, y: torch.Tensor) -> torch.Tensor:
        self.check_y(y)
        if math.isinf(self.sigma):
            return y.new_zeros(y.shape[0])
        return -(y * y).sum(1) / (2 * self.sigma ** 2)

    def log_prob(self, y: torch.Tensor, t=None) -> torch.Tensor:
        return -self.energy(y, t) + self.base_log_prob(y)

    def extra_repr(self) -> str:
        return f"dims={self.dims}, which={self.which}, sigma={self.sigma}"


def _takes_time(head: nn.Module) -> bool:
    return getattr(head, "time_steps", 0) > 0
