"""Convolutional networks of the papers: decoders g(z), Gaussian encoders q(z|x), the ladder encoder of a
multi-layer latent, and the SNGAN-style ResNet generator of dual-MCMC teaching.

Datasets and their image shapes (channels, height, width), data scaled to [-1, 1]:

    digits    (1, 8, 8)     the embedded scikit-learn digits
    mnist     (1, 28, 28)
    svhn      (3, 32, 32)
    cifar10   (3, 32, 32)
    celeba64  (3, 64, 64)

Latents are passed as [B, nz]; the papers store them as [B, nz, 1, 1], which is accepted too. Encoders return
(mu, logvar), both [B, nz], for q(z|x) = N(mu, diag exp(logvar)).

Section numbers refer to ALGORITHMS.md. The data-space EBM of dual-MCMC is in ``data_ebm.py``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .energy import _check_int

IMAGE_SHAPES = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "svhn": (3, 32, 32),
    "cifar10": (3, 32, 32),
    "celeba64": (3, 64, 64),
}
DATASETS = tuple(IMAGE_SHAPES)
INITS = ("xavier", "default")

__all__ = [
    "DATASETS", "IMAGE_SHAPES", "ConvDecoder", "DigitsDecoder", "MnistDecoder", "SvhnDecoder", "Cifar10Decoder",
    "Celeba64Decoder", "decoder", "ConvEncoder", "encoder", "LadderEncoder", "MLPEncoder", "GenBlock",
    "ResNetGenerator", "init_weights_xavier", "init_weights_dual_mcmc",
]


# ---------------------------------------------------------------------------------------------------------------
# shared checks

def check_dataset(dataset, allowed=DATASETS, name: str = "dataset") -> str:
    """Return ``dataset`` if it is one of ``allowed``, else raise ValueError naming the argument."""
    if not isinstance(dataset, str) or dataset not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {dataset!r}")
    return dataset


def _check_slope(slope) -> float:
    slope = float(slope)
    if not math.isfinite(slope):
        raise ValueError(f"slope must be finite, got {slope!r}")
    return slope


def _check_init(init) -> str:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return init


def latent_as_vector(z: torch.Tensor, nz: int, name: str = "z") -> torch.Tensor:
    """[B, nz] or [B, nz, 1, 1] -> [B, nz]; anything else raises ValueError naming ``name``."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if z.dim() == 2 and z.shape[1] == nz:
        return z
    if z.dim() == 4 and tuple(z.shape[1:]) == (nz, 1, 1):
        return z.reshape(z.shape[0], nz)
    raise ValueError(f"{name} must have shape [B, {nz}] (or [B, {nz}, 1, 1]), got {list(z.shape)}")


def check_image(x: torch.Tensor, shape, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is [B, *shape]; raise ValueError naming ``name`` otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} must have shape [B, {', '.join(map(str, shape))}], got {list(x.shape)}")
    return x


# ---------------------------------------------------------------------------------------------------------------
# initialisation

def _init_conv_and_bn(module: nn.Module, bn_weight_mean: float, bn_weight_std: float) -> nn.Module:
    """xavier_normal on every conv / transposed-conv weight (biases untouched), BatchNorm weight
    ~ N(bn_weight_mean, bn_weight_std^2) and bias 0; Linear layers keep PyTorch's default. For a spectrally
    normalised conv the raw weight (``parametrizations.weight.original``) is initialised."""
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            if nn.utils.parametrize.is_parametrized(m, "weight"):
                nn.init.xavier_normal_(m.parametrizations.weight.original)
            else:
                nn.init.xavier_normal_(m.weight)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            with torch.no_grad():
                m.weight.normal_(bn_weight_mean, bn_weight_std)
                m.bias.zero_()
    return module


def init_weights_xavier(module: nn.Module) -> nn.Module:
    """LEBM's ``weights_init_xavier`` (ALGORITHMS.md 1.1; bpucla/latent-space-EBM-prior:train_svhn.py), applied to
    every submodule: conv and transposed-conv weights xavier_normal, BatchNorm weight ~ N(1, 0.02^2) and bias 0,
    Linear layers keep the PyTorch default. Returns ``module``."""
    return _init_conv_and_bn(module, 1.0, 0.02)


def init_weights_dual_mcmc(module: nn.Module) -> nn.Module:
    """Dual-MCMC's ``weights_init`` (ALGORITHMS.md 5.2; jcui1224/dual-MCMC:nets.py), applied to every submodule:
    conv weights xavier_normal, BatchNorm weight ~ N(0, 1) (``weight.data.normal_()``: mean 0, not 1, so some
    channels start with a negative scale) and bias 0, Linear layers keep the PyTorch default. Returns ``module``.

    The code initialises before adding spectral norm; our constructors do the same. Called on an already
    spectrally normalised module it initialises the raw weights (the power-iteration vectors then catch up over
    the next forward passes in train mode)."""
    return _init_conv_and_bn(module, 0.0, 1.0)


def _apply_init(module: nn.Module, init: str) -> None:
    if _check_init(init) == "xavier":
        init_weights_xavier(module)


# ---------------------------------------------------------------------------------------------------------------
# decoders g(z) -> image in [-1, 1]

class ConvDecoder(nn.Module):
    """DCGAN-style decoder: z [B, nz] -> [B, nz, 1, 1] -> ConvTranspose2d layers with LeakyReLU(slope) between
    them -> Tanh -> image [B, C, H, W] in [-1, 1].

    layers: list of ``(in_channels, out_channels, kernel, stride, padding)``, one per ConvTranspose2d (all with
        bias); the first ``in_channels`` must be ``nz`` and each layer's input must be the previous output.
    init: "xavier" (LEBM's ``init_weights_xavier``) or "default" (PyTorch's default init).

    Attributes: ``nz``, ``image_shape`` = (C, H, W).
    """

    def __init__(self, nz: int, layers, slope: float = 0.2, init: str = "xavier"):
        super().__init__()
        self.nz = _check_int("nz", nz, 1)
        self.slope = _check_slope(slope)
        layers = [tuple(int(v) for v in spec) for spec in layers]
        if not layers:
            raise ValueError("layers must be a non-empty list of (in, out, kernel, stride, padding), got []")
        size, prev = 1, nz
        mods = []
        for i, spec in enumerate(layers):
            if len(spec) != 5:
                raise ValueError(f"layers[{i}] must be (in, out, kernel, stride, padding), got {spec}")
            c_in, c_out, k, s, p = spec
            if c_in != prev:
                raise ValueError(f"layers[{i}] must take {prev} input channels (the previous output), got {c_in}")
            size = (size - 1) * s - 2 * p + k  # ConvTranspose2d output size
            if size < 1:
                raise ValueError(f"layers[{i}] = {spec} gives spatial size {size} < 1")
            if mods:
                mods.append(nn.LeakyReLU(self.slope))
            mods.append(nn.ConvTranspose2d(c_in, c_out, k, s, p))
            prev = c_out
        mods.append(nn.Tanh())
        self.net = nn.Sequential(*mods)
        self.image_shape = (prev, size, size)
        _apply_init(self, init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [B, nz] (or [B, nz, 1, 1]) -> image [B, C, H, W] in [-1, 1]."""
        z = latent_as_vector(z, self.nz)
        return self.net(z.reshape(z.shape[0], self.nz, 1, 1))


class DigitsDecoder(ConvDecoder):
    """8x8, 1 channel (the embedded sklearn digits); our own small design for fast CPU runs:
    ConvT(nz->2ngf, 4,1,0) 4x4 -> LReLU -> ConvT(2ngf->ngf, 4,2,1) 8x8 -> LReLU -> ConvT(ngf->1, 3,1,1) -> Tanh.
    z [B, nz] -> [B, 1, 8, 8]."""

    def __init__(self, nz: int, ngf: int = 32, slope: float = 0.2, init: str = "xavier"):
        _check_int("ngf", ngf, 1)
        super().__init__(nz, [(nz, 2 * ngf, 4, 1, 0), (2 * ngf, ngf, 4, 2, 1), (ngf, 1, 3, 1, 1)], slope, init)
        self.ngf = ngf


class MnistDecoder(ConvDecoder):
    """28x28, 1 channel; DCGAN-style, our choice (the LEBM SVHN pattern started at 7x7):
    ConvT(nz->4ngf, 7,1,0) 7x7 -> LReLU -> ConvT(4ngf->2ngf, 4,2,1) 14x14 -> LReLU -> ConvT(2ngf->1, 4,2,1) 28x28
    -> Tanh. z [B, nz] -> [B, 1, 28, 28]."""

    def __init__(self, nz: int, ngf: int = 64, slope: float = 0.2, init: str = "xavier"):
        _check_int("ngf", ngf, 1)
        super().__init__(nz, [(nz, 4 * ngf, 7, 1, 0), (4 * ngf, 2 * ngf, 4, 2, 1), (2 * ngf, 1, 4, 2, 1)],
                         slope, init)
        self.ngf = ngf


class SvhnDecoder(ConvDecoder):
    """LEBM's ``_netG`` for SVHN 32x32 (ALGORITHMS.md 1.1; bpucla/latent-space-EBM-prior:train_svhn.py), ngf = 64,
    nz = 100 in the paper: ConvT(nz->8ngf, 4,1,0) 4x4 -> LReLU(0.2) -> ConvT(8ngf->4ngf, 4,2,1) 8x8 -> LReLU ->
    ConvT(4ngf->2ngf, 4,2,1) 16x16 -> LReLU -> ConvT(2ngf->3, 4,2,1) 32x32 -> Tanh. All with bias (no BatchNorm,
    ``g_batchnorm=False``), xavier init. z [B, nz] -> [B, 3, 32, 32]. Also DAMC's SVHN generator (7.1)."""

    def __init__(self, nz: int, ngf: int = 64, slope: float = 0.2, init: str = "xavier"):
        _check_int("ngf", ngf, 1)
        super().__init__(nz, [(nz, 8 * ngf, 4, 1, 0), (8 * ngf, 4 * ngf, 4, 2, 1), (4 * ngf, 2 * ngf, 4, 2, 1),
                              (2 * ngf, 3, 4, 2, 1)], slope, init)
        self.ngf = ngf


class Cifar10Decoder(ConvDecoder):
    """The joint-EBM ``_Cifar10_netG`` for CIFAR-10 32x32 (ALGORITHMS.md 3.1;
    jcui1224/hierarchical-joint-ebm:joint-training/nets.py), ngf = 64 there (hard-coded), z1 in R^128:
    ConvT(nz->16ngf, 8,1,0) 8x8 -> LReLU(0.2) -> ConvT(16ngf->8ngf, 4,2,1) 16x16 -> LReLU ->
    ConvT(8ngf->4ngf, 4,2,1) 32x32 -> LReLU -> ConvT(4ngf->3, 3,1,1) -> Tanh. z [B, nz] -> [B, 3, 32, 32].
    DAMC's ``_netG_cifar10`` (7.1, ngf = 128 with multipliers 8/4/2) is the same network.
    The joint code applies no custom init, hence ``init="default"`` here."""

    def __init__(self, nz: int, ngf: int = 64, slope: float = 0.2, init: str = "default"):
        _check_int("ngf", ngf, 1)
        super().__init__(nz, [(nz, 16 * ngf, 8, 1, 0), (16 * ngf, 8 * ngf, 4, 2, 1), (8 * ngf, 4 * ngf, 4, 2, 1),
                              (4 * ngf, 3, 3, 1, 1)], slope, init)
        self.ngf = ngf


class Celeba64Decoder(ConvDecoder):
    """CelebA 64x64, DCGAN-style with 5 ConvT layers (ALGORITHMS.md 7.1: DAMC/LEBM style, ngf = 128, nz = 100):
    ConvT(nz->8ngf, 4,1,0) 4x4 -> ConvT(8ngf->4ngf, 4,2,1) 8 -> ConvT(4ngf->2ngf) 16 -> ConvT(2ngf->ngf) 32 ->
    ConvT(ngf->3, 4,2,1) 64 -> Tanh, LReLU(0.2) between. z [B, nz] -> [B, 3, 64, 64].
    The channel widths follow LEBM's CelebA-128 net (16ngf ... 3 over 6 layers) minus its first layer; the
    DAMC CelebA-64 source was not readable, so the exact widths are our inference."""

    def __init__(self, nz: int, ngf: int = 128, slope: float = 0.2, init: str = "xavier"):
        _check_int("ngf", ngf, 1)
        super().__init__(nz, [(nz, 8 * ngf, 4, 1, 0), (8 * ngf, 4 * ngf, 4, 2, 1), (4 * ngf, 2 * ngf, 4, 2, 1),
                              (2 * ngf, ngf, 4, 2, 1), (ngf, 3, 4, 2, 1)], slope, init)
        self.ngf = ngf


DECODERS = {
    "digits": DigitsDecoder,
    "mnist": MnistDecoder,
    "svhn": SvhnDecoder,
    "cifar10": Cifar10Decoder,
    "celeba64": Celeba64Decoder,
}


def decoder(dataset: str, nz: int, **kw) -> ConvDecoder:
    """The decoder g(z) for ``dataset`` (one of DATASETS); keyword arguments go to its constructor (ngf, slope,
    init)."""
    return DECODERS[check_dataset(dataset)](nz, **kw)


# ---------------------------------------------------------------------------------------------------------------
# encoders q(z|x) = N(mu, diag exp(logvar))

# (first conv strides down?, number of 4,2,1 downsampling convs after it): spatial size after the stack
_ENCODER_STACKS = {
    "digits": (False, 1),    # 8 -> 8 -> 4
    "mnist": (False, 2),     # 28 -> 28 -> 14 -> 7
    "svhn": (False, 3),      # 32 -> 32 -> 16 -> 8 -> 4
    "cifar10": (False, 3),   # as _Cifar10_netI of 5.2
    "celeba64": (True, 3),   # 64 -> 32 -> 16 -> 8 -> 4; the CelebA-64 netI's first conv is 4,2,1 (5.2)
}
_ENCODER_NIF = {"digits": 32, "mnist": 32, "svhn": 64, "cifar10": 128, "celeba64": 128}


class ConvEncoder(nn.Module):
    """Gaussian inference net x -> (mu, logvar), dual-MCMC's ``_Cifar10_netI`` generalised to each dataset
    (ALGORITHMS.md 5.2; jcui1224/dual-MCMC:nets.py):

        Conv(C->nif, 3,1,1) -LReLU- Conv(nif->2nif, 4,2,1) -LReLU- Conv(2nif->4nif, 4,2,1) -LReLU-
        Conv(4nif->8nif, 4,2,1) -LReLU-> [8nif, 4, 4];   mu = Conv(8nif->nz, 4,1,0),  logvar = Conv(8nif->nz, 4,1,0)

    Trunk convs without bias, heads with bias, LeakyReLU(0.2). Per dataset: cifar10 / svhn exactly as above;
    celeba64's first conv is (4,2,1) (64 -> 32 -> ... -> 4, as the CelebA-64 netI); digits: Conv 3x3 then one
    downsampling conv (8 -> 4, channels nif, 2nif); mnist: Conv 3x3 then two (28 -> 14 -> 7, nif, 2nif, 4nif) and
    7x7 heads. Default nif: 128 for cifar10 / celeba64 (the dual-MCMC config), 64 svhn, 32 digits / mnist.

    The code names the second head ``log_sigma`` but uses it as a log-variance (std = exp(0.5 * logvar)); so do we.
    init: "xavier" (the code applies its ``weights_init``: xavier on convs) or "default".

    forward(x [B, C, H, W]) -> (mu [B, nz], logvar [B, nz]).
    """

    def __init__(self, dataset: str, nz: int, nif: int | None = None, slope: float = 0.2, init: str = "xavier"):
        super().__init__()
        self.dataset = check_dataset(dataset)
        self.nz = _check_int("nz", nz, 1)
        self.nif = _check_int("nif", _ENCODER_NIF[dataset] if nif is None else nif, 1)
        self.slope = _check_slope(slope)
        self.image_shape = IMAGE_SHAPES[dataset]
        first_down, n_down = _ENCODER_STACKS[dataset]
        c, size = self.image_shape[0], self.image_shape[1]
        k, s = (4, 2) if first_down else (3, 1)
        mods = [nn.Conv2d(c, self.nif, k, s, 1, bias=False), nn.LeakyReLU(self.slope)]
        size = size // s
        ch = self.nif
        for _ in range(n_down):
            mods += [nn.Conv2d(ch, 2 * ch, 4, 2, 1, bias=False), nn.LeakyReLU(self.slope)]
            ch, size = 2 * ch, size // 2
        self.trunk = nn.Sequential(*mods)
        self.mu = nn.Conv2d(ch, nz, size, 1, 0)
        self.logvar = nn.Conv2d(ch, nz, size, 1, 0)
        _apply_init(self, init)

    def forward(self, x: torch.Tensor):
        """x [B, C, H, W] -> (mu [B, nz], logvar [B, nz])."""
        h = self.trunk(check_image(x, self.image_shape))
        return self.mu(h).flatten(1), self.logvar(h).flatten(1)


def encoder(dataset: str, nz: int, **kw) -> ConvEncoder:
    """The Gaussian encoder q(z|x) for ``dataset`` (one of DATASETS); keyword arguments go to ConvEncoder
    (nif, slope, init)."""
    return ConvEncoder(check_dataset(dataset), nz, **kw)


def _ladder_block(c_in: int, c_out: int, size: int, slope: float):
    """Two convs with LeakyReLU (the ICCV-23 ``inference_i`` / ``ladder_i`` block): a (4,2,1) downsampling conv
    while the input is at least 8 pixels wide (else a 3x3 conv), then a 3x3 conv. Returns (block, output size)."""
    down = size >= 8
    block = nn.Sequential(
        nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False) if down else nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
        nn.LeakyReLU(slope),
        nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
        nn.LeakyReLU(slope),
    )
    return block, (size // 2 if down else size)


class LadderEncoder(nn.Module):
    """Ladder inference model for a multi-layer latent (ALGORITHMS.md 3.4, ICCV-23
    jcui1224/hierarchical-representation-ebm:nets.py ``_inference_svhn_4layer_v1``; also the variational scheme
    of the joint EBM, 3.1):

        r_1 = h_1(x),  r_i = h_i(r_{i-1})   (deterministic bottom-up features, i = 1..L)
        q(z_i | x) = N(mu_i(r_i), diag exp(logvar_i(r_i)))

    where layer i = 1 is the BOTTOM latent (next to the image) and i = L the top. Each h_i is a two-conv block
    (a (4,2,1) downsampling conv while the feature map is at least 8 wide, else 3x3, then a 3x3 conv; LeakyReLU)
    with channels nif * 2^(i-1), capped at 8 * nif. Each head reads r_i through one more such block (the ICCV
    "ladder" branch), flattens, and has two Linear maps to mu_i and logvar_i.

    dims: latent layer sizes, TOP layer first (e.g. [100, 128]: z_top in R^100, z_bottom in R^128).
    nif: base width (default: 32 for digits / mnist, 64 otherwise).

    forward(x [B, C, H, W]) -> list of (mu [B, d], logvar [B, d]) in the order of ``dims`` (top first).

    The ICCV code feeds the bottom head from its own conv branch on x and uses LeakyReLU with slope 0.01
    (F.leaky_relu's default); here the bottom head reads r_1 and the slope is an argument (default 0.2).
    """

    def __init__(self, dataset: str, dims, nif: int | None = None, slope: float = 0.2, init: str = "xavier"):
        super().__init__()
        self.dataset = check_dataset(dataset)
        try:
            dims = [int(d) for d in dims]
        except TypeError as e:
            raise TypeError(f"dims must be a list of latent layer sizes (top first), got {dims!r}") from e
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"dims must be a non-empty list of positive layer sizes (top first), got {dims}")
        self.dims = dims
        default_nif = 32 if dataset in ("digits", "mnist") else 64
        self.nif = _check_int("nif", default_nif if nif is None else nif, 1)
        self.slope = _check_slope(slope)
        self.image_shape = IMAGE_SHAPES[dataset]
        L = len(dims)
        c, size = self.image_shape[0], self.image_shape[1]
        trunk, heads, mus, logvars = [], [], [], []
        for i in range(L):  # bottom-up: i = 0 is the bottom latent layer
            c_out = self.nif * 2 ** min(i, 3)
            block, size = _ladder_block(c, c_out, size, self.slope)
            trunk.append(block)
            branch, head_size = _ladder_block(c_out, c_out, size, self.slope)
            heads.append(nn.Sequential(branch, nn.Flatten()))
            feat = c_out * head_size * head_size
            d = dims[L - 1 - i]
            mus.append(nn.Linear(feat, d))
            logvars.append(nn.Linear(feat, d))
            c = c_out
        self.trunk = nn.ModuleList(trunk)
        self.heads = nn.ModuleList(heads)
        self.mu = nn.ModuleList(mus)
        self.logvar = nn.ModuleList(logvars)
        _apply_init(self, init)

    def features(self, x: torch.Tensor):
        """x [B, C, H, W] -> [r_1, ..., r_L] (bottom first)."""
        r, out = check_image(x, self.image_shape), []
        for h in self.trunk:
            r = h(r)
            out.append(r)
        return out

    def forward(self, x: torch.Tensor):
        """x [B, C, H, W] -> [(mu, logvar) of the top layer, ..., of the bottom layer], each [B, dims[j]]."""
        params = []
        for r, head, mu, logvar in zip(self.features(x), self.heads, self.mu, self.logvar):
            f = head(r)
            params.append((mu(f), logvar(f)))
        return params[::-1]


class MLPEncoder(nn.Module):
    """Latent-to-latent Gaussian inference head, e.g. q(z_2 | z_1) (ALGORITHMS.md 3.1, the joint EBM's unused
    ``_netIzi_mlp``): ``depth`` x [Linear(-> hidden) + LeakyReLU(slope)], then Linear(-> 2 * out_dim) split into
    (mu, logvar). The joint code calls the second half log-sigma (sigma = exp + 0.01); ours is a log-variance.

    forward(h [B, in_dim]) -> (mu [B, out_dim], logvar [B, out_dim]).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 200, depth: int = 2, slope: float = 0.2):
        super().__init__()
        self.in_dim = _check_int("in_dim", in_dim, 1)
        self.out_dim = _check_int("out_dim", out_dim, 1)
        self.hidden = _check_int("hidden", hidden, 1)
        self.depth = _check_int("depth", depth, 0)
        self.slope = _check_slope(slope)
        mods, prev = [], in_dim
        for _ in range(depth):
            mods += [nn.Linear(prev, hidden), nn.LeakyReLU(self.slope)]
            prev = hidden
        mods.append(nn.Linear(prev, 2 * out_dim))
        self.net = nn.Sequential(*mods)

    def forward(self, h: torch.Tensor):
        """h [B, in_dim] -> (mu [B, out_dim], logvar [B, out_dim])."""
        h = latent_as_vector(h, self.in_dim, name="h")
        mu, logvar = self.net(h).chunk(2, dim=1)
        return mu, logvar


# ---------------------------------------------------------------------------------------------------------------
# dual-MCMC: SNGAN-style ResNet generator with BatchNorm

class GenBlock(nn.Module):
    """Dual-MCMC ``_GenBlock`` (ALGORITHMS.md 5.2): with up = bilinear x2 upsampling (align_corners=True) if
    ``upsample``,

        h  = conv2( ReLU( BN2( conv1( up( ReLU( BN1(x) ) ) ) ) ) )      conv1, conv2: 3x3, bias
        sc = conv_sc( up(x) )  (1x1, bias) if in != out or upsample, else x
        out = h + sc

    [B, in, H, W] -> [B, out, 2H, 2W] (or [B, out, H, W] without upsampling)."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool = True):
        super().__init__()
        self.upsample = bool(upsample)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.sc = nn.Conv2d(in_channels, out_channels, 1) if (in_channels != out_channels or upsample) else None

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True) if self.upsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.bn2(self.conv1(self._up(F.relu(self.bn1(x)))))))
        y = self._up(x)
        return h + (self.sc(y) if self.sc is not None else y)


# dataset -> (bottom width, channels ngf // d at each stage (len - 1 upsampling blocks), default ngf)
_RESNET_G = {
    "cifar10": (4, (1, 1, 1, 1), 512),           # 4 -> 32, _Cifar10_netG of dual-MCMC
    "celeba64": (4, (1, 2, 4, 8, 16), 1024),     # 4 -> 64, _CelebA64_netG
    "digits": (2, (1, 1, 1), 64),                # 2 -> 8, ours
    "mnist": (7, (1, 1, 1), 64),                 # 7 -> 28, ours
}


class ResNetGenerator(nn.Module):
    """Dual-MCMC's SNGAN-style ResNet generator (ALGORITHMS.md 5.2; jcui1224/dual-MCMC:nets.py):

        Linear(nz -> w*w*ngf) -> [ngf, w, w] -> GenBlocks (bilinear x2 upsampling each) -> BN -> ReLU ->
        Conv3x3(-> C, bias) -> tanh

    cifar10: w = 4, 3 blocks ngf -> ngf (4 -> 32), ngf = 512 in the paper config (``_Cifar10_netG``);
    celeba64: w = 4, 4 blocks with channels ngf -> ngf/2 -> ngf/4 -> ngf/8 -> ngf/16 (4 -> 64), ngf = 1024
    (``_CelebA64_netG``; ngf must be divisible by 16); digits (ours): w = 2, 2 blocks (2 -> 8), ngf = 64;
    mnist (ours): w = 7, 2 blocks (7 -> 28), ngf = 64.

    Init (``init=True``): ``init_weights_dual_mcmc`` (xavier convs, BN weight ~ N(0, 1), BN bias 0; the Linear keeps
    PyTorch's default), as the code applies.

    BatchNorm runs in whatever mode the module is in. The dual-MCMC code never calls ``.eval()`` (ALGORITHMS.md
    10.5), so there G always uses batch statistics, including for sampling and inside the posterior z-chain,
    where BN couples the samples of a batch (and updates the running statistics at every call). Call ``.eval()``
    for per-sample (running-statistics) behaviour; keep train mode to reproduce the paper.

    forward(z [B, nz] or [B, nz, 1, 1]) -> image [B, C, H, W] in [-1, 1].
    """

    def __init__(self, dataset: str, nz: int, ngf: int | None = None, init: bool = True):
        super().__init__()
        self.dataset = check_dataset(dataset, tuple(_RESNET_G))
        width, divisors, default_ngf = _RESNET_G[dataset]
        self.nz = _check_int("nz", nz, 1)
        self.ngf = _check_int("ngf", default_ngf if ngf is None else ngf, 1)
        if self.ngf % max(divisors):
            raise ValueError(f"ngf must be divisible by {max(divisors)} for dataset {dataset!r}, got {self.ngf}")
        self.bottom_width = width
        self.image_shape = IMAGE_SHAPES[dataset]
        chans = [self.ngf // d for d in divisors]
        self.lin = nn.Linear(nz, width * width * chans[0])
        self.blocks = nn.Sequential(*[GenBlock(a, b, upsample=True) for a, b in zip(chans[:-1], chans[1:])])
        self.bn = nn.BatchNorm2d(chans[-1])
        self.conv_out = nn.Conv2d(chans[-1], self.image_shape[0], 3, 1, 1)
        if init:
            init_weights_dual_mcmc(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, nz] (or [B, nz, 1, 1]) -> image [B, C, H, W] in [-1, 1]."""
        z = latent_as_vector(z, self.nz)
        h = self.lin(z).view(z.shape[0], -1, self.bottom_width, self.bottom_width)
        h = F.relu(self.bn(self.blocks(h)))
        return torch.tanh(self.conv_out(h))
