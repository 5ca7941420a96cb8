"""Eager reference samplers, written like the papers' code: one autograd call per Langevin step.

They are the ground truth of the tests (with the same explicit noise every backend agrees with them to rounding)
and the baseline of the benchmarks. ALGORITHMS.md 1.2 (LEBM), 2.2 (Gao), 6.3/6.7 (hierarchical EBM diffusion).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .schedule import LangevinSchedule

# The matmul precisions of sample_prior(precision=...); the index is the op's int precision (csrc/core/simt.h,
# core::Precision).
PRECISIONS = ("fp32", "tf32", "bf16")


def check_precision(precision, y0: torch.Tensor | None = None, name: str = "sample_prior") -> int:
    """Validates ``precision`` (one of PRECISIONS); reduced precision needs float32 chains. Returns its index."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"{name}: precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "fp32" and y0 is not None and y0.dtype != torch.float32:
        raise TypeError(f"{name}: precision={precision!r} rounds float32 matmul operands (tensor cores), so y0 "
                        f"must be float32, got {y0.dtype}")
    return PRECISIONS.index(precision)


def round_to(x: torch.Tensor, precision: str) -> torch.Tensor:
    """x rounded to a matmul operand format, returned in x's dtype (the rounding of the tensor-core kernels'
    fragment loads, csrc/core/simt.h): "bf16" round to nearest, ties to even (x.to(torch.bfloat16)); "tf32" round
    to nearest, ties away from zero, to 10 explicit mantissa bits (cvt.rna.tf32.f32); "fp32" x itself."""
    if precision == "fp32":
        return x
    if precision == "bf16":
        return x.to(torch.bfloat16).to(x.dtype)
    if precision != "tf32":
        raise ValueError(f"round_to: precision must be one of {PRECISIONS}, got {precision!r}")
    f = x.to(torch.float32)
    # sign-magnitude bits: adding half an ulp (bit 12) to the magnitude rounds half away from zero, carrying into
    # the exponent (up to infinity) where it should; NaN and inf are kept as they are
    b = (f.view(torch.int32) + 0x1000) & ~0x1FFF
    return torch.where(torch.isfinite(f), b.view(torch.float32), f).to(x.dtype)


class _RoundOperand(torch.autograd.Function):
    """Forward: the operand rounded; backward: the gradient passed through (as autocast's cast does)."""

    @staticmethod
    def forward(ctx, x, precision):
        return round_to(x, precision)

    @staticmethod
    def backward(ctx, g):
        return g, None


class _RoundGradient(torch.autograd.Function):
    """Forward: identity on a matmul's output; backward: its gradient rounded, so that the backward's matmuls
    (dX = dY W, dW = dY^T X) take reduced-precision operands as well."""

    @staticmethod
    def forward(ctx, y, precision):
        ctx.precision = precision
        return y

    @staticmethod
    def backward(ctx, g):
        return round_to(g, ctx.precision), None


class _ReducedPrecisionMatmuls(TorchFunctionMode):
    """Every F.linear / matmul / mm / bmm with its operands rounded to ``precision`` and fp32 accumulation (the
    product of two bf16 or tf32 values is exact in fp32, so an fp32 matmul of the rounded operands is the tensor
    core's product up to the order of the sums); everything else (bias, activations, the update) in fp32."""

    _MATMULS = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm, torch.bmm,
                torch.Tensor.bmm)

    def __init__(self, precision):
        super().__init__()
        self.precision = precision

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        p = self.precision
        if func is F.linear or func is torch._C._nn.linear:
            x, w = args[0], args[1]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            y = F.linear(_RoundOperand.apply(x, p), _RoundOperand.apply(w, p), b)
            return _RoundGradient.apply(y, p)
        if func in self._MATMULS:
            a, b = args[0], args[1]
            return _RoundGradient.apply(func(_RoundOperand.apply(a, p), _RoundOperand.apply(b, p)), p)
        return func(*args, **kwargs)


def matmul_precision(precision: str):
    """Context manager: the eager prior's matmuls at ``precision`` (see _ReducedPrecisionMatmuls; "fp32": no
    change). The reference's reduced-precision chains run their energy and base log-density inside it: the
    "eager PyTorch running the same chain at the same precision" of the kernels' accuracy rule (docs/CUDA_KERNELS.md)."""
    check_precision(precision, name="matmul_precision")
    return contextlib.nullcontext() if precision == "fp32" else _ReducedPrecisionMatmuls(precision)


def _coef(schedule: LangevinSchedule, name: str, t, like: torch.Tensor):
    """Coefficient `name` at timestep t (an int, or a per-chain LongTensor -> [B, 1])."""
    vals = getattr(schedule, name)
    if isinstance(t, int):
        return vals[t]
    return torch.tensor(vals, dtype=like.dtype, device=like.device)[t].unsqueeze(1)


def _trace_point(trace, energy, grad, active=None):
    if trace is None:
        return
    e = energy.detach()
    g = grad.detach().norm(dim=1)
    if active is not None:
        nan = torch.full_like(e, float("nan"))
        e, g = torch.where(active, e, nan), torch.where(active, g, nan)
    trace.append(torch.stack([e, g], dim=1))


def sample_prior_reference(prior, y0: torch.Tensor, schedule: LangevinSchedule, *, cond=None, noise=None,
                           generator=None, timesteps=None, trace: bool = False, check_finite=True,
                           precision: str = "fp32"):
    """Annealed Langevin on the prior, eagerly. Returns y [B, D], or (y, trace [S, B, 2]) when ``trace``.
    check_finite: as sample_prior's (fused.check_chains_finite: NonFiniteChainError naming the first bad step; the
    re-run that finds it restores the generator's state from before the chains, so it draws the same noise).
    precision: the matmuls' precision (matmul_precision): "fp32", or "tf32" / "bf16" with float32 chains."""
    check_precision(precision, y0, "sample_prior_reference")
    snapshot = None
    if check_finite is True and noise is None and not trace and not torch.compiler.is_compiling() and \
            not (y0.is_cuda and torch.cuda.is_current_stream_capturing()):
        gen = generator if generator is not None else torch.default_generator if y0.device.type == "cpu" else \
            torch.cuda.default_generators[y0.device.index if y0.device.index is not None else
                                          torch.cuda.current_device()] if y0.is_cuda else None
        snapshot = (gen, gen.get_state()) if gen is not None else None
    out = _sample_prior_reference(prior, y0, schedule, cond, noise, generator, timesteps, trace, precision)

    def rerun():
        if trace:
            return out[1]
        if noise is not None:
            return _sample_prior_reference(prior, y0, schedule, cond, noise, generator, timesteps, True, precision)[1]
        if snapshot is None:
            return y0.new_empty((0, y0.shape[0], 2))
        gen, state = snapshot
        now = gen.get_state()
        gen.set_state(state)
        try:
            return _sample_prior_reference(prior, y0, schedule, cond, noise, generator, timesteps, True, precision)[1]
        finally:
            gen.set_state(now)

    from .fused import check_chains_finite
    check_chains_finite(out[0] if trace else out, schedule, timesteps, rerun, check_finite, "sample_prior_reference")
    return out


def _sample_prior_reference(prior, y0, schedule, cond, noise, generator, timesteps, trace, precision):
    y = y0.detach().clone()
    y_cond = (cond if cond is not None else y0).detach().clone()
    log = [] if trace else None
    mm = matmul_precision(precision)

    def draw(k):
        if noise is not None:
            return noise[k]
        return torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)

    if timesteps is None:
        k = 0
        for t in reversed(range(schedule.T)):
            c = schedule.at(t)
            t_vec = torch.full((y.shape[0],), t, dtype=torch.long, device=y.device)
            for _ in range(c["K"]):
                y = y.detach().requires_grad_(True)
                with mm:
                    en = prior.energy(y, t_vec)
                    log_p = -c["alpha"] * en + prior.base_log_prob(y)
                grad = torch.autograd.grad(log_p.sum(), y)[0]
                _trace_point(log, en, grad)
                y = c["c1"] * y.detach() + c["c2"] * y_cond + c["h"] * grad + c["n"] * draw(k)
                k += 1
            y = c["d"] * y.detach()
            y_cond = y
    else:
        t_vec = timesteps.to(device=y.device, dtype=torch.long)
        K = torch.tensor(schedule.K, device=y.device)[t_vec]
        c1, c2, h, n, alpha, d = (_coef(schedule, f, t_vec, y) for f in ("c1", "c2", "h", "n", "alpha", "d"))
        for k in range(schedule.max_steps):
            active = k < K
            if not bool(active.any()):
                break
            y = y.detach().requires_grad_(True)
            with mm:
                en = prior.energy(y, t_vec)
                log_p = -alpha.squeeze(1) * en + prior.base_log_prob(y)
            grad = torch.autograd.grad(log_p.sum(), y)[0]
            _trace_point(log, en, grad, active)
            y_new = c1 * y.detach() + c2 * y_cond + h * grad + n * draw(k)
            y = torch.where(active.unsqueeze(1), y_new, y.detach())
        y = d * y.detach()
    y = y.detach()
    if trace:
        S = schedule.max_steps if timesteps is not None else schedule.total_steps
        tr = torch.stack(log) if log else y.new_empty((0, y.shape[0], 2))
        if tr.shape[0] < S:  # chains stopped early: pad with NaN as the kernels do
            tr = torch.cat([tr, tr.new_full((S - tr.shape[0], y.shape[0], 2), float("nan"))])
        return y, tr
    return y


def lebm_prior_loop(energy, z: torch.Tensor, steps: int = 60, step_size: float = 0.4, sigma: float = 1.0,
                    noise=None, generator=None) -> torch.Tensor:
    """LEBM's prior Langevin exactly as in its code (ALGORITHMS.md 1.2, ``sample_langevin_prior_z``), on any energy
    network ``energy(z) -> [B]`` (or [B, 1]):  z <- z - 0.5 s^2 (dE/dz + z / sigma^2) + s xi.
    The leanest eager baseline of the benchmarks; equals sample_prior_reference on the LEBM schedule."""
    z = z.detach().clone()
    for k in range(steps):
        z.requires_grad_(True)
        en = energy(z)
        z_grad = torch.autograd.grad(en.sum(), z)[0]
        xi = noise[k] if noise is not None else torch.randn(z.shape, generator=generator, dtype=z.dtype,
                                                             device=z.device)
        z = (z.detach() - 0.5 * step_size ** 2 * (z_grad + z.detach() / sigma ** 2) + step_size * xi)
    return z.detach()


def _randn_like(y: torch.Tensor, noise, k: int, generator):
    return noise[k] if noise is not None else torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)


def lebm_posterior_loop(netG, netE, x: torch.Tensor, z: torch.Tensor, steps: int = 20, step_size: float = 0.1,
                        sigma: float = 0.3, prior_sigma: float = 1.0, noise=None, generator=None) -> torch.Tensor:
    """LEBM's posterior Langevin as in its code (ALGORITHMS.md 1.2, ``sample_langevin_post_z``):

        L = 1/(2 sigma^2) sum_b ||netG(z_b) - x_b||^2                      (mse, reduction 'sum')
        z <- z - 0.5 s^2 (dL/dz + d/dz sum_b netE(z_b) + z / prior_sigma^2) + s xi

    netG: z [B, nz] -> image; netE: z -> energy [B] (or [B, 1]), or None for the plain N(0, prior_sigma^2) prior.
    noise: optional [K, B, nz]. One autograd call per step. Returns z [B, nz]."""
    z = z.detach().clone()
    for k in range(steps):
        z.requires_grad_(True)
        loss = ((netG(z) - x) ** 2).sum() / (2.0 * sigma * sigma)
        if netE is not None:
            loss = loss + netE(z).sum()
        z_grad = torch.autograd.grad(loss, z)[0]
        xi = _randn_like(z, noise, k, generator)
        z = z.detach() - 0.5 * step_size ** 2 * (z_grad + z.detach() / prior_sigma ** 2) + step_size * xi
    return z.detach()


def dual_mcmc_x_loop(netE, x: torch.Tensor, steps: int = 30, step_size: float = 0.5, noise_std: float = 1e-3,
                     noise=None, generator=None) -> torch.Tensor:
    """Dual-MCMC's EBM-guided x-chain with decoupled noise, as in its code (ALGORITHMS.md 5.3):

        x <- x - 0.5 s^2 d/dx sum_b netE(x_b) + n xi          (s = 0.5 CIFAR-10 / 0.3 CelebA-64, n = 1e-3, K = 30)

    netE: x -> energy [B]. noise: optional [K, *x.shape]. Returns x."""
    x = x.detach().clone()
    for k in range(steps):
        x.requires_grad_(True)
        x_grad = torch.autograd.grad(netE(x).sum(), x)[0]
        x = x.detach() - 0.5 * step_size ** 2 * x_grad + noise_std * _randn_like(x, noise, k, generator)
    return x.detach()


def dual_mcmc_z_loop(netG, x: torch.Tensor, z: torch.Tensor, steps: int = 10, step_size: float = 0.1,
                     noise_std: float = 0.1, sigma: float = 0.3, prior_sigma: float = 1.0, noise=None,
                     generator=None) -> torch.Tensor:
    """Dual-MCMC's generator-guided posterior z-chain, as in its code (ALGORITHMS.md 5.3):

        R = sum_{b, pixels} (netG(z) - x)^2                     (mse, reduction 'sum', NO 1/2)
        z <- z - 0.5 s^2 (dR/dz / sigma^2 + z / prior_sigma^2) + n xi       (s = n = 0.1, sigma = 0.3, K = 10)

    noise: optional [K, B, nz]. Returns z."""
    z = z.detach().clone()
    for k in range(steps):
        z.requires_grad_(True)
        z_grad = torch.autograd.grad(((netG(z) - x) ** 2).sum(), z)[0]
        xi = _randn_like(z, noise, k, generator)
        z = z.detach() - 0.5 * step_size ** 2 * (z_grad / sigma ** 2 + z.detach() / prior_sigma ** 2) + noise_std * xi
    return z.detach()


def joint_posterior_loop(netG, ladder, heads, x: torch.Tensor, z: torch.Tensor, steps: int = 40,
                         step_size: float = 0.1, sigma: float = 0.3, noise=None, generator=None) -> torch.Tensor:
    """The joint latent EBM prior's posterior Langevin as in its code (ALGORITHMS.md 3.1), over all layers at once:

        logp_x = -(1/(2 sigma^2)) sum_b ||g(z_bottom) - x||^2 + sum_b log p_beta(z)      (the Gaussian ladder)
        F      = sum_b sum_l f_l(z_l),   f_l = -E_l
        z_i <- z_i + 0.5 s^2 (dF/dz_i + dlogp_x/dz_i) + s xi_i      (every layer from the same gradient)

    netG: the decoder of the bottom layer; ladder: a GaussianLadder (layers top first); heads: one energy net per
    layer (top first). z: [B, D] concatenated, noise: optional [K, B, D]."""
    z = z.detach().clone()
    bottom = sum(ladder.dims[:-1])
    for k in range(steps):
        z.requires_grad_(True)
        layers = ladder.split(z)
        logp_x = -((netG(z[:, bottom:]) - x) ** 2).sum() / (2.0 * sigma * sigma) + ladder.log_prob(z).sum()
        F = sum(-head(zl).sum() for head, zl in zip(heads, layers))
        z_grad = torch.autograd.grad(F + logp_x, z)[0]
        xi = _randn_like(z, noise, k, generator)
        z = z.detach() + 0.5 * step_size ** 2 * z_grad + step_size * xi
    return z.detach()
