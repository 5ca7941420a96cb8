"""A Frechet distance for the embedded 8x8 digits, in the features of a small classifier trained here.

The FID Inception network needs a 100 MB weights file and 299x299 inputs; for ``hebm_ext.data.Digits`` this module
trains instead a tiny MLP classifier (64 -> 128 -> 64 -> 10, tanh) on ``Digits("train")`` and measures the Frechet
distance (``fid_from_stats``) between Gaussians fitted to its 64-d penultimate features. Numbers are only
comparable with other numbers of this module at the same ``VERSION``.

Training is deterministic (fixed seed, float64, one thread, full-batch Adam, a few seconds on a CPU). The trained
weights are cached in ``$HEBM_CACHE_DIR`` (default ``~/.cache/hebm_ext``) as ``digits_features_v{VERSION}.pt``,
written atomically (temporary file + ``os.replace``), and retrained when the file is missing, unreadable, or records
a different version or configuration hash (the hash covers the training configuration and the training data).
"""
import hashlib
import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fid import FeatureStats, fid_from_stats

VERSION = 1
CACHE_ENV = "HEBM_CACHE_DIR"
CONFIG = {"hidden": 128, "features": 64, "steps": 300, "lr": 0.01, "weight_decay": 1e-4, "seed": 0}


class DigitsFeatureNet(nn.Module):
    """MLP classifier of 8x8 digits: Flatten -> Linear(64, hidden) -> tanh -> Linear(hidden, features) -> tanh
    (= ``features(x)``, [N, features]) -> Linear(features, 10) (= ``forward(x)``, logits [N, 10]).

    Input: images [N, 1, 8, 8] in [-1, 1] (``Digits`` scaling). Runs in float64.
    """

    def __init__(self, hidden: int = CONFIG["hidden"], features: int = CONFIG["features"]):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, features),
                                  nn.Tanh())
        self.head = nn.Linear(features, 10)
        self.double()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, features] (float64, on the network's device) of images [N, 1, 8, 8]."""
        x = torch.as_tensor(x)
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"digits features: expected images [N, 1, 8, 8], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"digits features: expected float images in [-1, 1], got {x.dtype}")
        return self.body(x.to(device=self.head.weight.device, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@contextmanager
def _one_thread():
    # A network this small gains nothing from threads (and a busy machine makes OpenMP spin 20x slower); one
    # thread also fixes the summation order, so results do not depend on the machine's core count.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cache_dir(path: Optional[str] = None) -> str:
    """The cache folder: ``path`` if given, else ``$HEBM_CACHE_DIR``, else ``~/.cache/hebm_ext``."""
    return path or os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "hebm_ext")


def _train_data():
    from ..data import Digits

    return Digits(split="train")


def config_hash() -> str:
    """sha256 of the training configuration, VERSION and the training images and labels."""
    d = _train_data()
    h = hashlib.sha256(json.dumps({"version": VERSION, **CONFIG}, sort_keys=True).encode())
    h.update(d.images.numpy().tobytes())
    h.update(d.labels.numpy().tobytes())
    return h.hexdigest()


def train_digits_classifier() -> DigitsFeatureNet:
    """Train ``DigitsFeatureNet`` on ``Digits("train")``: full-batch Adam on the cross-entropy, float64, seeded,
    on one CPU thread (torch's global RNG and thread count are restored afterwards). About 97% test accuracy."""
    d = _train_data()
    with torch.random.fork_rng(devices=[]), _one_thread():
        torch.manual_seed(CONFIG["seed"])
        net = DigitsFeatureNet()
        opt = torch.optim.Adam(net.parameters(), lr=CONFIG["lr"], weight_decay=CONFIG["weight_decay"])
        for _ in range(CONFIG["steps"]):
            opt.zero_grad()
            F.cross_entropy(net(d.images), d.labels).backward()
            opt.step()
    return net.eval().requires_grad_(False)


def _atomic_save(obj, path: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def digits_feature_extractor(cache: Optional[str] = None) -> DigitsFeatureNet:
    """The trained ``DigitsFeatureNet`` (eval mode, frozen), from the cache or freshly trained and cached.

    ``cache``: the cache folder (default: see ``cache_dir``)."""
    folder = cache_dir(cache)
    path = os.path.join(folder, f"digits_features_v{VERSION}.pt")
    expected = config_hash()
    if os.path.isfile(path):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged cache file is replaced, loudly
            warnings.warn(f"digits FID: cache file {path} is unreadable ({e}); retraining", RuntimeWarning)
            saved = None
        if saved is not None and saved.get("version") == VERSION and saved.get("hash") == expected:
            net = DigitsFeatureNet()
            net.load_state_dict(saved["state_dict"])
            return net.eval().requires_grad_(False)
    net = train_digits_classifier()
    os.makedirs(folder, exist_ok=True)
    _atomic_save({"version": VERSION, "hash": expected, "config": dict(CONFIG), "state_dict": net.state_dict()},
                 path)
    return net


def digits_stats(images, extractor: Optional[DigitsFeatureNet] = None, cache: Optional[str] = None) -> FeatureStats:
    """``FeatureStats`` of the digits features of ``images``: a tensor [N, 1, 8, 8] in [-1, 1], or a split name
    "train" / "test" of ``hebm_ext.data.Digits``."""
    if isinstance(images, str):
        from ..data import Digits

        images = Digits(split=images).images
    extractor = extractor if extractor is not None else digits_feature_extractor(cache)
    with torch.no_grad(), _one_thread():
        return FeatureStats.from_features(extractor.features(images))


def digits_fid(images, reference: Union[str, torch.Tensor] = "test", cache: Optional[str] = None) -> float:
    """Frechet distance between ``images`` and ``reference`` in the digits classifier's 64-d features.

    Args:
        images: float tensor [N, 1, 8, 8] in [-1, 1] (N >= 2; use a few hundred for a stable number).
        reference: "test" (default, 359 images) or "train" (1438) split of ``Digits``, or an image tensor.
        cache: the cache folder of the classifier (default: see ``cache_dir``).

    Returns a float >= 0 (up to rounding); deterministic for the same inputs and cache file.
    """
    net = digits_feature_extractor(cache)
    a, b = digits_stats(images, net), digits_stats(reference, net)
    return fid_from_stats(a.mu, a.sigma, b.mu, b.sigma)
