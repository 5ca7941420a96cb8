"""InceptionV3 feature extractor for FID, the "FID Inception" variant of pytorch-fid (mseitzer/pytorch-fid,
``fid_inception_v3``: torchvision's Inception3 with 1008 classes, no aux head, and the patched blocks
``FIDInceptionA/C/E_1/E_2``), written here without torchvision.

Module and buffer names follow torchvision's Inception3, so ``state_dict()`` has exactly the names of pytorch-fid's
weights file ``pt_inception-2015-12-05-6726825d.pth`` (the TF 2015-12-05 Inception ported by pytorch-fid), and
``load_state_dict(torch.load(path), strict=True)`` works. The weights are never downloaded: pass their path or set
the environment variable ``HEBM_FID_WEIGHTS``.

Differences of the FID variant from torchvision's blocks (all reproduced): the 3x3 average pools inside Mixed_5*,
Mixed_6b-e and Mixed_7b exclude the zero padding (``count_include_pad=False``, as TensorFlow), and Mixed_7c pools
with a 3x3 max pool instead of an average pool.
"""
import os
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILENAME
WEIGHTS_ENV = "HEBM_FID_WEIGHTS"
FEATURE_DIM = 2048
INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d(eps=1e-3) -> ReLU; submodules ``conv`` and ``bn`` as in torchvision."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x):
    # TensorFlow's average pool ignores the padded zeros (pytorch-fid's "Patch" in FIDInceptionA/C/E_1).
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b/5c/5d (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1; out 224 + pool_features channels."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_same(x))], 1)


class InceptionB(nn.Module):
    """Mixed_6a (35x35 -> 17x17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2; out 384 + 96 + cin channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """Mixed_6b-6e (17x17) with factorised 7x7 convolutions; out 768 channels."""

    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            bd = conv(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool_same(x))], 1)


class InceptionD(nn.Module):
    """Mixed_7a (17x17 -> 8x8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2; out 320 + 192 + cin channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b / Mixed_7c (8x8); out 2048 channels. ``pool``: "avg" (7b, padding excluded) or "max" (7c: the FID
    network's max pool, kept from the TF graph)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"InceptionE: argument `pool` must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = _avg_pool_same(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception network up to its final average pool ("pool3"): images -> features [N, 2048].

    Args:
        input_range: (lo, hi), the range of the input pixels. Default (-1, 1), this package's data convention;
            use (0, 1) for pytorch-fid's convention.

    ``forward(x)``: x float [N, C, H, W] with C = 3 (RGB) or 1 (greyscale, repeated to 3 channels), any H, W.
    As pytorch-fid: bilinear resize to 299x299 (``align_corners=False``), then the linear map of ``input_range``
    onto [-1, 1], which the TF-ported weights expect. Returns float [N, 2048].

    The module is built in eval mode with frozen parameters (FID uses the BatchNorm running statistics). Its
    weights are random until loaded: use ``FIDInceptionV3.from_pretrained`` / ``load_fid_inception``.
    ``fc`` (2048 -> 1008) is kept only so that the weights file loads strictly; it is not used.
    """

    def __init__(self, input_range: Tuple[float, float] = (-1.0, 1.0)):
        super().__init__()
        lo, hi = (float(v) for v in input_range)
        if not hi > lo:
            raise ValueError(f"FIDInceptionV3: argument `input_range` must be (lo, hi) with hi > lo, got {input_range}")
        self.input_range = (lo, hi)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, 1008)
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1|3, H, W] in ``input_range`` -> [N, 3, 299, 299] in [-1, 1] (pytorch-fid's order: resize, scale)."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"FIDInceptionV3: expected images [N, 3, H, W] or [N, 1, H, W], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"FIDInceptionV3: expected floating-point images in {self.input_range}, got {x.dtype}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        lo, hi = self.input_range
        return (x - lo) * (2.0 / (hi - lo)) - 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x.to(self.fc.weight.dtype))
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)

    @classmethod
    def from_pretrained(cls, weights: Optional[str] = None, input_range: Sequence[float] = (-1.0, 1.0),
                        device=None) -> "FIDInceptionV3":
        """Build the network and load pytorch-fid's weights from ``weights`` or ``$HEBM_FID_WEIGHTS`` (strict)."""
        model = cls(tuple(input_range))
        state = torch.load(resolve_weights_path(weights), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        return model.to(device) if device is not None else model


def resolve_weights_path(weights: Optional[str] = None) -> str:
    """The path of the FID Inception weights: ``weights`` if given, else ``$HEBM_FID_WEIGHTS``.

    Raises FileNotFoundError, saying where to get the file and how to point to it, when neither is set or the
    file does not exist. Nothing is downloaded.
    """
    source = "argument `weights`" if weights else f"environment variable {WEIGHTS_ENV}"
    path = weights or os.environ.get(WEIGHTS_ENV)
    how = (f"Download {WEIGHTS_FILENAME} yourself from {WEIGHTS_URL} (pytorch-fid's port of the TF Inception used "
           f"for FID), then pass its path as `weights=` or set {WEIGHTS_ENV}=/path/to/{WEIGHTS_FILENAME}. "
           "hebm_ext never downloads weights.")
    if not path:
        raise FileNotFoundError(f"FID Inception weights: no path given (argument `weights` is None and "
                                f"{WEIGHTS_ENV} is not set). {how}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FID Inception weights: {path} (from the {source}) does not exist. {how}")
    return path


def load_fid_inception(weights: Optional[str] = None, input_range: Sequence[float] = (-1.0, 1.0),
                       device=None) -> FIDInceptionV3:
    """Shorthand for ``FIDInceptionV3.from_pretrained(weights, input_range, device)``."""
    return FIDInceptionV3.from_pretrained(weights, input_range, device)
