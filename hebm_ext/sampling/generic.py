"""hebm_ext.langevin: the generic Langevin engine for any log-density written in torch (a posterior through a
convolutional generator, a data-space EBM), on the shared schedule and THE update rule (ARCHITECTURE.md, "The two
sampler tiers"). For timestep t = T-1 ... 0, K_t steps of

    y <- c1_t * y + c2_t * y_cond + h_t * grad_y[alpha_t * log_prob(y, t)] + n_t * xi,      xi ~ N(0, I)

then y <- d_t * y, and y_cond for the next timestep is that y. alpha_t scales the WHOLE log_prob, as it scales
-energy in the fused latent sampler (whose base density it leaves out; with alpha = 1, as in every single-timestep
preset, the two agree).

Per step: one autograd call (the gradient of sum_b log_prob(y, t)_b gives the per-chain gradients: chains are
independent) and ONE op, ``hebm::langevin_update``, for the update and the noise. The noise is drawn in the op with
the fused sampler's Philox addressing (chain b = first dim of y, element d of the flattened chain, global step k
in execution order), so ``seed=`` gives the same noise as ``sample_prior(..., backend="fused", seed=)``.

backend "graph" (CUDA) captures the whole T x K loop once per key in a ``torch.cuda.CUDAGraph`` and replays it.
The key: y0's shape, dtype and device; the schedule; whether cond / noise / trace are given; the identity of the
log_prob object; and, for every nn.Module the engine can see (log_prob itself when it is a module, as the
targets of hebm_ext.sampling.targets are; the owner of a bound method; modules in the function's closure), the
``training`` flag of each submodule and the storage of each parameter and buffer. So a new capture happens for new
shapes, a new function object, a train()/eval() switch (BatchNorm, spectral norm and dropout compute differently),
or parameters replaced by new tensors (``module.to(...)``, assigning a new Parameter). In-place updates (optimizer
steps, ``load_state_dict``, ``set_data`` of a target) need no capture: a replay reads the current values. What the
engine cannot see (a module reached through a global, a Python branch on data) is frozen at capture time: call
``clear_graph_cache()`` or pass a new function object after changing it. The first call with a new key runs the
loop eagerly on a side stream (the warm-up, whose result it returns), then captures; later calls replay.
"""
from __future__ import annotations

import contextlib
import inspect
import itertools
import threading
from collections import OrderedDict

import torch
from torch import nn

from .. import ops
from .fused import _rng
from .schedule import LangevinSchedule

BACKENDS = ("auto", "eager", "graph")
MAX_GRAPHS = 8  # captured graphs kept (least recently used first out)
_GRAPHS: "OrderedDict[tuple, _Graph]" = OrderedDict()

__all__ = ["langevin", "clear_graph_cache", "in_graph_chain", "BACKENDS"]
_state = threading.local()


def in_graph_chain() -> bool:
    """True while the graph backend runs log_prob for a capture (its warm-up or the capture itself): a target
    can avoid work that a replay would not redo (targets.GeneratorPosterior's fused prior gradient)."""
    return getattr(_state, "graph", False)


@contextlib.contextmanager
def _graph_chain():
    old = in_graph_chain()
    _state.graph = True
    try:
        yield
    finally:
        _state.graph = old


def clear_graph_cache() -> None:
    """Drop every captured CUDA graph of the graph backend, its memory and the log_prob objects it keeps alive
    (the cache holds the last MAX_GRAPHS)."""
    _GRAPHS.clear()


# ---------------------------------------------------------------------------------------------------------------
# checks

def _check_inputs(log_prob, y0, schedule, cond, noise, backend):
    if not callable(log_prob):
        raise TypeError(f"log_prob must be a callable log_prob(y, t) -> [B], got {type(log_prob).__name__}")
    if not isinstance(schedule, LangevinSchedule):
        raise TypeError(f"schedule must be a hebm_ext.LangevinSchedule, got {type(schedule).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not torch.is_tensor(y0) or y0.dim() < 1:
        got = f"shape {list(y0.shape)}" if torch.is_tensor(y0) else type(y0).__name__
        raise ValueError(f"y0 must be a tensor [B, ...] (chains along the first dimension), got {got}")
    if y0.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"y0 must be float32 or float64, got {y0.dtype}")
    dev = y0.device.type
    if not ops.has_kernel("langevin_update", dev):
        raise ValueError(f"this build of hebm_ext has no {dev} kernel for hebm::langevin_update "
                         f"(ops.available() = {ops.available()})")
    if cond is not None:
        if not torch.is_tensor(cond) or cond.shape != y0.shape:
            got = list(cond.shape) if torch.is_tensor(cond) else type(cond).__name__
            raise ValueError(f"cond must have y0's shape {list(y0.shape)}, got {got}")
        if cond.dtype != y0.dtype or cond.device != y0.device:
            raise ValueError(f"cond must have y0's dtype and device ({y0.dtype}, {y0.device}), got "
                             f"({cond.dtype}, {cond.device})")
    if noise is not None:
        want = [schedule.total_steps] + list(y0.shape)
        if not torch.is_tensor(noise) or list(noise.shape) != want:
            got = list(noise.shape) if torch.is_tensor(noise) else type(noise).__name__
            raise ValueError(f"noise must be [S, *y0.shape] = {want} (S = the schedule's total steps), got {got}")
        if noise.dtype != y0.dtype or noise.device != y0.device:
            raise ValueError(f"noise must have y0's dtype and device ({y0.dtype}, {y0.device}), got "
                             f"({noise.dtype}, {noise.device})")


def _step_position(schedule: LangevinSchedule, k: int) -> tuple[int, int]:
    """Global step k -> (timestep t, step i within t), in execution order (t = T-1 first)."""
    for t in reversed(range(schedule.T)):
        if k < schedule.K[t]:
            return t, k
        k -= schedule.K[t]
    raise IndexError(k)


def _check_log_prob(lp, B: int, k: int, t: int, i: int, K: int) -> None:
    """Shapes are known on the host: a wrong one raises at once, without synchronising."""
    where = f"at global step {k} (timestep t={t}, step {i} of {K})"
    if not torch.is_tensor(lp):
        raise TypeError(f"log_prob(y, t) must return a tensor [B] = [{B}] (one value per chain), got "
                        f"{type(lp).__name__} {where}")
    if tuple(lp.shape) != (B,):
        hint = " (squeeze the trailing dimension)" if tuple(lp.shape) == (B, 1) else ""
        hint = hint or (" (return one value per chain, not the sum over chains)" if lp.dim() == 0 else "")
        raise ValueError(f"log_prob(y, t) must return one value per chain, shape [B] = [{B}], got shape "
                         f"{list(lp.shape)} {where}{hint}")
    if not lp.is_floating_point():
        raise TypeError(f"log_prob(y, t) must return a floating-point tensor, got {lp.dtype} {where}")


class NonFiniteChainError(ValueError):
    """A Langevin chain produced NaN or inf (trainers treat it as divergence)."""


def _raise_if_nonfinite(bad: torch.Tensor, schedule: LangevinSchedule, B: int) -> None:
    """bad[k]: chains whose log_prob or updated state was not finite at global step k (filled on the device
    during the chain). Reading it is the one host synchronisation of a call."""
    if bad.numel() == 0:
        return
    counts = bad.cpu()
    hit = torch.nonzero(counts).flatten()
    if hit.numel() == 0:
        return
    k = int(hit[0])
    t, i = _step_position(schedule, k)
    raise NonFiniteChainError(
        f"langevin: non-finite values (NaN or inf) in log_prob or in the updated chains at global step {k} "
        f"(timestep t={t}, step {i} of {schedule.K[t]}) in {int(counts[k])} of {B} chains ({int(counts[-1])} at "
        "the last step). Usual causes: a step size too large for this log_prob (the chains diverge), a log_prob "
        "that is not finite at the chains' values, or non-finite y0 / cond (then the first step already fails).")


# ---------------------------------------------------------------------------------------------------------------
# the loop (one piece of code for the eager backend, the graph warm-up and the graph capture)

def _chain(log_prob, y, y_cond, schedule: LangevinSchedule, noise, rng, bad, tr):
    """Run every step of every timestep from y; write the per-step non-finite counts into bad [S] and, when tr is
    given, (log_prob, |grad of alpha * log_prob|) into tr [S, B, 2]. Returns the final y (never an alias of y)."""
    start = y
    B = y.shape[0]
    D = y[0].numel()
    empty = y.new_empty((0,))
    k = 0
    for t in reversed(range(schedule.T)):
        c = schedule.at(t)
        h = c["h"] * c["alpha"]
        cond_t = y_cond if c["c2"] != 0.0 else empty
        for i in range(c["K"]):
            yg = y.detach().requires_grad_(True)
            with torch.enable_grad():
                lp = log_prob(yg, t)
                _check_log_prob(lp, B, k, t, i, c["K"])
                if lp.requires_grad:
                    grad = torch.autograd.grad(lp.sum(), yg, allow_unused=True, materialize_grads=True)[0]
                else:  # log_prob does not depend on y
                    grad = torch.zeros_like(y)
            lp = lp.detach()
            y = ops.langevin_update(yg.detach(), cond_t, grad, noise[k] if noise is not None else empty, rng, k,
                                    c["c1"], c["c2"], h, c["n"])
            bad[k] = (~torch.isfinite(lp) | ~torch.isfinite(y.reshape(B, D)).all(dim=1)).sum()
            if tr is not None:
                tr[k, :, 0] = lp
                tr[k, :, 1] = grad.reshape(B, D).norm(dim=1) * abs(c["alpha"])
            k += 1
        if c["d"] != 1.0:
            y = c["d"] * y
        y_cond = y
    return y.clone() if y is start else y


def _device_rng(y0: torch.Tensor, generator, seed) -> torch.Tensor:
    """[seed, offset] on y0's device, as sample_prior draws it (fused._rng), without a host synchronisation:
    an int seed travels through pinned memory to a CUDA device."""
    if seed is not None and y0.device.type == "cuda":
        return _rng(torch.empty(0), None, seed).pin_memory().to(y0.device, non_blocking=True)
    return _rng(y0, generator, seed)


# ---------------------------------------------------------------------------------------------------------------
# graph backend

class _Graph:
    __slots__ = ("graph", "fn", "y", "cond", "noise", "rng", "bad", "tr", "out")


def _visible_modules(log_prob) -> list:
    mods = []
    if isinstance(log_prob, nn.Module):
        mods.append(log_prob)
    owner = getattr(log_prob, "__self__", None)
    if isinstance(owner, nn.Module):
        mods.append(owner)
    for cell in getattr(log_prob, "__closure__", None) or ():
        try:
            v = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(v, nn.Module):
            mods.append(v)
    return mods


def _module_state(log_prob) -> tuple:
    """train/eval flags of every submodule and the storage of every parameter and buffer the engine can see."""
    state = []
    for root in _visible_modules(log_prob):
        state.append(tuple(m.training for m in root.modules()))
        state.append(tuple(p.data_ptr() for p in itertools.chain(root.parameters(), root.buffers())))
    return tuple(state)


def _graph_key(log_prob, y0, schedule, cond, noise, trace) -> tuple:
    fn = (id(log_prob.__self__), id(log_prob.__func__)) if inspect.ismethod(log_prob) else id(log_prob)
    return (fn, tuple(y0.shape), y0.dtype, y0.device, schedule, cond is not None, noise is not None, bool(trace),
            _module_state(log_prob))


def _graph_run(log_prob, y0, schedule, cond, noise, generator, seed, trace):
    key = _graph_key(log_prob, y0, schedule, cond, noise, trace)
    g = _GRAPHS.get(key)
    if g is not None:  # replay: device-side copies into the static inputs, no host synchronisation
        _GRAPHS.move_to_end(key)
        g.y.copy_(y0)
        if cond is not None:
            g.cond.copy_(cond)
        if noise is not None:
            g.noise.copy_(noise)
        else:
            g.rng.copy_(_device_rng(y0, generator, seed))
        g.graph.replay()
        return g.out.clone(), g.bad, (g.tr.clone() if trace else None)

    g = _Graph()
    g.fn = log_prob  # keeps the object (and so its id) alive while the graph is cached
    g.y = y0.detach().clone()
    g.cond = cond.detach().clone() if cond is not None else g.y
    g.noise = noise.detach().clone() if noise is not None else None
    g.rng = y0.new_zeros((2,), dtype=torch.int64) if noise is None else y0.new_empty((0,), dtype=torch.int64)
    if noise is None:
        g.rng.copy_(_device_rng(y0, generator, seed))
    S = schedule.total_steps
    g.bad = y0.new_zeros((S,), dtype=torch.int64)
    g.tr = y0.new_full((S, y0.shape[0], 2), float("nan")) if trace else None
    # Warm-up on a side stream (as torch.cuda.graphs documents); its result is this call's answer, so the model's
    # side effects (BatchNorm statistics, spectral-norm vectors) happen once per call, as in eager mode.
    current = torch.cuda.current_stream(y0.device)
    side = torch.cuda.Stream(y0.device)
    side.wait_stream(current)
    with torch.cuda.stream(side), _graph_chain():
        first = _chain(log_prob, g.y, g.cond, schedule, g.noise, g.rng, g.bad, g.tr)
    current.wait_stream(side)
    first.record_stream(current)
    result = (first, g.bad.clone(), g.tr.clone() if trace else None)
    g.graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(g.graph), _graph_chain():
            g.out = _chain(log_prob, g.y, g.cond, schedule, g.noise, g.rng, g.bad, g.tr)
    except Exception as e:
        raise RuntimeError(
            f"langevin(backend='graph'): log_prob could not be captured in a CUDA graph ({type(e).__name__}: {e}). "
            "A function that synchronises with the host (.item(), .cpu(), printing a tensor, data-dependent shapes, "
            "BatchNorm with momentum=None) cannot be captured: use backend='eager'.") from e
    _GRAPHS[key] = g
    while len(_GRAPHS) > MAX_GRAPHS:
        _GRAPHS.popitem(last=False)
    return result


# ---------------------------------------------------------------------------------------------------------------
# public entry point

def _summarise(tr: torch.Tensor) -> dict:
    return {"log_prob": tr[..., 0].mean(dim=1), "grad_norm": tr[..., 1].mean(dim=1), "per_chain": tr}


def langevin(log_prob, y0: torch.Tensor, schedule: LangevinSchedule, *, cond=None, noise=None, generator=None,
             seed=None, backend: str = "auto", trace: bool = False, check_finite: bool = True):
    """Langevin dynamics on any torch log-density (the module docstring gives the update and the graph rules).

    log_prob: callable ``log_prob(y, t) -> [B]``, y [B, ...] (chains along the first dimension), t the timestep
        (an int, T-1 ... 0); unnormalised log-density of each chain, differentiable in y. Chains must be
        independent (the gradient of the sum is taken). hebm_ext.sampling.targets builds the papers' targets.
    y0: [B, ...] float32 / float64, the initial chains. schedule: LangevinSchedule.
    cond: y_cond of the first timestep (default y0). noise: optional [S, *y0.shape], S = schedule.total_steps;
        otherwise the op draws Philox normals from a seed taken from ``generator`` (or torch's default generator
        of y0's device), or ``seed`` (an int: the same noise on every device and as sample_prior's fused kernel).
    backend: "eager" (autograd per step, the update as one op), "graph" (CUDA only: the whole loop captured once
        per key in a CUDA graph and replayed), "auto" (graph on CUDA, eager on CPU).
    trace: also return {"log_prob": [S], "grad_norm": [S] (means over chains), "per_chain": [S, B, 2]}.
    check_finite: raise ValueError naming the first step with non-finite log_prob values or chains and how many
        chains; it costs one host synchronisation at the end of the call (none per step). False skips it.

    Returns y [B, ...] (no gradient), or (y, trace) when ``trace``.
    """
    _check_inputs(log_prob, y0, schedule, cond, noise, backend)
    if backend == "auto":
        backend = "graph" if y0.device.type == "cuda" else "eager"
    if backend == "graph" and y0.device.type != "cuda":
        raise ValueError(f"backend='graph' captures CUDA graphs and needs y0 on a CUDA device, y0 is on "
                         f"{y0.device}: use backend='eager' (or 'auto')")
    B = y0.shape[0]
    if B == 0 or schedule.total_steps == 0:  # nothing to sample: only the d_t scalings
        y = y0.detach().clone()
        for d in reversed(schedule.d):
            y = y * d if d != 1.0 else y
        return (y, _summarise(y0.new_empty((schedule.total_steps, B, 2)))) if trace else y
    if backend == "graph":
        y, bad, tr = _graph_run(log_prob, y0, schedule, cond, noise, generator, seed, trace)
    else:
        rng = y0.new_empty((0,), dtype=torch.int64) if noise is not None else _device_rng(y0, generator, seed)
        bad = y0.new_zeros((schedule.total_steps,), dtype=torch.int64)
        tr = y0.new_full((schedule.total_steps, B, 2), float("nan")) if trace else None
        y = _chain(log_prob, y0.detach(), cond.detach() if cond is not None else y0.detach(), schedule, noise, rng,
                   bad, tr)
    if check_finite:
        _raise_if_nonfinite(bad, schedule, B)
    return (y, _summarise(tr)) if trace else y
