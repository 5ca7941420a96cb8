"""GaussianLadder: the top-down Gaussian hierarchy of a multi-layer generator's latent prior (ALGORITHMS.md 3.1, 6.1).

    p(z) = N(z_top; 0, sigma_top^2 I) * prod_{l >= 1} N(z_l; mu_l(z_{l-1}), diag sigma_l(z_{l-1})^2)

with layers ordered TOP FIRST (layer 0 is the top, layer l's parent is layer l-1), (mu_l, ell_l) = MLP_l(z_{l-1}),
sigma_l = exp(ell_l) + sigma_min, and optionally NVAE's soft clamp 5 tanh(x / 5) on mu and ell. Latents are
concatenated in that order into one vector [B, D].

The whitened ("uni-scale") variable u: z_top = sigma_top * u_top, z_l = mu_l(z_{l-1}) + sigma_l(z_{l-1}) * u_l,
so u ~ N(0, I) is the same distribution (the space of the hierarchical EBM diffusion prior, section 6).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .energy import MLP, _check_int

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def soft_clamp(x: torch.Tensor) -> torch.Tensor:
    """NVAE's soft clamp 5 tanh(x / 5) (ALGORITHMS.md 6.1)."""
    return 5.0 * torch.tanh(x / 5.0)


class GaussianLadder(nn.Module):
    """Top-down Gaussian ladder. dims: latent layer sizes, TOP layer first; hidden, depth, activation: the MLPs
    mu_l, ell_l = MLP_l(z_{l-1}) (``depth`` hidden layers of width ``hidden``); sigma_min, sigma_top, soft_clamp as
    in the module docstring. Section 3.1's CIFAR-10 prior: GaussianLadder([100, 128], 200, 4, "lrelu",
    sigma_min=0.01, sigma_top=1.01).

    sample(n) -> z [n, D]; log_prob(z) -> [B]; z_from_u(u), u_from_z(z): [B, D] <-> [B, D]; conditional(l, z) ->
    (mu_l, sigma_l) given the concatenated z (only its parent slice is read).
    """

    def __init__(self, dims, hidden: int, depth: int, activation: str = "lrelu", sigma_min: float = 0.01,
                 sigma_top: float = 1.0, soft_clamp: bool = False, slope: float = 0.2):
        super().__init__()
        try:
            dims = [int(d) for d in dims]
        except TypeError as e:
            raise TypeError(f"dims must be a list of layer sizes (top first), got {dims!r}") from e
        if len(dims) < 1 or any(d <= 0 for d in dims):
            raise ValueError(f"dims must be a non-empty list of positive layer sizes (top first), got {dims}")
        _check_int("hidden", hidden, 1)
        _check_int("depth", depth, 0)
        if not (sigma_min >= 0 and math.isfinite(sigma_min)):
            raise ValueError(f"sigma_min must be a finite number >= 0, got {sigma_min}")
        if not (sigma_top > 0 and math.isfinite(sigma_top)):
            raise ValueError(f"sigma_top must be positive and finite, got {sigma_top}")
        self.dims = dims
        self.offsets = [sum(dims[:i]) for i in range(len(dims))]
        self.D = sum(dims)
        self.sigma_min, self.sigma_top = float(sigma_min), float(sigma_top)
        self.soft_clamp = bool(soft_clamp)
        self.activation = activation
        self.nets = nn.ModuleList(MLP(dims[l - 1], 2 * dims[l], hidden, depth, activation, slope)
                                  for l in range(1, len(dims)))

    def layer(self, z: torch.Tensor, l: int) -> torch.Tensor:
        return z[:, self.offsets[l]:self.offsets[l] + self.dims[l]]

    def split(self, z: torch.Tensor) -> list:
        """[B, D] -> list of layers [B, d_l], top first."""
        return [self.layer(z, l) for l in range(len(self.dims))]

    def _check(self, z: torch.Tensor, name: str):
        if not torch.is_tensor(z) or z.dim() != 2 or z.shape[1] != self.D:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"{name} must be [B, {self.D}] (layers {self.dims}, top first), got {shape}")

    def conditional(self, l: int, z: torch.Tensor):
        """(mu_l, sigma_l) of layer l >= 1 given its parent layer l-1 in the concatenated z."""
        if not 1 <= l < len(self.dims):
            raise ValueError(f"l must be a layer index in [1, {len(self.dims)}) (layer 0 is the top), got {l}")
        mu, ell = self.nets[l - 1](self.layer(z, l - 1)).chunk(2, dim=1)
        if self.soft_clamp:
            mu, ell = soft_clamp(mu), soft_clamp(ell)
        return mu, torch.exp(ell) + self.sigma_min

    def log_prob(self, z: torch.Tensor, top: bool = True) -> torch.Tensor:
        """log p(z) [B], normalised (every Gaussian's constant included); ``top=False`` leaves out the top layer's
        N(0, sigma_top^2) (the parameter-free term: sum_l log p(z_l | z_{l-1}) alone)."""
        self._check(z, "z")
        lp = z.new_zeros(z.shape[0])
        if top:
            zt = self.layer(z, 0)
            lp = lp + (-0.5 * (zt / self.sigma_top) ** 2 - math.log(self.sigma_top) - _LOG_SQRT_2PI).sum(1)
        for l in range(1, len(self.dims)):
            mu, sigma = self.conditional(l, z)
            eps = (self.layer(z, l) - mu) / sigma
            lp = lp + (-0.5 * eps * eps - torch.log(sigma) - _LOG_SQRT_2PI).sum(1)
        return lp

    def z_from_u(self, u: torch.Tensor) -> torch.Tensor:
        """The top-down map T: z_top = sigma_top u_top, z_l = mu_l(z_{l-1}) + sigma_l(z_{l-1}) u_l."""
        self._check(u, "u")
        layers = [self.sigma_top * self.layer(u, 0)]
        for l in range(1, len(self.dims)):
            mu, ell = self.nets[l - 1](layers[-1]).chunk(2, dim=1)
            if self.soft_clamp:
                mu, ell = soft_clamp(mu), soft_clamp(ell)
            layers.append(mu + (torch.exp(ell) + self.sigma_min) * self.layer(u, l))
        return torch.cat(layers, dim=1)

    def u_from_z(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse map: u_top = z_top / sigma_top, u_l = (z_l - mu_l(z_{l-1})) / sigma_l(z_{l-1})."""
        self._check(z, "z")
        out = [self.layer(z, 0) / self.sigma_top]
        for l in range(1, len(self.dims)):
            mu, sigma = self.conditional(l, z)
            out.append((self.layer(z, l) - mu) / sigma)
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def sample(self, n: int, generator=None) -> torch.Tensor:
        """n ancestral samples z [n, D]."""
        _check_int("n", n, 1)
        ref = self.nets[0].linears[0].weight if len(self.nets) else None
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        device = ref.device if ref is not None else None
        u = torch.randn(n, self.D, generator=generator, dtype=dtype, device=device)
        return self.z_from_u(u)

    def extra_repr(self) -> str:
        return (f"dims={self.dims}, sigma_min={self.sigma_min}, sigma_top={self.sigma_top}, "
                f"soft_clamp={self.soft_clamp}")
