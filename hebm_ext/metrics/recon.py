"""Reconstruction error of an encoder/posterior-sampler + generator pair."""
import torch


def reconstruction_mse(x: torch.Tensor, x_hat: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per-pixel mean squared error between images ``x`` and reconstructions ``x_hat``, both [N, C, H, W].

    ``reduction="mean"``: the mean of ``(x - x_hat)^2`` over all N*C*H*W entries (a 0-d tensor), the per-pixel
    convention of the MSE columns in this line of work (LEBM / ICCV-23 SVHN 0.008, dual-MCMC CIFAR-10 0.0072,
    ALGORITHMS.md 1.4 and 5.5); ``"none"``: the per-image mean over C*H*W, a tensor [N].

    The value is in the units of the inputs: this package's data is in [-1, 1]; for [0, 1] units divide by 4.
    [UNVERIFIED] which of the two ranges the papers' tables used: their training code works in [-1, 1], the
    evaluation scripts were not available.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(x_hat, torch.Tensor):
        raise TypeError(f"reconstruction_mse: arguments `x` and `x_hat` must be tensors, got "
                        f"{type(x).__name__} and {type(x_hat).__name__}")
    if x.shape != x_hat.shape or x.dim() < 2:
        raise ValueError(f"reconstruction_mse: `x` and `x_hat` must have the same shape [N, ...], got "
                         f"{tuple(x.shape)} and {tuple(x_hat.shape)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reconstruction_mse: argument `reduction` must be 'mean' or 'none', got {reduction!r}")
    err = (x - x_hat).pow(2)
    return err.mean() if reduction == "mean" else err.flatten(1).mean(1)
