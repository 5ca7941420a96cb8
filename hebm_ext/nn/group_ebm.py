"""Per-group EBMs on spatial latent groups z_l [B, c, h, w] (one network per group of a hierarchical backbone):

    Cifar10GroupEBM     the time-conditioned SN conv EBM of the hierarchical EBM diffusion prior on CIFAR-10
                        (ALGORITHMS.md 6.4, jcui1224/diffusion-hierarchical-ebm ebm_net.py ``_CIFAR10_netE``)
    CelebA256GroupEBM   its CelebA-HQ-256 network (6.5, ``_CelebA256_netE``)
    TwoStageGroupEBM    the joint EBM's two-stage per-group EBM (3.2, jcui1224/hierarchical-joint-ebm
                        two-stage-training/ebms_utils.py ``_netEzi``), not time-conditioned

Our code, written from the papers' networks: the submodule names and the spectral norm (torch.nn.utils.spectral_norm,
the hook form the official code uses: ``weight_orig`` / ``weight_u`` / ``weight_v``) follow the official modules, so
the state_dict of an official network loads into ours. Every forward returns ENERGIES E [B]: the official networks
output f = -E (their Langevin adds +grad f), so E = -f here, as for every head of this library.

Spatial sizes: the official tables of conv layers ({8: 2, 16: 3, 32: 4, 64: 5, 128: 6} for 6.4,
{8: 1, 16: 2, ...} for 6.5 and 3.2) are log2(h) - 1 and log2(h) - 2; we use the formulas, so 6.4 also takes
4 x 4 groups (one conv layer, the digits presets). Groups must be square with a power-of-two side.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from .energy import _check_int, sinusoidal_embedding

__all__ = ["PositionalEmbedding", "Cifar10GroupEBM", "CelebA256GroupEBM", "TwoStageGroupEBM", "GROUP_EBMS",
           "group_ebm"]


def _sn(module: nn.Module, on: bool = True) -> nn.Module:
    return nn.utils.spectral_norm(module) if on else module


def _check_shape(z_shape, min_side: int, name: str):
    try:
        c, h, w = (int(v) for v in z_shape)
    except (TypeError, ValueError) as e:
        raise ValueError(f"z_shape must be a group shape (c, h, w), got {z_shape!r}") from e
    if c < 1 or h != w or h < min_side or h & (h - 1):
        raise ValueError(f"{name} needs a square group with a power-of-two side >= {min_side}, got z_shape "
                         f"{(c, h, w)}")
    return c, h, w


def _t_tensor(t, z: torch.Tensor) -> torch.Tensor:
    """t as a long tensor [B] (an int or a [B] tensor of timesteps)."""
    B = z.shape[0]
    if t is None:
        raise ValueError("t must be given (an int or a [B] tensor of timesteps) for a time-conditioned group EBM")
    if not torch.is_tensor(t):
        return torch.full((B,), int(t), dtype=torch.long, device=z.device)
    if t.dim() == 0:
        return t.to(z.device).long().expand(B)
    if tuple(t.shape) != (B,):
        raise ValueError(f"t must be an int or a tensor [B] = [{B}], got shape {list(t.shape)}")
    return t.to(z.device)


class PositionalEmbedding(nn.Module):
    """[cos(t f_j), sin(t f_j)], f_j = exp(-ln(max_period) j / (dim/2)), t the raw integer timestep (6.4);
    computed in float64 and cast to the module's dtype. forward(t [B]) -> [B, dim]."""

    def __init__(self, dim: int = 128, max_period: float = 1e4):
        super().__init__()
        self.dim, self.max_period = _check_int("dim", dim, 2), float(max_period)

    def forward(self, t: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        return sinusoidal_embedding(t, self.dim, self.max_period).to(dtype)


def _silu_lin(i: int, o: int, sn: bool = True) -> nn.Sequential:
    return nn.Sequential(nn.SiLU(), _sn(nn.Linear(i, o, bias=False), sn))


def _silu_conv(i: int, o: int, k: int, s: int, p: int, sn: bool = True) -> nn.Sequential:
    return nn.Sequential(nn.SiLU(), _sn(nn.Conv2d(i, o, k, s, p, bias=False), sn))


class _ConvBlock(nn.Module):
    """6.4's ``conv_block``: h = conv3(SiLU(conv4s2(SiLU f)) + lin(SiLU t_h)); out = conv4s2(SiLU f) + h."""

    def __init__(self, ch: int, temb: int):
        super().__init__()
        self.ch = ch
        self.conv2d_1 = _silu_conv(ch, ch, 4, 2, 1)
        self.conv2d_2 = _silu_conv(ch, ch, 3, 1, 1)
        self.conv2d_shortcut = _silu_conv(ch, ch, 4, 2, 1)
        self.linear = _silu_lin(temb, ch)

    def forward(self, f, t_h):
        h = self.conv2d_1(f) + self.linear(t_h).view(-1, self.ch, 1, 1)
        return self.conv2d_shortcut(f) + self.conv2d_2(h)


class Cifar10GroupEBM(nn.Module):
    """Time-conditioned per-group EBM of ALGORITHMS.md 6.4 (CIFAR-10), every Linear / Conv bias-free and spectrally
    normalised, SiLU:

        temb = PositionalEmbedding(128)(t);  t_in = L(c)(SiLU(L(c)(temb)));  t_h = L(128)(SiLU(L(128)(temb)))
        inp = z + t_in[:, :, None, None]
        f = SiLU-conv3( conv4s2(inp) + SiLU-L(ch)(t_h) ) + conv4s2(inp)                 # h -> h/2
        (log2(h) - 2) x conv_block(f, t_h)                                              # -> 2 x 2
        f = flatten [B, 4 ch];  two residual Linear stages 4ch -> 2ch -> ch with time inputs;  f = SiLU-L(1)(f)
        E = -f

    z_shape: (c, h, w) of the group; ch: width (the paper: 128; for (20, 16, 16) the network has 2,116,624
    parameters). forward(z [B, c, h, w], t: int or [B]) -> E [B].
    """

    def __init__(self, z_shape, ch: int = 128, temb: int = 128):
        super().__init__()
        c, h, _ = _check_shape(z_shape, 4, "Cifar10GroupEBM")
        self.z_shape = (c, h, h)
        self.ch = ch = _check_int("ch", ch, 1)
        self.time_steps = 1  # marks a time-conditioned head (forward takes t)
        hidden = ch * 2 * 2
        self.t_ebm = PositionalEmbedding(temb)
        self.t_ebm_model1 = nn.Sequential(_sn(nn.Linear(temb, c, bias=False)), nn.SiLU(),
                                          _sn(nn.Linear(c, c, bias=False)))
        self.t_ebm_model2 = nn.Sequential(_sn(nn.Linear(temb, 128, bias=False)), nn.SiLU(),
                                          _sn(nn.Linear(128, 128, bias=False)))
        self.conv_start = _sn(nn.Conv2d(c, ch, 4, 2, 1, bias=False))
        self.t_linear = _silu_lin(128, ch)
        self.conv_all = _silu_conv(ch, ch, 3, 1, 1)
        self.conv_short = _sn(nn.Conv2d(c, ch, 4, 2, 1, bias=False))
        self.res_blocks = nn.ModuleList(_ConvBlock(ch, 128) for _ in range(int(math.log2(h)) - 2))
        self.linear1_x, self.linear1_t = _silu_lin(hidden, hidden // 2), _silu_lin(128, hidden // 2)
        self.linear1_all, self.linear1_short = _silu_lin(hidden // 2, hidden // 2), _silu_lin(hidden, hidden // 2)
        self.linear2_x, self.linear2_t = _silu_lin(hidden // 2, hidden // 4), _silu_lin(128, hidden // 4)
        self.linear2_all, self.linear2_short = (_silu_lin(hidden // 4, hidden // 4),
                                                _silu_lin(hidden // 2, hidden // 4))
        self.out = _silu_lin(hidden // 4, 1)

    def forward(self, z: torch.Tensor, t) -> torch.Tensor:
        if z.dim() != 4 or tuple(z.shape[1:]) != self.z_shape:
            raise ValueError(f"z must be [B, {', '.join(map(str, self.z_shape))}], got {list(z.shape)}")
        B = z.shape[0]
        temb = self.t_ebm(_t_tensor(t, z), z.dtype)
        t_in, t_h = self.t_ebm_model1(temb), self.t_ebm_model2(temb)
        inp = z + t_in.view(B, -1, 1, 1)
        f = self.conv_start(inp) + self.t_linear(t_h).view(B, self.ch, 1, 1)
        f = self.conv_all(f) + self.conv_short(inp)
        for block in self.res_blocks:
            f = block(f, t_h)
        f = f.reshape(B, -1)
        x = self.linear1_x(f) + self.linear1_t(t_h)
        f = self.linear1_all(x) + self.linear1_short(f)
        x = self.linear2_x(f) + self.linear2_t(t_h)
        f = self.linear2_all(x) + self.linear2_short(f)
        return -self.out(f).squeeze(1)


class CelebA256GroupEBM(nn.Module):
    """Time-conditioned per-group EBM of ALGORITHMS.md 6.5 (CelebA-HQ-256), SiLU, bias-free, spectral norm when
    ``spectral_norm`` (the official ``add_sn``; its value is not in the public config):

        t_ = L(128)(SiLU(L(128)(PositionalEmbedding(128)(t))))          (the input is NOT time-shifted)
        f = (log2(h) - 3) x [conv4s2(-> ch), SiLU];  f = conv4s2(f)      # -> 4 x 4
        f = flatten [B, 16 ch];  residual Linear stages 16ch -> 8ch -> 4ch with time inputs;  E = -SiLU-L(1)(f)

    forward(z [B, c, h, w], t) -> E [B].
    """

    def __init__(self, z_shape, ch: int = 64, temb: int = 128, spectral_norm: bool = True):
        super().__init__()
        c, h, _ = _check_shape(z_shape, 8, "CelebA256GroupEBM")
        self.z_shape = (c, h, h)
        self.ch = ch = _check_int("ch", ch, 1)
        self.time_steps = 1
        sn = bool(spectral_norm)
        self.t_ebm = PositionalEmbedding(temb)
        self.t_ebm_model1 = nn.Sequential(_sn(nn.Linear(temb, 128, bias=False), sn), nn.SiLU(),
                                          _sn(nn.Linear(128, 128, bias=False), sn))
        layers, cur = OrderedDict(), c
        for i in range(int(math.log2(h)) - 3):
            layers[f"conv{i + 1}"] = _sn(nn.Conv2d(cur, ch, 4, 2, 1, bias=False), sn)
            layers[f"lrelu{i + 1}"] = nn.SiLU()  # the official name; the activation is SiLU
            cur = ch
        self.conv2d = nn.Sequential(layers)
        self.downsample = _sn(nn.Conv2d(cur, ch, 4, 2, 1, bias=False), sn)
        a, b, d = ch * 16, ch * 8, ch * 4
        self.linear1_x, self.linear1_t = _silu_lin(a, b, sn), _silu_lin(128, b, sn)
        self.linear1_all, self.linear1_short = _silu_lin(b, b, sn), _silu_lin(a, b, sn)
        self.linear2_x, self.linear2_t = _silu_lin(b, d, sn), _silu_lin(128, d, sn)
        self.linear2_all, self.linear2_short = _silu_lin(d, d, sn), _silu_lin(b, d, sn)
        self.out = _silu_lin(d, 1, sn)

    def forward(self, z: torch.Tensor, t) -> torch.Tensor:
        if z.dim() != 4 or tuple(z.shape[1:]) != self.z_shape:
            raise ValueError(f"z must be [B, {', '.join(map(str, self.z_shape))}], got {list(z.shape)}")
        B = z.shape[0]
        t_ = self.t_ebm_model1(self.t_ebm(_t_tensor(t, z), z.dtype))
        f = self.downsample(self.conv2d(z)).reshape(B, -1)
        x = self.linear1_x(f) + self.linear1_t(t_)
        f = self.linear1_all(x) + self.linear1_short(f)
        x = self.linear2_x(f) + self.linear2_t(t_)
        f = self.linear2_all(x) + self.linear2_short(f)
        return -self.out(f).squeeze(1)


class TwoStageGroupEBM(nn.Module):
    """The joint EBM's two-stage per-group EBM (ALGORITHMS.md 3.2, ``_netEzi``), with biases, no spectral norm:

        n = log2(h) - 2 conv layers Conv2d(-> nef, 4, 2, 1) + LeakyReLU(0.2)   (spatial -> 4 x 4), flatten,
        max(n, 1) x [Linear(-> ndf) + LeakyReLU(0.2)], Linear(ndf -> 1);   E = -output

    (n = 0 for a 4 x 4 group, our extension for the digits presets: the flatten then has c * 16 entries.)
    forward(z [B, c, h, w], t=None) -> E [B] (t is ignored: the network is not time-conditioned).
    """

    def __init__(self, z_shape, nef: int = 64, ndf: int = 200, slope: float = 0.2):
        super().__init__()
        c, h, _ = _check_shape(z_shape, 4, "TwoStageGroupEBM")
        self.z_shape = (c, h, h)
        self.nef, self.ndf = _check_int("nef", nef, 1), _check_int("ndf", ndf, 1)
        n = int(math.log2(h)) - 2
        convs, cur = OrderedDict(), c
        for i in range(n):
            convs[f"conv{i + 1}"] = nn.Conv2d(cur, nef, 4, 2, 1)
            convs[f"lrelu{i + 1}"] = nn.LeakyReLU(slope)
            cur = nef
        self.conv2d = nn.Sequential(convs)
        lins, cur = OrderedDict(), cur * 16
        for i in range(max(n, 1)):
            lins[f"fc{i + 1}"] = nn.Linear(cur, ndf)
            lins[f"lrelu{i + 1}"] = nn.LeakyReLU(slope)
            cur = ndf
        lins["out"] = nn.Linear(cur, 1)
        self.linear = nn.Sequential(lins)

    def forward(self, z: torch.Tensor, t=None) -> torch.Tensor:
        if z.dim() != 4 or tuple(z.shape[1:]) != self.z_shape:
            raise ValueError(f"z must be [B, {', '.join(map(str, self.z_shape))}], got {list(z.shape)}")
        return -self.linear(self.conv2d(z).reshape(z.shape[0], -1)).squeeze(1)


GROUP_EBMS = {"cifar10": Cifar10GroupEBM, "celebahq256": CelebA256GroupEBM, "two-stage": TwoStageGroupEBM}


def group_ebm(kind: str, z_shape, **kw) -> nn.Module:
    """The per-group EBM ``kind`` ("cifar10" (6.4), "celebahq256" (6.5), "two-stage" (3.2)) for one group."""
    if kind not in GROUP_EBMS:
        raise ValueError(f"ebm must be one of {tuple(GROUP_EBMS)}, got {kind!r}")
    return GROUP_EBMS[kind](z_shape, **kw)
