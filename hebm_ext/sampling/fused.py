"""sample_prior: the latent-prior sampler, on the fused op ``hebm::latent_langevin`` or the eager reference."""
from __future__ import annotations

import math
import warnings

import torch

from .. import ops
from ..nn.prior import LatentEBMPrior
from . import program as prog
from .reference import check_precision, sample_prior_reference
from .schedule import LangevinSchedule

BACKENDS = ("auto", "fused", "reference")
# Why the CPU kernel runs fp32 only (the same words as its C++ check in csrc/cpu/latent_cpu.cpp).
CPU_PRECISION_REASON = ("the CPU kernel runs precision='fp32' only, got precision={precision!r}: tf32 and bf16 are "
                        "the CUDA tensor cores' operand formats, and a CPU has no faster path at that precision (the "
                        "reference backend runs the same rounding eagerly)")
_warned: set = set()


def fused_unsupported_reason(prior: LatentEBMPrior, y0: torch.Tensor, precision: str = "fp32") -> str | None:
    """Why sample_prior(backend="fused") cannot run this call, or None."""
    if y0.dtype not in (torch.float32, torch.float64):
        return f"the fused kernels run float32 and float64, y0 is {y0.dtype}"
    dev = y0.device.type
    if dev not in ("cpu", "cuda") or not ops.has_kernel("latent_langevin", dev):
        return f"this build of hebm_ext has no {dev} kernel for hebm::latent_langevin (ops.available() = {ops.available()})"
    if dev == "cpu" and precision != "fp32":
        return CPU_PRECISION_REASON.format(precision=precision)
    if dev == "cuda" and y0.dtype != torch.float32:
        return "the CUDA kernel runs float32 only (float64 runs on the CPU kernel or the reference)"
    return prog.unsupported_reason(prior)


def _summarise(tr: torch.Tensor) -> dict:
    """Per-step means over the chains, as the papers log them (NaN entries: chains not running that step)."""
    return {"energy": tr[..., 0].nanmean(dim=1), "grad_norm": tr[..., 1].nanmean(dim=1), "per_chain": tr}


def _check_inputs(prior, y0, schedule, cond, noise, timesteps, backend, check_inputs=True):
    if not isinstance(prior, LatentEBMPrior):
        raise TypeError(f"prior must be a hebm_ext.LatentEBMPrior, got {type(prior).__name__}")
    if not isinstance(schedule, LangevinSchedule):
        raise TypeError(f"schedule must be a hebm_ext.LangevinSchedule, got {type(schedule).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not torch.is_tensor(y0):
        raise TypeError(f"y0 must be a tensor [B, {prior.D}], got {type(y0).__name__}")
    prior.check_y(y0, "y0")
    if not y0.is_floating_point():
        raise TypeError(f"y0 must be a floating-point tensor, got {y0.dtype}")
    p = next(iter(prior.parameters()), None)
    if p is not None:
        if p.device != y0.device:
            raise ValueError(f"y0 is on {y0.device} but the prior's parameters are on {p.device}")
        if p.dtype != y0.dtype:
            raise TypeError(f"y0 is {y0.dtype} but the prior's parameters are {p.dtype}; convert one of them")
    if cond is not None:
        if not torch.is_tensor(cond) or cond.shape != y0.shape:
            raise ValueError(f"cond must have y0's shape {tuple(y0.shape)}, got {tuple(cond.shape) if torch.is_tensor(cond) else cond!r}")
        if cond.dtype != y0.dtype or cond.device != y0.device:
            raise ValueError(f"cond must have y0's dtype and device ({y0.dtype}, {y0.device}), got ({cond.dtype}, {cond.device})")
    for i, head in enumerate(prior.heads):
        ts = getattr(head, "time_steps", 0)
        if ts and ts < schedule.T:
            raise ValueError(f"schedule has T={schedule.T} timesteps but heads[{i}] is conditioned on only {ts}")
    ref, have = schedule.reference_sigma, prior.base_sigma
    if ref is not None and have is not None and ref != have:
        raise ValueError(f"schedule {schedule.name!r} was built for a base of std {ref}, but the prior's base "
                         f"has std {have}")
    S = schedule.total_steps if timesteps is None else schedule.max_steps
    if timesteps is not None:
        if not torch.is_tensor(timesteps) or timesteps.dim() != 1 or timesteps.shape[0] != y0.shape[0] or \
                timesteps.dtype.is_floating_point:
            raise ValueError(f"timesteps must be an integer tensor [B] = [{y0.shape[0]}], got "
                             f"{tuple(timesteps.shape) if torch.is_tensor(timesteps) else timesteps!r}")
        if timesteps.device != y0.device:
            raise ValueError(f"timesteps is on {timesteps.device}, y0 on {y0.device}")
    if noise is not None:
        if not torch.is_tensor(noise) or tuple(noise.shape) != (S, y0.shape[0], y0.shape[1]):
            got = tuple(noise.shape) if torch.is_tensor(noise) else type(noise).__name__
            raise ValueError(f"noise must be [S, B, D] = [{S}, {y0.shape[0]}, {y0.shape[1]}] "
                             f"(S = the schedule's {'max' if timesteps is not None else 'total'} steps), got {got}")
        if noise.dtype != y0.dtype or noise.device != y0.device:
            raise ValueError(f"noise must have y0's dtype and device ({y0.dtype}, {y0.device}), got ({noise.dtype}, {noise.device})")
    if y0.device.type == "cuda":
        _device_input_status(y0, cond, timesteps, schedule, check_inputs)
    elif not torch.compiler.is_compiling():  # data-dependent checks (they would break a compiled graph)
        bad = (~torch.isfinite(y0)).any(dim=1)
        if bool(bad.any()):
            raise ValueError(f"y0 has NaN or inf values in {int(bad.sum())} of {y0.shape[0]} chains")
        if cond is not None and not bool(torch.isfinite(cond).all()):
            raise ValueError("cond has NaN or inf values")
        if timesteps is not None and timesteps.numel() and \
                (int(timesteps.min()) < 0 or int(timesteps.max()) >= schedule.T):
            raise ValueError(f"timesteps must lie in [0, {schedule.T}), got values in "
                             f"[{int(timesteps.min())}, {int(timesteps.max())}]")


def check_chains_finite(y: torch.Tensor, schedule: LangevinSchedule, timesteps, rerun_trace, check_finite,
                        name: str = "sample_prior") -> None:
    """The non-finite check of a latent sampler's output y [B, D], once at the end of a call.

    The chains that ended with a NaN or inf are counted on the device. check_finite=True reads that count (the one
    host synchronisation of a call) and, when it is not zero, raises NonFiniteChainError naming the count and the
    first step whose energy or gradient was not finite: ``rerun_trace()`` re-runs the same chains with trace=True
    (the same noise: Philox noise is a function of the seed and the step, explicit noise is reused) on this rare
    error path only. check_finite=<an int64 tensor on y's device> receives the count instead (no host read: under
    CUDA graph capture a replay refreshes it, and the caller reads it when it likes); False skips the check. Under
    torch.compile the check is skipped (a host read would break the graph), as the input checks are.
    """
    if check_finite is False or torch.compiler.is_compiling():
        return
    count = (~torch.isfinite(y)).any(dim=1).sum() if y.numel() else y.new_zeros((), dtype=torch.int64)
    if torch.is_tensor(check_finite):
        if check_finite.numel() != 1 or check_finite.device != y.device or check_finite.is_floating_point():
            raise ValueError(f"check_finite: a status tensor must be one integer element on {y.device}, got "
                             f"{check_finite.dtype} {tuple(check_finite.shape)} on {check_finite.device}")
        check_finite.view(()).copy_(count)
        return
    if check_finite is not True:
        raise TypeError(f"check_finite must be True, False or an int64 status tensor, got {check_finite!r}")
    if y.is_cuda and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(f"{name}: check_finite=True reads the device once at the end, which CUDA graph capture "
                           "forbids: pass check_finite=<an int64 tensor on the device> (it receives the number of "
                           "non-finite chains at every replay) or check_finite=False")
    n = int(count)
    if n:
        _raise_nonfinite(name, n, y.shape[0], schedule, timesteps, rerun_trace())


def _raise_nonfinite(name, n, B, schedule, timesteps, tr):
    """NonFiniteChainError for n of B non-finite chains; tr [S, B, 2]: (energy, |grad|) per step and chain (NaN
    where a chain does not run a step, with per-chain timesteps)."""
    from .generic import NonFiniteChainError, _step_position

    tr = tr.detach().cpu()
    bad = ~torch.isfinite(tr).all(dim=2)  # [S, B]
    if timesteps is not None:  # NaN marks the steps a chain does not run
        K = torch.tensor(schedule.K)[timesteps.detach().cpu().long()]
        bad &= torch.arange(tr.shape[0]).unsqueeze(1) < K.unsqueeze(0)
    counts = bad.sum(dim=1)
    hit = torch.nonzero(counts).flatten()
    if hit.numel():
        k = int(hit[0])
        if timesteps is None:
            t, i = _step_position(schedule, k)
            where = f"global step {k} (timestep t={t}, step {i} of {schedule.K[t]})"
        else:
            where = f"step {k} of the chains' own timesteps"
        first = f"the first non-finite energy or gradient is at {where}, in {int(counts[k])} chains"
    elif tr.shape[0]:
        first = f"every energy and gradient was finite: the last update (global step {tr.shape[0] - 1}) overflowed"
    else:
        first = "the step could not be traced (no re-run without the generator's state)"
    raise NonFiniteChainError(
        f"{name}: {n} of {B} chains ended with non-finite values (NaN or inf); {first}. Usual causes: a non-finite "
        "parameter of the prior, a step size too large for its energy (the chains diverge), non-finite noise or "
        "cond.")


_status: dict = {}


def _device_input_status(y0, cond, timesteps, schedule, check_inputs):
    """CUDA: the data checks of y0 / cond / timesteps computed on the device, without a host synchronisation, into
    an int64 status [chains of y0 with NaN/inf, NaN/inf elements of cond, timesteps outside [0, T)] that
    input_status() returns and raise_for_input_status() turns into the CPU path's errors. Skipped with
    check_inputs=False and always during CUDA-graph capture."""
    _status.pop("last", None)
    if not check_inputs or torch.cuda.is_current_stream_capturing() or torch.compiler.is_compiling():
        return
    zero = y0.new_zeros((), dtype=torch.int64)
    s = [(~torch.isfinite(y0)).any(dim=1).sum(),
         (~torch.isfinite(cond)).sum() if cond is not None else zero,
         ((timesteps < 0) | (timesteps >= schedule.T)).sum() if timesteps is not None and timesteps.numel() else zero]
    _status["last"] = (torch.stack(s), y0.shape[0], schedule.T)


def input_status():
    """The device tensor [bad y0 chains, bad cond elements, out-of-range timesteps] of the last CUDA
    sample_prior call with check_inputs=True (None when it was skipped). Reading it synchronises."""
    last = _status.get("last")
    return None if last is None else last[0]


def raise_for_input_status():
    """Synchronises and raises the CPU path's ValueError when the last CUDA call's inputs were bad."""
    last = _status.get("last")
    if last is None:
        return
    (ny, nc, nt), B, T = last[0].tolist(), last[1], last[2]
    if ny:
        raise ValueError(f"y0 has NaN or inf values in {ny} of {B} chains")
    if nc:
        raise ValueError("cond has NaN or inf values")
    if nt:
        raise ValueError(f"timesteps must lie in [0, {T}), got {nt} values outside")


def _rng(y0, generator, seed):
    if seed is not None:
        # fill kernels with the seed as an argument: no pageable host-to-device copy, capturable
        rng = torch.full((2,), int(seed) & (2 ** 63 - 1), dtype=torch.int64, device=y0.device)
        rng[1:].zero_()
        return rng
    dev = generator.device if generator is not None else y0.device
    s = torch.randint(0, 2 ** 62, (1,), generator=generator, dtype=torch.int64, device=dev)
    return torch.cat([s, torch.zeros_like(s)]).to(y0.device)


def sample_prior(prior: LatentEBMPrior, y0: torch.Tensor, schedule: LangevinSchedule, *, cond=None, noise=None,
                 generator=None, backend: str = "auto", trace: bool = False, timesteps=None, seed=None,
                 check_finite=True, check_inputs: bool = True, precision: str = "fp32"):
    """Sample the latent prior by (annealed) Langevin dynamics.

    prior: LatentEBMPrior; y0: initial chains [B, D]; schedule: LangevinSchedule (T timesteps run T-1 ... 0).
    cond: y_cond of the first timestep (default y0). noise: optional [S, B, D], S = schedule.total_steps (or
    schedule.max_steps with ``timesteps``); when given every backend uses it and they agree to rounding.
    generator / seed: where the kernels' Philox seed comes from (seed: an int, the same on every device).
    backend: "fused" (the op), "reference" (eager autograd loop), "auto" (fused when this build has the op for
    y0's device and the prior is supported, else reference with a one-time warning that says why).
    timesteps: optional int tensor [B]: chain b runs only the K steps of timestep timesteps[b] (recovery-likelihood
    training). trace: also return {"energy": [S], "grad_norm": [S], "per_chain": [S, B, 2]}.
    check_finite: True raises NonFiniteChainError when chains end non-finite (one device read at the end of the call,
    naming the count and the first bad step); an int64 tensor on y0's device receives the count instead (no host
    read: usable under CUDA graph capture); False skips it (see check_chains_finite).

    check_inputs: the data checks of y0 / cond / timesteps (NaN, inf, range). On the CPU they raise at once; on
    CUDA they run on the device without a host synchronisation into input_status() (raise_for_input_status()
    reads it), are skipped with check_inputs=False and always during CUDA-graph capture.

    precision: the matmuls' precision: "fp32" (the default, exact mode), "tf32" or "bf16" (float32 chains; matmul
    operands rounded to tf32 / bf16, fp32 accumulation: on CUDA the tensor-core throughput kernel at large B and the
    resident / cluster latency kernels at small B, chosen by B as for fp32; on the CPU only the reference backend
    runs them, backend="auto" falls back to it with a warning saying why). The reference runs the same rounding
    eagerly (reference.matmul_precision).

    Returns y [B, D] (no gradient), or (y, trace) when ``trace``.
    """
    _check_inputs(prior, y0, schedule, cond, noise, timesteps, backend, check_inputs)
    precision_index = check_precision(precision, y0)
    if backend != "reference":
        reason = fused_unsupported_reason(prior, y0, precision)
        if reason is not None:
            if backend == "fused":
                raise ValueError(f"sample_prior(backend='fused'): {reason}")
            if reason not in _warned:
                _warned.add(reason)
                warnings.warn(f"sample_prior: running the eager reference sampler because {reason}", stacklevel=2)
            backend = "reference"
        else:
            backend = "fused"
    if backend == "reference":
        out = sample_prior_reference(prior, y0, schedule, cond=cond, noise=noise, generator=generator,
                                     timesteps=timesteps, trace=trace, check_finite=check_finite,
                                     precision=precision)
        return (out[0], _summarise(out[1])) if trace else out

    params, program = prog.packed(prior, y0.dtype, y0.device)
    empty = y0.new_empty((0,))
    rng = y0.new_empty((0,), dtype=torch.int64) if noise is not None else _rng(y0, generator, seed)
    ts = timesteps.to(torch.int64) if timesteps is not None else y0.new_empty((0,), dtype=torch.int64)

    def run(with_trace):
        return ops.latent_langevin(y0.detach(), cond.detach() if cond is not None else empty, params, program,
                                   schedule.coefficients(), list(schedule.K), ts,
                                   noise if noise is not None else empty, rng, bool(with_trace), precision_index)

    y, tr = run(trace)
    # the same rng tensor (the op reads it, never advances it) and noise: the re-run draws the same chains
    check_chains_finite(y, schedule, timesteps, lambda: tr if trace else run(True)[1], check_finite)
    return (y, _summarise(tr)) if trace else y
