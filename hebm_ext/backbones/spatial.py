"""SpatialHVAE: an NVAE-shaped hierarchical VAE with spatial latent groups (our code, ALGORITHMS.md 6.1), the stage-1
backbone of the papers' configurations when no pretrained NVAE is at hand.

Top-down (generative) tower, groups z_l [B, c_l, h_l, w_l] top first:

    s = prior_ftr0 (a learned constant [ch, h_0, w_0])
    for l = 0 .. L-1:
        (mu_raw, ls_raw) = 0 for the top group, else dec_sampler_l(s) = Conv1x1(ELU(s)) -> 2 c_l channels
        mu = 5 tanh(mu_raw / 5),  sigma = exp(5 tanh(ls_raw / 5)) + 0.01       (the soft-clamped Normal of 6.1;
                                                                                 the top is N(0, 1.01^2))
        z_l = mu + sigma * u_l                                                   (T_beta; u ~ N(0, I))
        s = combiner_l(s, z_l) = Conv1x1(concat[s, z_l]);  s = residual cells(s);  x2 nearest upsampling + conv
            where the next group is twice as wide
    x = tanh(Conv3x3(ELU(post-process(s))))   (post-process: x2 upsampling stages up to the image size)

Residual cells: s + 0.1 * Conv3x3(Swish(BN(Conv3x3(Swish(BN(s)))))), squeeze-excitation optional (NVAE's cell
without the depthwise separable convolution). Bottom-up encoder: a conv stem, residual cells and stride-2 convs,
one feature map r_l per group; the posterior is NVAE's residual parameterisation

    q(z_l | x, z_<l) = Normal(mu_raw_p + mu_raw_q, ls_raw_p + ls_raw_q)  (soft clamp as above),
    (mu_raw_q, ls_raw_q) = Conv3x3(r_l + Conv1x1(s))    (top: Conv3x3(ELU(Conv1x1(ELU(r_0)))))

sampled (not its mean), as the papers take their posterior samples. Stage 1 minimises the negative ELBO
    (1/(2 sigma_x^2)) sum (x - g(z))^2 + sum_l [log q(z_l | x, z_<l) - log p(z_l | z_<l)],    z ~ q,
with the Gaussian likelihood of the library's other generators (sigma_x = 0.3, images in [-1, 1]). NVAE's
normalising-flow cells, discretised-logistic output, spectral regularisation and BN re-adjustment are not
implemented: this is NVAE's shape, not NVAE.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..nn.ladder import soft_clamp

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class _SE(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        r = max(ch // 16, 4)
        self.net = nn.Sequential(nn.Linear(ch, r), nn.ReLU(), nn.Linear(r, ch), nn.Sigmoid())

    def forward(self, x):
        return x * self.net(x.mean(dim=(2, 3)))[:, :, None, None]


class ResCell(nn.Module):
    """s + 0.1 * Conv3x3(Swish(BN(Conv3x3(Swish(BN(s)))))) (x SE(.) when ``se``)."""

    def __init__(self, ch: int, se: bool = False):
        super().__init__()
        layers = [nn.BatchNorm2d(ch, momentum=0.05), nn.SiLU(), nn.Conv2d(ch, ch, 3, 1, 1),
                  nn.BatchNorm2d(ch, momentum=0.05), nn.SiLU(), nn.Conv2d(ch, ch, 3, 1, 1)]
        if se:
            layers.append(_SE(ch))
        self.net = nn.Sequential(*layers)

    def forward(self, s):
        return s + 0.1 * self.net(s)


def _up(ch: int) -> nn.Module:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, 1, 1))


def _cells(ch: int, n: int, se: bool) -> nn.Module:
    return nn.Sequential(*[ResCell(ch, se) for _ in range(n)])


def _log_normal(z, mu, sigma):
    """sum over (c, h, w) of log N(z; mu, sigma^2), [B]."""
    eps = (z - mu) / sigma
    return (-0.5 * eps * eps - torch.log(sigma) - _LOG_SQRT_2PI).flatten(1).sum(1)


class SpatialHVAE(nn.Module):
    """NVAE-shaped hierarchical VAE (see the module docstring); implements the backbone protocol.

    image_shape: (C, H, W) of the data; group_shapes: [(c_l, h_l, w_l), ...] top first, square groups, each as
    wide as its parent or twice as wide, the image a power-of-two multiple of the bottom group's side (CIFAR-10 as
    in the paper: 30 x (20, 16, 16) for (3, 32, 32)). ch: channels of the towers; cells: residual cells per group
    (and per encoder / post-process stage); se: squeeze-excitation in the cells; g_llhd_sigma: the likelihood std.

    encode(x) -> z (list, a posterior sample); z_from_u(u) / u_from_z(z): lists; log_prob(z) -> [B];
    decode(z) -> x [B, C, H, W]; elbo(x) -> (loss, stats).
    """

    def __init__(self, image_shape, group_shapes, ch: int = 32, cells: int = 1, se: bool = False,
                 sigma_min: float = 0.01, g_llhd_sigma: float = 0.3):
        super().__init__()
        try:
            C, H, W = (int(v) for v in image_shape)
            shapes = [tuple(int(v) for v in s) for s in group_shapes]
        except (TypeError, ValueError) as e:
            raise ValueError(f"image_shape must be (C, H, W) and group_shapes a list of (c, h, w), got "
                             f"{image_shape!r}, {group_shapes!r}") from e
        if not shapes or any(len(s) != 3 or min(s) < 1 or s[1] != s[2] for s in shapes):
            raise ValueError(f"group_shapes must be a non-empty list of square spatial groups (c, h, h), top first, "
                             f"got {shapes}")
        for a, b in zip(shapes, shapes[1:]):
            if b[1] not in (a[1], 2 * a[1]):
                raise ValueError(f"group_shapes: each group must be as wide as the one above or twice as wide, got "
                                 f"{a} then {b}")
        k = math.log2(H / shapes[-1][1]) if H == W else -1
        if k < 0 or k != int(k):
            raise ValueError(f"image_shape {(C, H, W)} must be square and 2^k times the bottom group's side "
                             f"{shapes[-1][1]}")
        if not (g_llhd_sigma > 0 and sigma_min >= 0):
            raise ValueError(f"g_llhd_sigma must be positive and sigma_min >= 0, got {g_llhd_sigma}, {sigma_min}")
        self.image_shape = (C, H, W)
        self.group_shapes = shapes
        self.ch, self.sigma_min, self.g_llhd_sigma = int(ch), float(sigma_min), float(g_llhd_sigma)
        L = len(shapes)
        grows = [l + 1 < L and shapes[l + 1][1] == 2 * shapes[l][1] for l in range(L)]
        # generative tower
        self.prior_ftr0 = nn.Parameter(torch.rand(ch, shapes[0][1], shapes[0][2]))
        self.dec_sampler = nn.ModuleList(nn.Sequential(nn.ELU(), nn.Conv2d(ch, 2 * s[0], 1)) for s in shapes[1:])
        self.combiner_dec = nn.ModuleList(nn.Conv2d(ch + s[0], ch, 1) for s in shapes)
        self.dec_cells = nn.ModuleList(_cells(ch, cells, se) for _ in shapes)
        self.dec_up = nn.ModuleList(_up(ch) if g else nn.Identity() for g in grows)
        self.post = nn.Sequential(*[m for _ in range(int(k)) for m in (_up(ch), ResCell(ch, se))])
        self.image = nn.Sequential(nn.ELU(), nn.Conv2d(ch, C, 3, 1, 1))
        # inference tower
        self.stem = nn.Sequential(nn.Conv2d(C, ch, 3, 1, 1),
                                  *[m for _ in range(int(k)) for m in (ResCell(ch, se), nn.Conv2d(ch, ch, 4, 2, 1))])
        self.enc_cells = nn.ModuleList(_cells(ch, cells, se) for _ in shapes)
        self.enc_down = nn.ModuleList(nn.Conv2d(ch, ch, 4, 2, 1) if l > 0 and grows[l - 1] else nn.Identity()
                                      for l in range(L))
        self.enc0 = nn.Sequential(nn.ELU(), nn.Conv2d(ch, ch, 1), nn.ELU())
        self.enc_combiner = nn.ModuleList(nn.Conv2d(ch, ch, 1) for _ in shapes[1:])
        self.enc_sampler = nn.ModuleList(nn.Conv2d(ch, 2 * s[0], 3, 1, 1) for s in shapes)

    # ------------------------------------------------------------------ the towers
    def _normal(self, mu_raw, ls_raw):
        return soft_clamp(mu_raw), torch.exp(soft_clamp(ls_raw)) + self.sigma_min

    def _features(self, x):
        """Bottom-up features r_l, one per group (list, top first)."""
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.image_shape:
            got = list(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must be images [B, {', '.join(map(str, self.image_shape))}], got {got}")
        r, out = self.stem(x), [None] * len(self.group_shapes)
        for l in reversed(range(len(self.group_shapes))):
            r = self.enc_cells[l](r)
            out[l] = r
            if l > 0:  # to the width of the group above
                r = self.enc_down[l](r)
        return out

    def _check_groups(self, groups, name):
        if not isinstance(groups, (list, tuple)) or len(groups) != len(self.group_shapes):
            got = f"{len(groups)} entries" if isinstance(groups, (list, tuple)) else type(groups).__name__
            raise ValueError(f"{name} must be a list of {len(self.group_shapes)} group tensors "
                             f"{self.group_shapes}, got {got}")
        for i, (g, s) in enumerate(zip(groups, self.group_shapes)):
            if not torch.is_tensor(g) or tuple(g.shape[1:]) != s:
                got = list(g.shape) if torch.is_tensor(g) else type(g).__name__
                raise ValueError(f"{name}[{i}] must be [B, {', '.join(map(str, s))}], got {got}")

    def _tower(self, B, u=None, z=None, feats=None, full=False):
        """Walk the top-down tower from u (prior), z (given) or the encoder features (posterior sample).
        Returns (s, z list, u list, log p(z) [B], log q(z | x) [B]); s only when ``full`` (the tower otherwise
        stops at the last group)."""
        ref = self.prior_ftr0
        s = ref.unsqueeze(0).expand(B, *ref.shape)
        zs, us = [], []
        logp = logq = ref.new_zeros(B)
        L = len(self.group_shapes)
        for l, shape in enumerate(self.group_shapes):
            if l == 0:
                mu_raw = ls_raw = s.new_zeros((B,) + shape)
            else:
                mu_raw, ls_raw = self.dec_sampler[l - 1](s).chunk(2, dim=1)
            mu, sigma = self._normal(mu_raw, ls_raw)
            if feats is not None:
                f = self.enc0(feats[0]) if l == 0 else feats[l] + self.enc_combiner[l - 1](s)
                mq_raw, lq_raw = self.enc_sampler[l](f).chunk(2, dim=1)
                mq, sq = self._normal(mu_raw + mq_raw, ls_raw + lq_raw)
                zl = mq + sq * torch.randn_like(mq)
                logq = logq + _log_normal(zl, mq, sq)
            elif u is not None:
                zl = mu + sigma * u[l]
            else:
                zl = z[l]
            if u is None:
                us.append((zl - mu) / sigma)
            logp = logp + _log_normal(zl, mu, sigma)
            zs.append(zl)
            if l == L - 1 and not full:
                break
            s = self.dec_up[l](self.dec_cells[l](self.combiner_dec[l](torch.cat([s, zl], dim=1))))
        return (s if full else None), zs, (list(u) if u is not None else us), logp, logq

    def _image(self, s):
        return torch.tanh(self.image(self.post(s)))

    # ------------------------------------------------------------------ the protocol
    def encode(self, x):
        return self._tower(x.shape[0], feats=self._features(x))[1]

    def z_from_u(self, u):
        self._check_groups(u, "u")
        return self._tower(u[0].shape[0], u=u)[1]

    def u_from_z(self, z):
        self._check_groups(z, "z")
        return self._tower(z[0].shape[0], z=z)[2]

    def log_prob(self, z):
        self._check_groups(z, "z")
        return self._tower(z[0].shape[0], z=z)[3]

    def decode(self, z):
        self._check_groups(z, "z")
        return self._image(self._tower(z[0].shape[0], z=z, full=True)[0])

    def elbo(self, x):
        s, zs, _, logp, logq = self._tower(x.shape[0], feats=self._features(x), full=True)
        rec = ((self._image(s) - x) ** 2).flatten(1).sum(1)
        kl = logq - logp
        loss = rec.mean() / (2 * self.g_llhd_sigma ** 2) + kl.mean()
        return loss, {"kl": kl.mean().item(), "mse": rec.mean().item() / x[0].numel()}

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, group_shapes={self.group_shapes}, ch={self.ch}"
