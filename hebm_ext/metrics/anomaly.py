"""Anomaly-detection metrics and the MNIST held-out-digit protocol (ALGORITHMS.md 1.4).

Convention: label 1 = anomaly, 0 = normal; a higher score means more anomalous (in the LEBM lineage the score is
the negative log joint at posterior samples, e.g. DAMC's ``sum (x_hat - x)^2 + E(z) + ||z||^2 / 2``).
"""
from typing import Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset


def _scores_labels(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if s.ndim != 1:
        raise ValueError(f"argument `scores` must be one-dimensional [N], got shape {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"argument `labels` must have the shape of `scores` {s.shape}, got {y.shape}")
    if not np.isfinite(s).all():
        raise ValueError("argument `scores` contains NaN or Inf")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"argument `labels` must hold only 0 (normal) and 1 (anomaly), got values {sorted(values)}")
    if values != {0, 1}:
        raise ValueError(f"argument `labels` must contain both classes 0 and 1 for the metric to be defined, "
                         f"got only {sorted(values)}")
    return s, y.astype(np.int64)


def auprc(scores, labels, method: str = "average_precision") -> float:
    """Area under the precision-recall curve with the anomalies (label 1) as the positive class.

    Args:
        scores: [N] anomaly scores, higher = more anomalous.
        labels: [N] 1 for anomalies, 0 for normal samples; both classes must occur.
        method: "average_precision" (default; scikit-learn ``average_precision_score``, the step-wise sum
            sum_n (R_n - R_{n-1}) P_n) or "trapezoid" (``auc(recall, precision)`` over ``precision_recall_curve``,
            what DAMC's eval code computes; slightly optimistic, it interpolates linearly).

    The metric of the MNIST held-out-digit tables in this line of work (LEBM, ICCV-23, DAMC).
    """
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve

    s, y = _scores_labels(scores, labels)
    if method == "average_precision":
        return float(average_precision_score(y, s))
    if method == "trapezoid":
        precision, recall, _ = precision_recall_curve(y, s)
        return float(auc(recall, precision))
    raise ValueError(f"auprc: argument `method` must be 'average_precision' or 'trapezoid', got {method!r}")


def auroc(scores, labels) -> float:
    """Area under the ROC curve (scikit-learn ``roc_auc_score``); ``scores`` [N] higher = more anomalous,
    ``labels`` [N] 1 = anomaly, 0 = normal, both classes present."""
    from sklearn.metrics import roc_auc_score

    s, y = _scores_labels(scores, labels)
    return float(roc_auc_score(y, s))


class RelabeledSubset(Dataset):
    """Items ``indices[i]`` of the datasets ``parts`` (concatenated in order), each returned as
    ``(image, labels[i])``; ``.indices`` [M] and ``.labels`` [M] (long) are tensors."""

    def __init__(self, parts: Sequence[Dataset], indices: np.ndarray, labels: np.ndarray):
        self.parts = list(parts)
        self._offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __getitem__(self, i: int):
        g = int(self.indices[i])
        k = int(np.searchsorted(self._offsets, g, side="right")) - 1
        return self.parts[k][g - self._offsets[k]][0], int(self.labels[i])


def _digit_labels(ds: Dataset) -> np.ndarray:
    labels = getattr(ds, "labels", None)
    if labels is None:  # generic dataset: read the labels item by item
        labels = [ds[i][1] for i in range(len(ds))]
    return np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64).reshape(-1)


def heldout_digit_split(datasets: Union[Dataset, Sequence[Dataset]], heldout_digit: int,
                        train_fraction: float = 0.8, seed: int = 42) -> Tuple[RelabeledSubset, RelabeledSubset]:
    """The MNIST anomaly protocol with one held-out digit (Zenati et al. 2018, used by MEG, LEBM and DAMC;
    ALGORITHMS.md 1.4), reproducing its reference code's random split:

    1. pool = ``datasets`` concatenated in order (the reference pools MNIST train then test: pass
       ``[MNIST(root, "train"), MNIST(root, "test")]``, 70,000 images);
    2. normal = the pool's images whose digit != ``heldout_digit``; with ``rng = np.random.RandomState(seed)``
       they are shuffled by ``rng.permutation``;
    3. train = the first ``int(train_fraction * #normal)`` shuffled normal images, all labelled 0;
    4. test = the remaining normal images followed by every held-out-digit image, shuffled by a second
       ``rng.permutation``, labelled 1 for the held-out digit (anomaly) and 0 otherwise.

    Returns ``(train, test)`` datasets of ``(image, anomaly_label)``; ``.indices`` index into the pool. Digit
    labels are read from each dataset's ``.labels`` when it has one, else item by item.
    """
    parts = [datasets] if isinstance(datasets, Dataset) else list(datasets)
    if not parts:
        raise ValueError("heldout_digit_split: argument `datasets` is empty")
    digits = np.concatenate([_digit_labels(p) for p in parts])
    if heldout_digit not in set(digits.tolist()):
        raise ValueError(f"heldout_digit_split: argument `heldout_digit`={heldout_digit!r} does not occur in the "
                         f"labels (found {sorted(set(digits.tolist()))})")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"heldout_digit_split: argument `train_fraction` must be in (0, 1), got {train_fraction}")
    rng = np.random.RandomState(seed)
    normal = np.flatnonzero(digits != heldout_digit)
    normal = normal[rng.permutation(normal.shape[0])]
    n_train = int(normal.shape[0] * train_fraction)
    test = np.concatenate([normal[n_train:], np.flatnonzero(digits == heldout_digit)])
    test = test[rng.permutation(test.shape[0])]
    train = normal[:n_train]
    return (RelabeledSubset(parts, train, np.zeros(train.shape[0], dtype=np.int64)),
            RelabeledSubset(parts, test, (digits[test] == heldout_digit).astype(np.int64)))
