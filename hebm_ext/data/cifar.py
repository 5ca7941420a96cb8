"""CIFAR-10 from the official python (pickle) or binary batches, in torchvision's layout. Never downloads.

The python batches are pickles; they are read with an unpickler that only accepts the few NumPy constructors a
CIFAR batch needs, so a tampered file cannot run code.
"""
import os
import pickle
from typing import Callable, Optional

import numpy as np

from ._common import NEVER_DOWNLOADS, ArrayImageDataset, check_split, find_file

SPLITS = ("train", "test")
_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
LAYOUT = """  <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch   (python version, preferred)
or
  <root>/cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin, test_batch.bin   (binary version)"""
_RECORD = 1 + 3 * 32 * 32  # binary version: 1 label byte, then the R, G and B planes row-major

# What a pickled NumPy array may reference (Python 2 era, NumPy 1 and NumPy 2 pickles).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not part of a CIFAR batch)")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]  # NumPy 2 moved numpy.core to numpy._core
        return super().find_class(module, name)


def _field(batch: dict, key: str):
    for k in (key, key.encode()):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def read_python_batch(path: str):
    """``(images uint8 [N, 3, 32, 32], labels int64 [N])`` from one python-version batch (a pickled dict with
    ``data`` uint8 [N, 3072] and ``labels`` [N]). ValueError naming ``path`` when the file is not such a batch."""
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnlyUnpickler(f, encoding="latin1").load()
        data, labels = np.asarray(_field(batch, "data")), np.asarray(_field(batch, "labels"), dtype=np.int64)
    except Exception as e:  # unpickling a damaged file raises many types; re-raised with the path
        raise ValueError(f"CIFAR10: {path} is not a valid CIFAR-10 python batch ({type(e).__name__}: {e})") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _RECORD - 1 or labels.shape != (data.shape[0],):
        raise ValueError(f"CIFAR10: {path}: data {data.dtype} {data.shape} and labels {labels.shape}, expected "
                         f"uint8 [N, 3072] and [N]")
    return data.reshape(-1, 3, 32, 32), labels


def read_binary_batch(path: str):
    """``(images uint8 [N, 3, 32, 32], labels int64 [N])`` from one binary-version batch: N records of 1 label
    byte + 3072 pixel bytes (R, G, B planes, each 32x32 row-major). ValueError naming ``path`` when truncated."""
    with open(path, "rb") as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise ValueError(f"CIFAR10: {path} has {raw.size} bytes, not a positive multiple of the {_RECORD}-byte "
                         "record (1 label + 3072 pixels); the file is truncated or corrupt")
    records = raw.reshape(-1, _RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


class CIFAR10(ArrayImageDataset):
    """CIFAR-10, 3x32x32, labels 0..9 (train 50,000 = data_batch_1..5 in order / test 10,000 = test_batch).

    Args:
        root: folder containing ``cifar-10-batches-py/`` (used when present) or ``cifar-10-batches-bin/``.
        split: "train" or "test".
        transform: optional callable applied to each image tensor.

    Items: ``(image float32 [3, 32, 32] in [-1, 1], label int)``. ``.data`` uint8 [N, 3, 32, 32], ``.labels`` [N].
    """

    def __init__(self, root: str, split: str = "train", transform: Optional[Callable] = None):
        check_split("CIFAR10", split, SPLITS)
        py_dir, bin_dir = os.path.join(root, "cifar-10-batches-py"), os.path.join(root, "cifar-10-batches-bin")
        if os.path.isdir(py_dir):
            parts = [read_python_batch(find_file("CIFAR10", name, [os.path.join(py_dir, name)], LAYOUT))
                     for name in _FILES[split]]
        elif os.path.isdir(bin_dir):
            parts = [read_binary_batch(find_file("CIFAR10", name + ".bin", [os.path.join(bin_dir, name + ".bin")],
                                                 LAYOUT))
                     for name in _FILES[split]]
        else:
            raise FileNotFoundError(f"CIFAR10: neither {py_dir} nor {bin_dir} exists. Expected layout:\n{LAYOUT}\n"
                                    f"{NEVER_DOWNLOADS}")
        data = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if labels.size and labels.max() > 9:
            raise ValueError(f"CIFAR10: label {int(labels.max())} found in {root}, expected 0..9")
        self.split = split
        super().__init__(data, labels, transform)
