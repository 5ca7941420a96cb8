"""SVHN (cropped digits, format 2) from its MATLAB files, in torchvision's layout. Never downloads."""
import os
from typing import Callable, Optional

import numpy as np

from ._common import ArrayImageDataset, check_split, find_file

SPLITS = ("train", "test", "extra")
LAYOUT = """  <root>/train_32x32.mat
  <root>/test_32x32.mat
  <root>/extra_32x32.mat   (only for split="extra")
each a MATLAB file with X: uint8 [32, 32, 3, N] and y: [N, 1] with labels 1..10 (10 = digit 0)"""


def read_svhn_mat(path: str):
    """``(images uint8 [N, 3, 32, 32], labels int64 [N] in 0..9)`` from one SVHN ``*_32x32.mat`` file.

    The file's label 10 stands for the digit 0 and is mapped to 0 (as torchvision does). Raises ValueError
    naming ``path`` when the file cannot be parsed or its arrays have the wrong shape.
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several types for a damaged file; re-raised with the path
        raise ValueError(f"SVHN: {path} is not a readable MATLAB file ({type(e).__name__}: {e})") from e
    if "X" not in mat or "y" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"SVHN: {path} lacks the variables X and y (found {found})")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise ValueError(f"SVHN: {path}: X is {x.dtype} {x.shape}, expected uint8 [32, 32, 3, N]")
    if y.shape[0] != x.shape[3]:
        raise ValueError(f"SVHN: {path}: X has {x.shape[3]} images but y has {y.shape[0]} labels")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() > 10):
        raise ValueError(f"SVHN: {path}: labels range {y.min()}..{y.max()}, expected 1..10 (10 = digit 0)")
    y[y == 10] = 0
    return x.transpose(3, 2, 0, 1), y  # [H, W, C, N] -> [N, C, H, W]


class SVHN(ArrayImageDataset):
    """Street View House Numbers, 3x32x32, labels 0..9 (train 73,257 / test 26,032 / extra 531,131).

    Args:
        root: folder holding ``{split}_32x32.mat`` (torchvision's layout).
        split: "train", "test" or "extra".
        transform: optional callable applied to each image tensor.

    Items: ``(image float32 [3, 32, 32] in [-1, 1], label int)``. ``.data`` uint8 [N, 3, 32, 32], ``.labels`` [N].
    """

    def __init__(self, root: str, split: str = "train", transform: Optional[Callable] = None):
        check_split("SVHN", split, SPLITS)
        path = find_file("SVHN", f"{split}_32x32.mat", [os.path.join(root, f"{split}_32x32.mat")], LAYOUT)
        self.split = split
        super().__init__(*read_svhn_mat(path), transform)
