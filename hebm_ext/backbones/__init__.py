"""Backbones: what an EBM stage needs from a hierarchical generator (ARCHITECTURE.md, "Backbones").

The papers' strongest results put the EBM prior on a frozen, pretrained hierarchical VAE (NVAE) whose latents are
groups z_l, top first. An EBM stage (diffusion-ebm, joint-ebm scheme="two-stage") needs from it exactly this, the
**backbone protocol**:

    group_shapes      list of per-group shapes, TOP first: (d,) for a flat layer, (c, h, w) for a spatial one
    encode(x)   -> z  a posterior sample z ~ q(z | x): a list of group tensors [B, *shape_l]
    z_from_u(u) -> z  the top-down reparameterisation T_beta: z_l = mu_l(z_<l) + sigma_l(z_<l) * u_l
                      (lists of group tensors; u ~ N(0, I) gives z ~ p_beta(z))
    u_from_z(z) -> u  its inverse along the same tower: u_l = (z_l - mu_l(z_<l)) / sigma_l(z_<l)
    log_prob(z) -> [B]   log p_beta(z) = sum_l log N(z_l; mu_l, sigma_l) (joint-ebm two-stage, ld_base="z")
    decode(z)   -> x  images [B, C, H, W] in [-1, 1]
    image_shape       (C, H, W) of decode's output

and, optional, for a backbone that the library trains itself as stage 1:

    elbo(x)     -> (loss, stats)   the negative ELBO (a scalar to minimise) and a dict of floats

A backbone is an ``nn.Module`` (so that ``.to()``, freezing and the method's state_dict reach its parameters).
The library's own backbones:

    MLPLadderBackbone   the flat MLP ladder generator of the methods (hebm_ext.methods.hvae), groups (d,)
    SpatialHVAE         an NVAE-shaped spatial hierarchical VAE (our code), groups (c, h, w)

A pretrained model of your own (an NVAE checkpoint with its own code) plugs in through a small adapter class that
implements the protocol by calling the model (the README shows one); ``check_backbone`` validates it. Chains
through a backbone run on the generic engine (hebm_ext.langevin) over the flat concatenation of the groups, which
``GroupLayout`` converts to and from the list of group tensors.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .mlp import MLPLadderBackbone
from .spatial import SpatialHVAE

__all__ = ["GroupLayout", "MLPLadderBackbone", "PROTOCOL", "SpatialHVAE", "check_backbone"]

PROTOCOL = ("group_shapes", "image_shape", "encode", "z_from_u", "u_from_z", "log_prob", "decode")


class GroupLayout:
    """The flat layout of latent groups: group l occupies y[:, offsets[l] : offsets[l] + sizes[l]] of y [B, D].

    split(y [B, D]) -> list of [B, *shape_l];  cat(list) -> y [B, D] (groups flattened, concatenated top first).
    """

    def __init__(self, shapes):
        self.shapes = [tuple(int(v) for v in s) for s in shapes]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.D = sum(self.sizes)

    def split(self, y: torch.Tensor) -> list:
        if not torch.is_tensor(y) or y.dim() != 2 or y.shape[1] != self.D:
            got = list(y.shape) if torch.is_tensor(y) else type(y).__name__
            raise ValueError(f"y must be [B, {self.D}] (the groups {self.shapes} flattened, top first), got {got}")
        return [y[:, o:o + n].reshape(y.shape[0], *s) for o, n, s in zip(self.offsets, self.sizes, self.shapes)]

    def cat(self, groups) -> torch.Tensor:
        self.check(groups, "groups")
        return torch.cat([g.reshape(g.shape[0], -1) for g in groups], dim=1)

    def check(self, groups, name: str) -> None:
        if not isinstance(groups, (list, tuple)) or len(groups) != len(self.shapes):
            got = f"{len(groups)} entries" if isinstance(groups, (list, tuple)) else type(groups).__name__
            raise ValueError(f"{name} must be a list of {len(self.shapes)} group tensors {self.shapes}, got {got}")
        for i, (g, s) in enumerate(zip(groups, self.shapes)):
            if not torch.is_tensor(g) or tuple(g.shape[1:]) != s:
                got = list(g.shape) if torch.is_tensor(g) else type(g).__name__
                raise ValueError(f"{name}[{i}] must be [B, {', '.join(map(str, s))}], got {got}")


def check_backbone(backbone, name: str = "backbone") -> list:
    """Validate an object against the backbone protocol; returns its group shapes (tuples, top first)."""
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"{name} must be an nn.Module implementing the backbone protocol {PROTOCOL} "
                        f"(see hebm_ext.backbones), got {type(backbone).__name__}")
    missing = [a for a in PROTOCOL if not hasattr(backbone, a)]
    if missing:
        raise TypeError(f"{name} ({type(backbone).__name__}) lacks {missing} of the backbone protocol {PROTOCOL} "
                        "(see hebm_ext.backbones)")
    not_callable = [a for a in PROTOCOL[2:] if not callable(getattr(backbone, a))]
    if not_callable:
        raise TypeError(f"{name}.{not_callable[0]} must be a method (backbone protocol {PROTOCOL})")
    try:
        shapes = [tuple(int(v) for v in s) for s in backbone.group_shapes]
    except TypeError as e:
        raise TypeError(f"{name}.group_shapes must be a list of group shapes, got {backbone.group_shapes!r}") from e
    if not shapes or any(len(s) not in (1, 3) or min(s) < 1 for s in shapes):
        raise ValueError(f"{name}.group_shapes must be a non-empty list of (d,) or (c, h, w) shapes, got {shapes}")
    if len(tuple(backbone.image_shape)) != 3:
        raise ValueError(f"{name}.image_shape must be (C, H, W), got {backbone.image_shape!r}")
    return shapes
