"""Evaluation of a trained Method: FID (the digits FID on the embedded data, the Inception FID elsewhere), the
reconstruction MSE, and anomaly detection (AUPRC / AUROC). Sample and data statistics are sharded across ranks and
all-reduced when running data-parallel."""
from __future__ import annotations

import os

import torch

from . import distributed as hdist


def _batches(method, n: int, batch: int, fn, dist_info, seed: int):
    """fn(k) for this rank's share of n items, in batches of at most `batch`; a per-rank seed."""
    share = n // dist_info.world + (1 if dist_info.rank < n % dist_info.world else 0)
    torch.manual_seed(seed + 1000 * dist_info.rank)
    out = []
    done = 0
    while done < share:
        k = min(batch, share - done)
        out.append(fn(k).detach().cpu())
        done += k
    return out


def _data_shard(dataset, n: int, dist_info):
    n = min(n, len(dataset))
    idx = list(range(dist_info.rank, n, dist_info.world))
    return torch.stack([dataset[i][0] for i in idx]) if idx else None


def sample_stats(method, n: int, dist_info, kind: str, fid_weights=None, base=False, seed=0, batch=250):
    """FeatureStats of n generated images (all-reduced)."""
    gen = method.sample_base if base else method.sample
    imgs = _batches(method, n, batch, gen, dist_info, seed)
    return _stats(torch.cat(imgs), kind, fid_weights, method.device, dist_info)


def data_stats(dataset, n: int, dist_info, kind: str, fid_weights=None, device="cpu"):
    return _stats(_data_shard(dataset, n, dist_info), kind, fid_weights, device, dist_info)


def _stats(images, kind, fid_weights, device, dist_info):
    """Feature statistics of this rank's images, summed over the ranks (all-reduced, not gathered)."""
    from . import metrics

    if kind == "digits":
        stats = metrics.digits_stats(images)
    else:
        stats = metrics.inception_stats([images], weights=fid_weights, device=device)
    return stats.all_reduce() if dist_info.enabled else stats


def fid(method, test_set, n: int, dist_info, kind: str, fid_weights=None, base=False, ref_stats=None, seed=0):
    """FID between n samples of the method (or of its Gaussian base) and the test set (or .npz reference stats)."""
    from . import metrics

    s = sample_stats(method, n, dist_info, kind, fid_weights, base, seed)
    if ref_stats is not None:
        mu, sigma = metrics.load_stats(ref_stats)
    else:
        r = data_stats(test_set, n, dist_info, kind, fid_weights, method.device)
        mu, sigma = r.mu, r.sigma
    return metrics.fid_from_stats(s.mu, s.sigma, mu, sigma)


def reconstruction_mse(method, test_set, n: int, dist_info, batch: int = 200) -> float:
    """Mean squared error of reconstruct(x) over the first n test images (pixels in [-1, 1]), all ranks."""
    x = _data_shard(test_set, n, dist_info)
    total, count = 0.0, 0
    if x is not None:
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch].to(method.device)
            total += ((method.reconstruct(xb) - xb) ** 2).sum().item()
            count += xb.numel()
    tot = hdist.all_reduce_mean({"t": total, "c": count}, method.device)
    return tot["t"] / max(1.0, tot["c"])


def anomaly(method, test_set, dist_info, batch: int = 200) -> dict:
    """AUPRC and AUROC of method.anomaly_score on a test set labelled 1 = anomaly (the held-out digit)."""
    from . import metrics

    if dist_info.enabled:
        raise NotImplementedError("anomaly evaluation runs in one process (run `hebm eval` without torchrun)")
    scores, labels = [], []
    for i in range(0, len(test_set), batch):
        items = [test_set[j] for j in range(i, min(len(test_set), i + batch))]
        x = torch.stack([it[0] for it in items]).to(method.device)
        scores.append(method.anomaly_score(x).detach().cpu())
        labels += [int(it[1]) for it in items]
    s = torch.cat(scores)
    return {"auprc": metrics.auprc(s, labels), "auroc": metrics.auroc(s, labels), "n": len(labels),
            "anomalies": int(sum(labels))}


def fid_kind(dataset: str, fid_weights) -> str | None:
    """"digits" for the embedded data; "inception" when weights are available; None otherwise."""
    if dataset == "digits":
        return "digits"
    if fid_weights or os.environ.get("HEBM_FID_WEIGHTS"):
        return "inception"
    return None
