"""The multi-layer generator shared by the joint latent EBM prior (ALGORITHMS.md 3.1) and the hierarchical EBM
diffusion prior (section 6): a top-down GaussianLadder over [z_top, ..., z_bottom], a conv decoder from the bottom
layer, and (for the variational scheme and the diffusion prior's first stage) a ladder encoder q(z | x)."""
from __future__ import annotations

import torch
from torch import nn

from .. import nn as hnn
from .base import gaussian_nll, reparameterize


class BottomDecoder(nn.Module):
    """g(z) for the concatenated latent z [B, D]: the conv decoder reads the bottom layer (the last one)."""

    def __init__(self, decoder: nn.Module, offset: int):
        super().__init__()
        self.decoder = decoder
        self.offset = offset

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z[:, self.offset:])


class MultiLayerGenerator(nn.Module):
    """p_beta(z) = GaussianLadder(dims), p(x | z) = N(g(z_bottom), sigma^2 I), optional q(z | x) = prod_l
    N(mu_l(x), diag exp(logvar_l(x))) from a LadderEncoder (layers top first throughout)."""

    def __init__(self, dataset, dims, ngf, ladder_hidden, ladder_depth, ladder_activation="lrelu", sigma_min=0.01,
                 sigma_top=1.0, soft_clamp=False, encoder=False, nif=None):
        super().__init__()
        dims = [int(d) for d in dims]
        self.dims = dims
        self.ladder = hnn.GaussianLadder(dims, ladder_hidden, ladder_depth, ladder_activation, sigma_min=sigma_min,
                                         sigma_top=sigma_top, soft_clamp=soft_clamp)
        self.g = BottomDecoder(hnn.decoder(dataset, dims[-1], ngf=ngf), sum(dims[:-1]))
        self.image_shape = self.g.decoder.image_shape
        self.encoder = hnn.LadderEncoder(dataset, dims, nif=nif) if encoder else None

    def encode(self, x: torch.Tensor):
        """(z ~ q(z | x) reparameterised [B, D], log q(z | x) [B])."""
        params = self.encoder(x)
        zs = [reparameterize(mu, logvar) for mu, logvar in params]
        log_q = -sum(gaussian_nll(z, mu, logvar) for z, (mu, logvar) in zip(zs, params))
        return torch.cat(zs, dim=1), log_q

    def recon_error(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """sum over pixels of (g(z) - x)^2, [B]."""
        return ((self.g(z) - x) ** 2).flatten(1).sum(1)
