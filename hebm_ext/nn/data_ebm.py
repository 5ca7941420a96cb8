"""DataEBM: the data-space energy-based model of dual-MCMC teaching (ALGORITHMS.md 5.2; jcui1224/dual-MCMC:nets.py
``_Cifar10_netE``, ``EBMBlock``, ``EBMBlockStart``; CelebA-64 ``_CelebA64_netE``).

The network outputs an ENERGY E(x) (lower = more likely); the paper's f = -E. An SNGAN-style ResNet discriminator
without biases, spectrally normalised on every Conv2d and Linear.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import IMAGE_SHAPES, check_dataset, check_image, init_weights_dual_mcmc
from .energy import _check_int

__all__ = ["EBMBlock", "EBMBlockStart", "DataEBM"]


class EBMBlock(nn.Module):
    """Residual block of the dual-MCMC EBM; all convs bias-free, 3x3 (shortcut 1x1):

        h  = conv2( ReLU( conv1( ReLU(x) ) ) ),  then avgpool2 if ``downsample``
        sc = conv_sc(x) if in != out or downsample, else x;  then avgpool2 if ``downsample``
        out = h + sc

    [B, in, H, W] -> [B, out, H/2, W/2] (or [B, out, H, W]). The shortcut pools before its 1x1 conv (cheaper);
    a bias-free 1x1 conv commutes with 2x2 average pooling, so this is the code's function (which convolves first
    in EBMBlock and pools first in EBMBlockStart)."""

    preactivation = True  # ReLU on the block input

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = False):
        super().__init__()
        self.downsample = bool(downsample)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        learnable_sc = in_channels != out_channels or self.downsample
        self.sc = nn.Conv2d(in_channels, out_channels, 1, bias=False) if learnable_sc else None

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self._pool(self.conv2(F.relu(self.conv1(h))))
        y = self._pool(x)
        return h + (self.sc(y) if self.sc is not None else y)


class EBMBlockStart(EBMBlock):
    """The first block (``EBMBlockStart``): as EBMBlock but without the ReLU on the input image:
    h = conv2(ReLU(conv1(x))), avgpool2; sc = conv_sc(avgpool2(x))."""

    preactivation = False


# dataset -> (channels ndf // d of each block, downsample flags, default ndf)
_DATA_EBM = {
    # 32 -> 16 -> 8 -> 8 -> 8: EBMBlockStart(down), EBMBlock(down), 2 x EBMBlock (_Cifar10_netE)
    "cifar10": ((1, 1, 1, 1), (True, True, False, False), 512),
    # 64 -> 32 -> 16 -> 8 -> 4 -> 2, channels ndf/16 ... ndf (_CelebA64_netE)
    "celeba64": ((16, 8, 4, 2, 1), (True, True, True, True, True), 1024),
    # small CPU variants with the CIFAR-10 layout: 8 -> 4 -> 2 -> 2 -> 2 and 28 -> 14 -> 7 -> 7 -> 7
    "digits": ((1, 1, 1, 1), (True, True, False, False), 64),
    "mnist": ((1, 1, 1, 1), (True, True, False, False), 64),
}


class DataEBM(nn.Module):
    """Data-space EBM of dual-MCMC teaching, x [B, C, H, W] -> energy E(x) [B].

        EBMBlockStart(C -> c_1, down) -> EBMBlock(c_1 -> c_2, down) -> ... -> ReLU -> global average pool ->
        Linear(ndf -> 1, bias=False)

    cifar10 (``_Cifar10_netE``, ndf = 512): EBMBlockStart(3 -> ndf, down), EBMBlock(ndf, down), 2 x EBMBlock(ndf),
    spatial 32 -> 16 -> 8 -> 8 -> 8. celeba64 (``_CelebA64_netE``, ndf = 1024): 5 downsampling blocks with channels
    ndf/16, ndf/8, ndf/4, ndf/2, ndf (64, 128, ..., 1024), spatial 64 -> 2 (ndf must be divisible by 16).
    digits / mnist (ours, for CPU tests, ndf = 64): the CIFAR-10 layout on 1-channel 8x8 / 28x28 images.

    spectral_norm: spectral norm (torch.nn.utils.parametrizations) on every Conv2d and Linear, as the paper's
    ``add_sn``. In train mode each forward runs one power iteration and updates the stored vectors, also inside
    Langevin chains (ALGORITHMS.md 10.5); in eval mode the weights are fixed.
    init: ``init_weights_dual_mcmc`` (xavier convs) before spectral norm is added, as the code does.
    """

    def __init__(self, dataset: str, ndf: int | None = None, spectral_norm: bool = True, init: bool = True):
        super().__init__()
        self.dataset = check_dataset(dataset, tuple(_DATA_EBM))
        divisors, downs, default_ndf = _DATA_EBM[dataset]
        self.ndf = _check_int("ndf", default_ndf if ndf is None else ndf, 1)
        if self.ndf % max(divisors):
            raise ValueError(f"ndf must be divisible by {max(divisors)} for dataset {dataset!r}, got {self.ndf}")
        self.image_shape = IMAGE_SHAPES[dataset]
        self.spectral_norm = bool(spectral_norm)
        chans = [self.image_shape[0]] + [self.ndf // d for d in divisors]
        blocks = [(EBMBlockStart if i == 0 else EBMBlock)(chans[i], chans[i + 1], downsample=down)
                  for i, down in enumerate(downs)]
        self.blocks = nn.Sequential(*blocks)
        self.lin = nn.Linear(self.ndf, 1, bias=False)
        if init:
            init_weights_dual_mcmc(self)
        if self.spectral_norm:
            for m in list(self.modules()):
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> energy [B]."""
        h = F.relu(self.blocks(check_image(x, self.image_shape)))
        return self.lin(h.mean(dim=(2, 3))).squeeze(1)
