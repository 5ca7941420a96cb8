"""The embedded default data set: scikit-learn's 8x8 handwritten digits (bundled with scikit-learn, no download)."""
from functools import lru_cache
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import check_split

SPLITS = ("train", "test")
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@lru_cache(maxsize=1)
def _load():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float64), d.target.astype(np.int64)


def split_indices(split: str) -> np.ndarray:
    """Sorted indices into ``sklearn.datasets.load_digits()`` of one split.

    The split is a fixed permutation ``np.random.RandomState(SPLIT_SEED).permutation(N)`` (N = 1797; the legacy
    RandomState stream is frozen by NumPy, so the split never changes); its first ``round(0.2 N)`` = 359 entries
    are "test", the other 1438 "train".
    """
    check_split("Digits", split, SPLITS)
    n = _load()[0].shape[0]
    perm = np.random.RandomState(SPLIT_SEED).permutation(n)
    n_test = int(round(TEST_FRACTION * n))
    return np.sort(perm[:n_test] if split == "test" else perm[n_test:])


class Digits(Dataset):
    """scikit-learn's ``load_digits()``: 1797 grey 8x8 digits, 1 channel, labels 0..9.

    Args:
        root: ignored (the data ships with scikit-learn); accepted so that every reader takes ``(root, split)``.
        split: "train" (1438 images) or "test" (359), a fixed deterministic split (see ``split_indices``).
        transform: optional callable applied to each image tensor.

    Items are ``(image, label)``: image float32 [1, 8, 8] in [-1, 1] (pixel values 0..16 mapped by ``x / 8 - 1``,
    the 8x8 analogue of the papers' [-1, 1] scaling), label an int. ``.images`` is the whole split as a float32
    tensor [N, 1, 8, 8], ``.labels`` a long tensor [N], ``.indices`` the rows of ``load_digits()``.
    """

    def __init__(self, root=None, split: str = "train", transform: Optional[Callable] = None):
        if isinstance(root, str) and root in SPLITS:
            # Digits("test") would otherwise silently give the train split.
            raise ValueError(f"Digits: argument `root` is ignored, but got {root!r}, a split name; "
                             f"use Digits(split={root!r})")
        check_split("Digits", split, SPLITS)
        images, targets = _load()
        self.split = split
        self.indices = split_indices(split)
        self.images = torch.from_numpy(images[self.indices] / 8.0 - 1.0).to(torch.float32).unsqueeze(1)
        self.labels = torch.from_numpy(targets[self.indices])
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        x = self.images[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index])
