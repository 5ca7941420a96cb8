"""Frechet Inception Distance: streaming feature statistics, the ``.npz`` statistics files, and the distance.

FID (Heusel et al. 2017) between Gaussians N(mu1, S1) and N(mu2, S2) fitted to two feature sets:

    FID = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))

computed in float64 with ``scipy.linalg.sqrtm`` exactly as pytorch-fid's ``calculate_frechet_distance``
(including its eps * I fallback and its imaginary-part check), so numbers are comparable with pytorch-fid.
"""
import os
import warnings
from typing import Iterable, Optional

import numpy as np
import torch


class FeatureStats:
    """Running float64 statistics of feature vectors: count ``n``, ``sum`` [D] and ``sum of outer products`` [D, D].

    ``update(features [N, D])`` adds a batch; ``mu`` [D] and ``sigma`` [D, D] (unbiased, divisor n - 1, as
    ``np.cov(rowvar=False)`` and pytorch-fid) are float64 NumPy arrays. Statistics from disjoint parts combine
    exactly: ``merge`` adds another object's accumulators, ``all_reduce`` sums them over torch.distributed ranks,
    so sharded evaluation gives the single-process statistics (up to float64 summation order).

    Args:
        dim: the feature dimension D.
        device: where the accumulators live (default CPU); batches are moved there.
    """

    def __init__(self, dim: int, device=None):
        if int(dim) < 1:
            raise ValueError(f"FeatureStats: argument `dim` must be a positive int, got {dim!r}")
        self.dim = int(dim)
        self.n = 0
        self.sum = torch.zeros(self.dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=device)

    @classmethod
    def from_features(cls, features, device=None) -> "FeatureStats":
        """Statistics of one feature matrix [N, D] (tensor or array)."""
        features = torch.as_tensor(features)
        if features.dim() != 2:
            raise ValueError(f"FeatureStats.from_features: argument `features` must be [N, D], got "
                             f"{tuple(features.shape)}")
        stats = cls(features.shape[1], device=device)
        stats.update(features)
        return stats

    def update(self, features) -> "FeatureStats":
        """Add a batch of features [N, D] (torch tensor or NumPy array, any float dtype). Returns self."""
        f = torch.as_tensor(features)
        if f.dim() != 2 or f.shape[1] != self.dim:
            raise ValueError(f"FeatureStats.update: argument `features` must be [N, {self.dim}], got {tuple(f.shape)}")
        f = f.detach().to(device=self.sum.device, dtype=torch.float64)
        if not torch.isfinite(f).all():
            raise ValueError("FeatureStats.update: argument `features` contains NaN or Inf")
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Add the accumulators of ``other`` (statistics of a disjoint set of features). Returns self."""
        if not isinstance(other, FeatureStats) or other.dim != self.dim:
            raise ValueError(f"FeatureStats.merge: argument `other` must be FeatureStats of dim {self.dim}, got "
                             f"{type(other).__name__} of dim {getattr(other, 'dim', None)}")
        self.n += other.n
        self.sum += other.sum.to(self.sum.device)
        self.outer += other.outer.to(self.outer.device)
        return self

    def all_reduce(self, group=None) -> "FeatureStats":
        """Sum ``n``, ``sum`` and ``outer`` over the ranks of ``group`` (torch.distributed all-reduce, one float64
        buffer; on the NCCL backend through the current CUDA device). Afterwards every rank holds the statistics
        of all ranks' features. Call it once: a second call would count everything again. Returns self."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("FeatureStats.all_reduce: torch.distributed is not initialised "
                               "(call torch.distributed.init_process_group first)")
        device = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl"
                  else torch.device("cpu"))
        home = self.sum.device
        buf = torch.cat([torch.tensor([float(self.n)], dtype=torch.float64, device=home), self.sum,
                         self.outer.reshape(-1)]).to(device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
        buf = buf.to(home)
        self.n = int(round(buf[0].item()))  # float64 counts are exact below 2**53
        self.sum = buf[1:1 + self.dim].clone()
        self.outer = buf[1 + self.dim:].reshape(self.dim, self.dim).clone()
        return self

    @property
    def mu(self) -> np.ndarray:
        """Mean [D], float64."""
        if self.n < 1:
            raise ValueError("FeatureStats.mu: no features were added")
        return (self.sum / self.n).cpu().numpy()

    @property
    def sigma(self) -> np.ndarray:
        """Unbiased covariance [D, D] (divisor n - 1), float64."""
        if self.n < 2:
            raise ValueError(f"FeatureStats.sigma: needs at least 2 feature vectors, got {self.n}")
        mean_outer = torch.outer(self.sum, self.sum) / self.n
        return ((self.outer - mean_outer) / (self.n - 1)).cpu().numpy()

    def save(self, path: str) -> None:
        """Write ``mu`` and ``sigma`` to ``path`` in the standard ``.npz`` format (see ``save_stats``)."""
        save_stats(path, self.mu, self.sigma)


def _as_mu_sigma(mu, sigma, mu_name: str, sigma_name: str):
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1:
        raise ValueError(f"argument `{mu_name}` must be a vector [D], got shape {mu.shape}")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"argument `{sigma_name}` must be [D, D] = {(mu.shape[0],) * 2} to match `{mu_name}`, "
                         f"got {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"arguments `{mu_name}` / `{sigma_name}` contain NaN or Inf")
    return mu, sigma


def fid_from_stats(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance ``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 @ sigma2))`` in float64.

    Args:
        mu1, mu2: means [D]; sigma1, sigma2: covariances [D, D] (e.g. ``FeatureStats.mu`` / ``.sigma`` or the
            ``mu`` / ``sigma`` of a pytorch-fid ``.npz``).
        eps: pytorch-fid's fallback: when ``sqrtm(sigma1 @ sigma2)`` is not finite (singular product), both
            covariances get ``eps * I`` added (a warning says so) and the square root is taken again.

    Raises ValueError when shapes disagree, and when the square root has an imaginary diagonal component larger
    than 1e-3 (pytorch-fid's check; smaller imaginary parts, numerical noise, are dropped).
    """
    from scipy import linalg

    mu1, sigma1 = _as_mu_sigma(mu1, sigma1, "mu1", "sigma1")
    mu2, sigma2 = _as_mu_sigma(mu2, sigma2, "mu2", "sigma2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"fid_from_stats: `mu1` has {mu1.shape[0]} dims but `mu2` has {mu2.shape[0]}")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"fid_from_stats: sqrtm(sigma1 @ sigma2) is not finite (singular product); adding {eps} * I "
                      "to both covariances, as pytorch-fid does", RuntimeWarning, stacklevel=2)
        offset = np.eye(mu1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag))
        if imag > 1e-3:
            raise ValueError(f"fid_from_stats: sqrtm(sigma1 @ sigma2) has an imaginary component {imag:.3g} > 1e-3; "
                             "the covariances are not valid (not positive semi-definite?)")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def save_stats(path: str, mu, sigma) -> None:
    """Write ``mu`` [D] and ``sigma`` [D, D] as float64 to the ``.npz`` file ``path`` (keys ``mu`` and ``sigma``,
    pytorch-fid's format). The file is written at exactly ``path`` (no ``.npz`` is appended)."""
    mu, sigma = _as_mu_sigma(mu, sigma, "mu", "sigma")
    with open(path, "wb") as f:
        np.savez(f, mu=mu, sigma=sigma)


def load_stats(path: str):
    """``(mu [D], sigma [D, D])`` as float64 from a ``.npz`` file with keys ``mu`` and ``sigma`` (pytorch-fid's
    format). FileNotFoundError when missing; ValueError naming the file when it is not such a file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FID statistics file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # a damaged or non-npz file raises several types; re-raised with the path
        raise ValueError(f"FID statistics file {path} is not a readable .npz ({type(e).__name__}: {e})") from e
    if not {"mu", "sigma"} <= set(arrays):
        raise ValueError(f"FID statistics file {path} must hold arrays 'mu' and 'sigma', found {sorted(arrays)}")
    mu, sigma = arrays["mu"], arrays["sigma"]
    return _as_mu_sigma(mu, sigma, "mu", "sigma")


@torch.no_grad()
def feature_stats(extractor, batches: Iterable, device=None) -> FeatureStats:
    """Run ``extractor`` (a module mapping images [B, ...] to features [B, D]) over ``batches`` and accumulate
    float64 ``FeatureStats``. ``batches``: an iterable of image tensors, or of ``(images, labels)`` pairs as a
    DataLoader over the package's datasets yields. ``device``: where the extractor runs (default: the device of
    its parameters, else CPU)."""
    if device is None:
        p = next(iter(extractor.parameters()), None) if isinstance(extractor, torch.nn.Module) else None
        device = p.device if p is not None else torch.device("cpu")
    stats: Optional[FeatureStats] = None
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        f = extractor(images.to(device))
        if stats is None:
            stats = FeatureStats(f.shape[1], device=f.device)
        stats.update(f)
    if stats is None:
        raise ValueError("feature_stats: argument `batches` yielded no batch")
    return stats


def inception_stats(batches: Iterable, weights: Optional[str] = None, input_range=(-1.0, 1.0),
                    device=None) -> FeatureStats:
    """``FeatureStats`` of FID Inception pool3 features [N, 2048] of ``batches`` (see ``feature_stats``); the
    network's weights come from ``weights`` or ``$HEBM_FID_WEIGHTS`` (``inception.resolve_weights_path``).
    ``input_range``: the range of the images, (-1, 1) for this package's data, (0, 1) for pytorch-fid's."""
    from .inception import load_fid_inception

    model = load_fid_inception(weights, input_range, device=device)
    return feature_stats(model, batches, device=device)
