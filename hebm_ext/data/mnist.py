"""MNIST from its IDX files (plain or .gz), in torchvision's on-disk layout. Never downloads."""
import gzip
import os
import struct
from typing import Callable, Optional

import numpy as np

from ._common import ArrayImageDataset, check_split, find_file

SPLITS = ("train", "test")
_PREFIX = {"train": "train", "test": "t10k"}
# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); multi-byte values are big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

LAYOUT = """  <root>/train-images-idx3-ubyte[.gz]   (or <root>/MNIST/raw/..., torchvision's layout)
  <root>/train-labels-idx1-ubyte[.gz]
  <root>/t10k-images-idx3-ubyte[.gz]
  <root>/t10k-labels-idx1-ubyte[.gz]"""


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (``.gz`` decompressed on the fly) into an array of the dtype and shape its header gives.

    Header: two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions d, then d big-endian uint32
    sizes. Raises ValueError naming ``path`` when the magic number is wrong or the size does not match the header.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a cut .gz stream is an EOFError
        raise ValueError(f"IDX file {path} cannot be read ({e}); it is corrupt or truncated") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"IDX file {path}: bad magic number 0x{raw[:4].hex()} (expected 0x00000803 for images, "
                         "0x00000801 for labels); this is not an IDX file or it is corrupt")
    ndim = raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise ValueError(f"IDX file {path}: truncated header ({len(raw)} bytes, {start} needed for {ndim} dims)")
    shape = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"IDX file {path}: {len(raw)} bytes, but its header announces shape {tuple(shape)} of "
                         f"{dtype.name}, i.e. {expected} bytes; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=dtype, offset=start).reshape(shape)


def _locate(root: str, name: str) -> str:
    dirs = [root, os.path.join(root, "MNIST", "raw")]
    candidates = [os.path.join(d, name + ext) for d in dirs for ext in ("", ".gz")]
    return find_file("MNIST", name, candidates, LAYOUT)


class MNIST(ArrayImageDataset):
    """MNIST digits, 1x28x28, labels 0..9 (train 60,000 / test 10,000 with the real files).

    Args:
        root: folder with the four IDX files (plain or ``.gz``), directly or under ``MNIST/raw`` (torchvision).
        split: "train" (``train-*``) or "test" (``t10k-*``).
        transform: optional callable applied to each image tensor.

    Items: ``(image float32 [1, 28, 28] in [-1, 1], label int)``. ``.data`` is uint8 [N, 1, 28, 28],
    ``.labels`` long [N].
    """

    def __init__(self, root: str, split: str = "train", transform: Optional[Callable] = None):
        check_split("MNIST", split, SPLITS)
        prefix = _PREFIX[split]
        img_path = _locate(root, f"{prefix}-images-idx3-ubyte")
        lbl_path = _locate(root, f"{prefix}-labels-idx1-ubyte")
        images, labels = read_idx(img_path), read_idx(lbl_path)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(f"MNIST: {img_path} holds {images.dtype.name} of shape {images.shape}, "
                             "expected uint8 images [N, H, W]")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise ValueError(f"MNIST: {lbl_path} holds {labels.dtype.name} of shape {labels.shape}, "
                             "expected uint8 labels [N]")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"MNIST: {img_path} has {images.shape[0]} images but {lbl_path} has "
                             f"{labels.shape[0]} labels")
        if labels.size and labels.max() > 9:
            raise ValueError(f"MNIST: {lbl_path} has label {int(labels.max())}, expected 0..9")
        self.split = split
        super().__init__(images[:, None], labels, transform)
