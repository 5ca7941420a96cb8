"""Log-densities of the papers' chains for the generic engine (hebm_ext.langevin): the posterior of a generator
and a data-space EBM. Both are nn.Modules called as ``target(y, t) -> [B]``, so the graph backend sees their
submodules (train/eval switches and replaced parameters force a new capture) and their data buffer (``set_data``
copies a new batch in place: a replay reads it, no new capture).

Section numbers refer to ALGORITHMS.md.
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from .. import ops
from ..nn.prior import LatentEBMPrior
from . import program as prog
from .fused import fused_unsupported_reason
from .generic import in_graph_chain

__all__ = ["GeneratorPosterior", "DataEBMTarget", "generator_posterior", "data_ebm_target"]


def _takes_t(fn) -> bool:
    """Whether fn can be called as fn(y, t)."""
    f = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        inspect.signature(f).bind(None, None)
        return True
    except (TypeError, ValueError):
        return False


def _positive(name: str, v) -> float:
    v = float(v)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return v


# ---------------------------------------------------------------------------------------------------------------
# the prior gradient of a LatentEBMPrior from ONE step of the fused op

def _single_step(t: int) -> tuple[list, list]:
    """(coefficients, K) of a schedule whose only step is at timestep t and returns grad log p~ (h = 1, n = 0,
    c1 = c2 = 0, alpha = d = 1): the fused op then computes exactly the prior's gradient."""
    K = [0] * t + [1]
    return [1.0, 0.0, 0.0, 0.0, 1.0, 1.0] * (t + 1), K


class _FusedPriorLogProb(torch.autograd.Function):
    """log p~(z) = -sum_h E_h(z, t) + log p_base(z) with its gradient from hebm::latent_langevin (one step)."""

    @staticmethod
    def forward(ctx, z, prior, t):
        params, program = prog.packed(prior, z.dtype, z.device)
        coeffs, K = _single_step(t)
        empty = z.new_empty((0,))
        rng = z.new_zeros((2,), dtype=torch.int64)  # n = 0: the noise term vanishes
        grad, tr = ops.latent_langevin(z.detach(), empty, params, program, coeffs, K,
                                       z.new_empty((0,), dtype=torch.int64), empty, rng, True)
        ctx.save_for_backward(grad)
        return -tr[0, :, 0] + prior.base_log_prob(z.detach())

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad_out.unsqueeze(1) * grad, None, None


def _prior_log_prob_fn(prior, fused_prior):
    """(z, t) -> log p(z) [B] for ``prior``: None = N(0, I); an object with log_prob(z[, t]); or one with
    energy(z[, t]) and base_log_prob(z)."""
    if prior is None:
        if fused_prior:
            raise ValueError("fused_prior=True needs a LatentEBMPrior, prior is None")
        return lambda z, t: -0.5 * (z * z).reshape(z.shape[0], -1).sum(1)
    if fused_prior and not isinstance(prior, LatentEBMPrior):
        raise ValueError(f"fused_prior=True needs a hebm_ext.LatentEBMPrior, prior is a {type(prior).__name__}")
    if hasattr(prior, "log_prob") and callable(prior.log_prob):
        lp = prior.log_prob
        plain = (lambda z, t: lp(z, t)) if _takes_t(lp) else (lambda z, t: lp(z))
    elif hasattr(prior, "energy") and hasattr(prior, "base_log_prob"):
        en = prior.energy
        energy = (lambda z, t: en(z, t)) if _takes_t(en) else (lambda z, t: en(z))
        plain = lambda z, t: -energy(z, t) + prior.base_log_prob(z)  # noqa: E731
    else:
        raise TypeError(f"prior must be None, a hebm_ext.LatentEBMPrior, or an object with log_prob(z) (or energy(z) "
                        f"and base_log_prob(z)), got {type(prior).__name__}")
    if not isinstance(prior, LatentEBMPrior) or fused_prior is False:
        return plain

    def log_prob(z, t):
        capturing = in_graph_chain() or (z.is_cuda and torch.cuda.is_current_stream_capturing())
        reason = fused_unsupported_reason(prior, z)
        if fused_prior and (reason or capturing):
            raise ValueError("fused_prior=True: " + (reason or "the fused prior gradient reads parameters packed "
                             "before the capture, which a CUDA graph would not refresh: use backend='eager' or "
                             "fused_prior=None"))
        if reason is None and not capturing:
            return _FusedPriorLogProb.apply(z, prior, int(t))
        return plain(z, t)

    return log_prob


# ---------------------------------------------------------------------------------------------------------------
# targets

class GeneratorPosterior(nn.Module):
    """Posterior of a generator's latent given data x (ALGORITHMS.md 1.2, 5.3, 9):

        log p(z | x) + const = -(mse_factor / sigma^2) * ||x - g(z)||^2 + log p(z)       per chain

    mse_factor = 0.5: LEBM's 1/(2 sigma^2) (sigma = 0.3); mse_factor = 1.0: dual-MCMC's z-chain, whose summed
    squared error has no 1/2 (an effective likelihood std of sigma / sqrt(2)).

    generator: g, a module (or callable) mapping z [B, ...] to x-hat of x's shape. For a multi-layer latent
    y = concat(layers) whose generator reads only some layers, wrap the slicing in a small nn.Module so that the
    graph backend can see it. x: the data batch [B, ...] (copied into a buffer; ``set_data`` replaces it in place).
    prior: None (N(0, I)), a LatentEBMPrior (-E(z, t) + its Gaussian base), or any object with ``log_prob(z)`` /
    ``log_prob(z, t)`` (or ``energy`` + ``base_log_prob``), e.g. a hierarchical Gaussian prior.
    fused_prior: for a LatentEBMPrior, take the prior's value and gradient from ONE step of the fused op
    (hebm::latent_langevin) instead of autograd through its heads. None: when the fused kernels support the prior,
    dtype and device, and not for the graph backend (a replay would not refresh the packed parameters; the graph
    removes the launch overhead anyway); True: always (an error where it cannot); False: never.

    forward(z, t=0) -> [B].
    """

    def __init__(self, generator, x: torch.Tensor, prior=None, sigma: float = 0.3, mse_factor: float = 0.5,
                 fused_prior: bool | None = None):
        super().__init__()
        if not callable(generator):
            raise TypeError(f"generator must be a module or callable z -> x, got {type(generator).__name__}")
        if not torch.is_tensor(x) or x.dim() < 1:
            got = list(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must be a data tensor [B, ...], got {got}")
        if fused_prior not in (None, True, False):
            raise ValueError(f"fused_prior must be None, True or False, got {fused_prior!r}")
        self.generator = generator
        self.prior = prior
        self.sigma = _positive("sigma", sigma)
        self.mse_factor = _positive("mse_factor", mse_factor)
        self.fused_prior = fused_prior
        self._prior_log_prob = _prior_log_prob_fn(prior, fused_prior)
        self.register_buffer("x", x.detach().clone(), persistent=False)

    def set_data(self, x: torch.Tensor) -> "GeneratorPosterior":
        """Copy a new data batch into the buffer (same shape, dtype and device): captured graphs stay valid."""
        if not torch.is_tensor(x) or x.shape != self.x.shape or x.dtype != self.x.dtype or x.device != self.x.device:
            got = (list(x.shape), x.dtype, x.device) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must match the current data ({list(self.x.shape)}, {self.x.dtype}, {self.x.device}); "
                             f"got {got} (build a new target for a new shape)")
        self.x.copy_(x)
        return self

    def forward(self, z: torch.Tensor, t: int = 0) -> torch.Tensor:
        x_hat = self.generator(z)
        if x_hat.shape != self.x.shape:
            raise ValueError(f"generator(z) has shape {list(x_hat.shape)} but x has shape {list(self.x.shape)} "
                             f"(z: {list(z.shape)})")
        sq = ((x_hat - self.x) ** 2).reshape(z.shape[0], -1).sum(1)
        return -(self.mse_factor / self.sigma ** 2) * sq + self._prior_log_prob(z, t)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, mse_factor={self.mse_factor}, prior={type(self.prior).__name__}"


class DataEBMTarget(nn.Module):
    """Data-space EBM target log p~(x) = -E(x) / temperature (ALGORITHMS.md 5.1, 5.3); ``ebm(x)`` (or ``ebm(x, t)``)
    returns energies [B].

    Decoupled noise (dual-MCMC's x-chain): with ``LangevinSchedule.decoupled(K, s, n)`` and temperature 1 the step
    is x <- x - 0.5 s^2 dE/dx + n xi, whose stationary law is exp(-E / tau) with tau = (n/s)^2 (CIFAR-10:
    s = 0.5, n = 1e-3, tau = 4e-6). The same chain is ``LangevinSchedule.lebm(K, step_size=n)`` on this target with
    temperature = (n/s)^2.

    forward(x, t=0) -> [B].
    """

    def __init__(self, ebm, temperature: float = 1.0):
        super().__init__()
        if not callable(ebm):
            raise TypeError(f"ebm must be a module or callable x -> energy [B], got {type(ebm).__name__}")
        self.ebm = ebm
        self.temperature = _positive("temperature", temperature)
        self._with_t = _takes_t(ebm)

    def forward(self, x: torch.Tensor, t: int = 0) -> torch.Tensor:
        e = self.ebm(x, t) if self._with_t else self.ebm(x)
        return -e if self.temperature == 1.0 else -e / self.temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


def generator_posterior(generator, x, prior=None, sigma: float = 0.3, mse_factor: float = 0.5,
                        fused_prior: bool | None = None) -> GeneratorPosterior:
    """log p(z | x) of a generator with Gaussian likelihood N(g(z), sigma^2) and any prior of the library:
    see GeneratorPosterior. LEBM: ``generator_posterior(G, x, prior)`` with LangevinSchedule.lebm(20, 0.1);
    dual-MCMC z-chain: ``generator_posterior(G, x, mse_factor=1.0)`` with LangevinSchedule.decoupled(10, 0.1, 0.1)."""
    return GeneratorPosterior(generator, x, prior=prior, sigma=sigma, mse_factor=mse_factor, fused_prior=fused_prior)


def data_ebm_target(ebm, temperature: float = 1.0) -> DataEBMTarget:
    """-E(x) / temperature for a data-space EBM (see DataEBMTarget; dual-MCMC's x-chain:
    ``langevin(data_ebm_target(E), G(z), LangevinSchedule.decoupled(30, 0.5, 1e-3))``)."""
    return DataEBMTarget(ebm, temperature)
