"""Pieces shared by the dataset readers: split checks, the uint8 -> [-1, 1] scaling, file lookup with a clear
error, and the in-memory dataset that MNIST, SVHN and CIFAR-10 return.

Scaling convention (ALGORITHMS.md section 1.1, "Data is scaled to [-1,1]"): the papers' scripts use torchvision's
``ToTensor()`` then ``Normalize((0.5,), (0.5,))``, i.e. ``(x / 255 - 0.5) / 0.5``; here that is ``x / 127.5 - 1``.
"""
import os
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

NEVER_DOWNLOADS = "hebm_ext never downloads data: get the files yourself and point `root` at them."


def check_split(reader: str, split, allowed: Sequence[str]) -> str:
    """Return ``split`` if it is one of ``allowed``, else raise a ValueError naming the argument."""
    if split not in allowed:
        raise ValueError(f"{reader}: argument `split` must be one of {list(allowed)}, got {split!r}")
    return split


def uint8_to_unit(x) -> torch.Tensor:
    """uint8 values 0..255 (tensor or array, any shape) -> float32 ``x / 127.5 - 1`` in [-1, 1]."""
    x = torch.as_tensor(x)
    if x.dtype != torch.uint8:
        raise TypeError(f"uint8_to_unit: expected a uint8 tensor, got {x.dtype}")
    return x.to(torch.float32) / 127.5 - 1.0


def pil_to_unit(img) -> torch.Tensor:
    """A PIL image in mode "L" or "RGB" -> float32 [C, H, W] in [-1, 1] (C = 1 or 3)."""
    arr = np.array(img, dtype=np.uint8)  # a writable copy (PIL buffers are read-only)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return uint8_to_unit(torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))))


def find_file(reader: str, what: str, candidates: Sequence[str], layout: str) -> str:
    """The first existing file among ``candidates``; otherwise a FileNotFoundError that lists every path tried
    and shows the expected layout."""
    for path in candidates:
        if os.path.isfile(path):
            return path
    tried = "\n  ".join(candidates)
    raise FileNotFoundError(
        f"{reader}: {what} not found. Looked for:\n  {tried}\nExpected layout:\n{layout}\n{NEVER_DOWNLOADS}"
    )


def require_dir(reader: str, path: str, layout: str) -> str:
    """``path`` if it is a directory, else a FileNotFoundError showing the expected layout."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{reader}: directory {path} not found. Expected layout:\n{layout}\n{NEVER_DOWNLOADS}")
    return path


class ArrayImageDataset(Dataset):
    """Images held in memory as uint8 ``data`` [N, C, H, W] with int64 ``labels`` [N].

    Item i is ``(image, label)``: image a float32 tensor [C, H, W] in [-1, 1] (``x / 127.5 - 1``), passed through
    ``transform`` when one is given; label a Python int.
    """

    def __init__(self, data: np.ndarray, labels: np.ndarray, transform: Optional[Callable] = None):
        if data.dtype != np.uint8 or data.ndim != 4:
            raise ValueError(f"{type(self).__name__}: expected uint8 images [N, C, H, W], got "
                             f"{data.dtype} {data.shape}")
        if labels.shape != (data.shape[0],):
            raise ValueError(f"{type(self).__name__}: {data.shape[0]} images but labels of shape {labels.shape}")
        self.data = torch.from_numpy(np.require(data, requirements=["C", "W"]))  # own, writable memory
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int):
        x = uint8_to_unit(self.data[index])
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index])
