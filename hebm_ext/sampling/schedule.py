"""LangevinSchedule: the per-timestep arrays of THE update rule, and the papers' presets.

For timestep t = T-1 ... 0, K_t steps of

    y <- c1_t * y + c2_t * y_cond + h_t * grad_y log p~_t(y) + n_t * xi,      xi ~ N(0, I)
    log p~_t(y) = -alpha_t * sum_h E_h(z, t) + log p_base(y)

then y <- d_t * y, and y_cond for the next timestep is that y (ARCHITECTURE.md, "The two sampler tiers").
The base density belongs to the prior (its gradient is in grad log p~); c1 and c2 carry only a recovery-likelihood
kernel. The formulas of every preset are in ALGORITHMS.md (sections 1.2, 2.1-2.2, 6.2-6.3, 9, 10.3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

FIELDS = ("h", "n", "c1", "c2", "alpha", "d")  # the order of the kernels' coefficient rows


def diffusion_schedule(T: int) -> dict:
    """Gao et al.'s ``get_sigma_schedule`` (ALGORITHMS.md 2.1), float64, arrays of length T+1:
    a_s, sigmas, a_s_cum, sigmas_cum, a_s_prev, is_recovery."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise ValueError(f"T (number of diffusion timesteps) must be an integer >= 2, got {T!r}")
    if 2 * (T - 1) > 1000:
        raise ValueError(f"T must be at most 501 for the 1000-step base schedule, got {T}")
    betas = np.append(np.linspace(1e-4, 0.02, 1000, dtype=np.float64), 1.0)
    sqrt_alphas = np.sqrt(1.0 - betas)
    idx = np.concatenate([np.arange(T) * (1000 // ((T - 1) * 2)), [999]]).astype(np.int64)
    a_s = np.empty(T + 1)
    a_s[0] = np.prod(sqrt_alphas[: idx[0] + 1])
    for i in range(1, T + 1):
        a_s[i] = np.prod(sqrt_alphas[idx[i - 1] + 1: idx[i] + 1])
    sigmas = np.sqrt(1.0 - a_s ** 2)
    a_s_cum = np.cumprod(a_s)
    sigmas_cum = np.sqrt(1.0 - a_s_cum ** 2)
    a_s_prev = a_s.copy()
    a_s_prev[-1] = 1.0
    is_recovery = np.ones(T + 1)
    is_recovery[-1] = 0.0
    return dict(a_s=a_s, sigmas=sigmas, a_s_cum=a_s_cum, sigmas_cum=sigmas_cum, a_s_prev=a_s_prev,
                is_recovery=is_recovery, idx=idx)


def _tuple(name, values, T, kind=float):
    vals = tuple(kind(v) for v in values)
    if len(vals) != T:
        raise ValueError(f"schedule field {name!r} has {len(vals)} entries, expected one per timestep (T={T})")
    return vals


@dataclass(frozen=True)
class LangevinSchedule:
    """Per-timestep arrays (index t = 0..T-1, run from T-1 down to 0).

    K: steps; h: gradient step; n: noise std; c1, c2: weights of y and y_cond; alpha: energy scale; d: the scale
    applied after the timestep. ``reference_sigma``: the std of the Gaussian base the preset was derived for
    (sample_prior checks it against a Gaussian-base prior; None = no assumption). ``name``: the preset.
    """

    K: tuple
    h: tuple
    n: tuple
    c1: tuple
    c2: tuple
    alpha: tuple
    d: tuple
    reference_sigma: float | None = None
    name: str = "custom"
    extras: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        K = tuple(self.K)
        T = len(K)
        if T < 1:
            raise ValueError("a schedule needs at least one timestep (K is empty)")
        if T > 64:
            raise ValueError(f"at most 64 timesteps are supported, got {T}")
        for i, k in enumerate(K):
            if isinstance(k, bool) or int(k) != k or k < 0:
                raise ValueError(f"K[{i}] must be a non-negative integer, got {k!r}")
        object.__setattr__(self, "K", tuple(int(k) for k in K))
        for f in FIELDS:
            vals = _tuple(f, getattr(self, f), T)
            if not all(math.isfinite(v) for v in vals):
                raise ValueError(f"schedule field {f!r} must be finite, got {vals}")
            object.__setattr__(self, f, vals)

    # ------------------------------------------------------------------ shape
    @property
    def T(self) -> int:
        return len(self.K)

    @property
    def total_steps(self) -> int:
        """Steps of the full annealed program (sum_t K_t): the length S of an explicit noise tensor."""
        return sum(self.K)

    @property
    def max_steps(self) -> int:
        """max_t K_t: the noise length when every chain runs only its own timestep."""
        return max(self.K)

    def coefficients(self) -> list:
        """Flat [T x 6] list in the kernels' order (h, n, c1, c2, alpha, d)."""
        return [float(getattr(self, f)[t]) for t in range(self.T) for f in FIELDS]

    def at(self, t: int) -> dict:
        return {f: getattr(self, f)[t] for f in ("K",) + FIELDS}

    # ---------------------------------------------------------------- presets
    @classmethod
    def lebm(cls, steps: int = 60, step_size: float = 0.4, sigma: float = 1.0) -> "LangevinSchedule":
        """LEBM prior Langevin (ALGORITHMS.md 1.2): z <- z + (s^2/2) grad log p(z) + s xi, T = 1;
        ``sigma`` is the std of the Gaussian reference (e_prior_sig), which the prior itself carries."""
        if not (step_size > 0):
            raise ValueError(f"step_size must be positive, got {step_size}")
        s = float(step_size)
        return cls(K=(steps,), h=(s * s / 2,), n=(s,), c1=(1.0,), c2=(0.0,), alpha=(1.0,), d=(1.0,),
                   reference_sigma=float(sigma), name="lebm")

    @classmethod
    def decoupled(cls, steps: int = 30, step_size: float = 0.5, noise_std: float = 1e-3) -> "LangevinSchedule":
        """Dual-MCMC's x-chain with decoupled noise (ALGORITHMS.md 5.3): y <- y + (s^2/2) grad log p~(y) + n xi,
        h = s^2/2, n = ``noise_std``, T = 1. On log p~ = -E this is x <- x - 0.5 s^2 dE/dx + n xi, whose stationary
        law is exp(-E / tau) with tau = (n/s)^2 (``extras["temperature"]``; CIFAR-10: s = 0.5, n = 1e-3, K = 30,
        tau = 4e-6; CelebA-64: s = 0.3, tau = 1.11e-5). The same chain is ``lebm(steps, step_size=n)`` on the
        tempered target -E/tau. Also the z-chain of 5.3 (s = n = 0.1, K = 10)."""
        if not (step_size > 0):
            raise ValueError(f"step_size must be positive, got {step_size}")
        if not (noise_std >= 0):
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        s, n = float(step_size), float(noise_std)
        return cls(K=(steps,), h=(s * s / 2,), n=(n,), c1=(1.0,), c2=(0.0,), alpha=(1.0,), d=(1.0,),
                   reference_sigma=None, name="decoupled", extras=dict(temperature=(n / s) ** 2))

    @classmethod
    def recovery_likelihood(cls, T: int, steps, b_square: float, form: str = "hierarchical",
                            noise_scale: float = 1.0) -> "LangevinSchedule":
        """Annealed Langevin of diffusion recovery likelihood.

        s_t^2 = (sigmas_cum[t] / sigmas_cum[0]) * b_square * sigmas[t+1]^2   (ALGORITHMS.md 2.2 and 6.3), and with
        a = a_s[t+1], sigma = sigmas[t+1], r = is_recovery[t+1] (0 at the top timestep):

        form="hierarchical" (Cui & Han 2024, u-space, base N(0, I) in the prior): h = s^2/2, alpha = 1/s^2,
            c1 = 1 - h r a^2/sigma^2, c2 = h r a/sigma^2, d = 1, n = s * noise_scale.
        form="gao" (Gao et al. 2021, scaled variable y = a_s_prev[t+1] x_t, no base: use sigma=math.inf):
            c1 = 1 - h r/sigma^2, c2 = h r/sigma^2, d = 1/a_s_prev[t+1].
        ``steps``: K for every timestep (int) or per timestep (list).
        """
        if form not in ("hierarchical", "gao"):
            raise ValueError(f"form must be 'hierarchical' or 'gao', got {form!r}")
        if not (b_square > 0):
            raise ValueError(f"b_square must be positive, got {b_square}")
        sch = diffusion_schedule(T)
        K = [int(steps)] * T if np.ndim(steps) == 0 else list(steps)
        if len(K) != T:
            raise ValueError(f"steps has {len(K)} entries, expected T={T}")
        s2 = np.array([sch["sigmas_cum"][t] / sch["sigmas_cum"][0] * b_square * sch["sigmas"][t + 1] ** 2
                       for t in range(T)])
        h = s2 / 2
        a = sch["a_s"][1:]
        sig2 = sch["sigmas"][1:] ** 2
        r = sch["is_recovery"][1:]
        if form == "hierarchical":
            c1 = 1 - h * r * a * a / sig2
            c2 = h * r * a / sig2
            d = np.ones(T)
            ref = 1.0
        else:
            c1 = 1 - h * r / sig2
            c2 = h * r / sig2
            d = 1.0 / sch["a_s_prev"][1:]
            ref = math.inf
        return cls(K=tuple(K), h=tuple(h), n=tuple(np.sqrt(s2) * noise_scale), c1=tuple(c1), c2=tuple(c2),
                   alpha=tuple(1.0 / s2), d=tuple(d), reference_sigma=ref, name=f"recovery_likelihood/{form}",
                   extras=dict(step_size_square=tuple(s2), **{k: tuple(v) for k, v in sch.items()}))
