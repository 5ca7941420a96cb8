"""The MLP ladder generator of the methods (hebm_ext.methods.hvae.MultiLayerGenerator) as a backbone: flat groups
(d_l,), the top-down GaussianLadder as T_beta, the conv decoder of the bottom layer, the ladder encoder q(z | x).
(The flat diffusion-ebm and joint-ebm paths keep the generator itself: their chains run on the fused kernels.)"""
from __future__ import annotations

import torch
from torch import nn


class MLPLadderBackbone(nn.Module):
    """Backbone protocol (hebm_ext.backbones) over a MultiLayerGenerator ``gen`` (built with encoder=True for
    ``encode`` and ``elbo``). group_shapes = [(d_top,), ..., (d_bottom,)]; lists of [B, d_l] tensors throughout.

    elbo(x) = (1/(2 sigma^2)) sum (g(z_1) - x)^2 + log q(z | x) - log p_beta(z), z ~ q(z | x), batch mean.
    """

    def __init__(self, gen, g_llhd_sigma: float = 0.3):
        super().__init__()
        self.gen = gen
        self.g_llhd_sigma = float(g_llhd_sigma)
        self.group_shapes = [(d,) for d in gen.dims]
        self.image_shape = tuple(gen.image_shape)

    def _split(self, y):
        return self.gen.ladder.split(y)

    def encode(self, x):
        return self._split(self.gen.encode(x)[0])

    def z_from_u(self, u):
        return self._split(self.gen.ladder.z_from_u(torch.cat(list(u), 1)))

    def u_from_z(self, z):
        return self._split(self.gen.ladder.u_from_z(torch.cat(list(z), 1)))

    def log_prob(self, z):
        return self.gen.ladder.log_prob(torch.cat(list(z), 1))

    def decode(self, z):
        return self.gen.g(torch.cat(list(z), 1))

    def elbo(self, x):
        z, log_q = self.gen.encode(x)
        rec = self.gen.recon_error(x, z)
        kl = log_q - self.gen.ladder.log_prob(z)
        loss = rec.mean() / (2 * self.g_llhd_sigma ** 2) + kl.mean()
        return loss, {"kl": kl.mean().item(), "mse": rec.mean().item() / x[0].numel()}
