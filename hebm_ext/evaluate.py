"""Evaluation of a trained Method: FID (the digits FID on the embedded data, the Inception FID elsewhere), the
reconstruction MSE, and anomaly detection (AUPRC / AUROC). Sample and data statistics are sharded across ranks and
all-reduced when running data-parallel."""
from __future__ import annotations

import os

import torch

from . import distributed as hdist


def _bar(total: int, desc, dist_info):
    """A tqdm progress bar on rank 0 when desc is given (None: no bar)."""
    if not desc or not dist_info.main:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, leave=False)


def _batches(method, n: int, batch: int, fn, dist_info, seed: int, progress=None):
    """fn(k) for this rank's share of n items, in batches of at most `batch`; a per-rank seed."""
    share = n // dist_info.world + (1 if dist_info.rank < n % dist_info.world else 0)
    torch.manual_seed(seed + 1000 * dist_info.rank)
    out = []
    done = 0
    bar = _bar(share, progress, dist_info)
    while done < share:
        k = min(batch, share - done)
        out.append(fn(k).detach().cpu())
        done += k
        if bar is not None:
            bar.update(k)
    if bar is not None:
        bar.close()
    return out


def _data_shard(dataset, n: int, dist_info):
    n = min(n, len(dataset))
    idx = list(range(dist_info.rank, n, dist_info.world))
    return torch.stack([dataset[i][0] for i in idx]) if idx else None


def sample_stats(method, n: int, dist_info, kind: str, fid_weights=None, base=False, seed=0, batch=250,
                 progress=None):
    """FeatureStats of n generated images (all-reduced)."""
    gen = method.sample_base if base else method.sample
    imgs = _batches(method, n, batch, gen, dist_info, seed, progress)
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


def fid(method, test_set, n: int, dist_info, kind: str, fid_weights=None, base=False, ref_stats=None, seed=0,
        progress=None):
    """FID between n samples of the method (or of its Gaussian base) and the test set (or .npz reference stats)."""
    from . import metrics

    s = sample_stats(method, n, dist_info, kind, fid_weights, base, seed, progress=progress)
    if ref_stats is not None:
        mu, sigma = metrics.load_stats(ref_stats)
    else:
        r = data_stats(test_set, n, dist_info, kind, fid_weights, method.device)
        mu, sigma = r.mu, r.sigma
    return metrics.fid_from_stats(s.mu, s.sigma, mu, sigma)


def reconstruction_mse(method, test_set, n: int, dist_info, batch: int = 200, seed=None, progress=None) -> float:
    """Mean squared error of reconstruct(x) over the first n test images (pixels in [-1, 1]), all ranks; seed: the
    posterior chains' own (per rank), so that the value does not depend on what ran before."""
    x = _data_shard(test_set, n, dist_info)
    if seed is not None:
        torch.manual_seed(seed + 1000 * dist_info.rank)
    total, count = 0.0, 0
    if x is not None:
        bar = _bar(x.shape[0], progress, dist_info)
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch].to(method.device)
            total += ((method.reconstruct(xb) - xb) ** 2).sum().item()
            count += xb.numel()
            if bar is not None:
                bar.update(xb.shape[0])
        if bar is not None:
            bar.close()
    tot = hdist.all_reduce_mean({"t": total, "c": count}, method.device)
    return tot["t"] / max(1.0, tot["c"])


def anomaly(method, test_set, dist_info, batch: int = 200, progress=None) -> dict:
    """AUPRC and AUROC of method.anomaly_score on a test set labelled 1 = anomaly (the held-out digit)."""
    from . import metrics

    if dist_info.enabled:
        raise NotImplementedError("anomaly evaluation runs in one process (run `hebm eval` without torchrun)")
    scores, labels = [], []
    bar = _bar(len(test_set), progress, dist_info)
    for i in range(0, len(test_set), batch):
        items = [test_set[j] for j in range(i, min(len(test_set), i + batch))]
        x = torch.stack([it[0] for it in items]).to(method.device)
        scores.append(method.anomaly_score(x).detach().cpu())
        labels += [int(it[1]) for it in items]
        if bar is not None:
            bar.update(len(items))
    if bar is not None:
        bar.close()
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


def standard_metrics(method, test_set, dist_info, kind, n_fid: int, n_mse: int, seed: int, fid_weights=None,
                     gaussian=False, ref_stats=None, fid_=True, mse=True, progress=False) -> dict:
    """The metrics of a run, as the trainer logs them (metrics.json) and `hebm eval` recomputes them:
    {"step", "digits_fid" | "fid" (n_fid samples against the test set; with gaussian=True also the Gaussian-prior
    ablation "..._gaussian_prior"), "mse" (reconstruction of the first n_mse test images)}. The samples draw from
    seed + 7, the posterior chains of the reconstructions from seed + 13, so each value depends only on the
    checkpoint, the counts and the seed."""
    out = {"step": method.step}
    if fid_ and kind:
        name = "digits_fid" if kind == "digits" else "fid"
        out[name] = fid(method, test_set, n_fid, dist_info, kind, fid_weights, ref_stats=ref_stats, seed=seed + 7,
                        progress="FID: samples" if progress else None)
        if gaussian:
            out[name + "_gaussian_prior"] = fid(method, test_set, n_fid, dist_info, kind, fid_weights, base=True,
                                                ref_stats=ref_stats, seed=seed + 7,
                                                progress="FID: Gaussian-prior samples" if progress else None)
    if mse:
        out["mse"] = reconstruction_mse(method, test_set, n_mse, dist_info, seed=seed + 13,
                                        progress="MSE: reconstructions" if progress else None)
    return out
