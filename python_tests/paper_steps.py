"""The machinery of the reference-step tests (test_paper_steps.py): record every random draw a method's training
step makes, in order, and replay the same numbers to a reference step written like the official script.

What the two sides share: the networks' initial parameters (the reference gets deep copies of the method's
networks, used only as the networks: their forward) and the random draws. Nothing else: the reference has its own
chains, losses, optimizers, schedules and top-down maps, written from the official files.

Recording: ``Draws`` is a TorchFunctionMode that logs the output of every random torch call (randn, randint,
normal_, ...). The samplers draw their Langevin noise inside the kernels (Philox), so while recording,
``explicit_noise`` replaces the method module's ``sample_prior`` / ``langevin`` by wrappers that draw the chain's
noise with torch.randn and pass it as the sampler's documented ``noise=`` argument; the wrapper logs it as one draw
per Langevin step (the shape ``randn_like(z)`` has in the official loops). The real samplers then run unchanged.

Replaying: the reference calls ``draws.randn(*shape)`` / ``draws.randn_like(z)`` / ``draws.randint(shape)`` where
the official code calls torch's; each takes the next recorded draw and checks its shape, so a method that draws in
another order than the official code (or more, or fewer numbers) fails the test. ``draws.assert_all_taken()`` at
the end.
"""
from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch.overrides import TorchFunctionMode

_RANDOM = {torch.randn, torch.randn_like, torch.rand, torch.rand_like, torch.randint, torch.randint_like,
           torch.randperm, torch.normal, torch.bernoulli, torch.multinomial, torch.Tensor.normal_,
           torch.Tensor.uniform_, torch.Tensor.bernoulli_, torch.Tensor.random_, torch.Tensor.exponential_}


class Draws(TorchFunctionMode):
    """Records random draws while active (``with draws:``); replays them with randn / randn_like / randint."""

    def __init__(self):
        super().__init__()
        self.log: list[torch.Tensor] = []
        self.recorded = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _RANDOM and torch.is_tensor(out):
            self.log.append(out.detach().clone())
            self.recorded += 1
        return out

    def split_last(self):
        """The last draw [S, ...] becomes S draws [...] (one per Langevin step)."""
        last = self.log.pop()
        self.log.extend(t.clone() for t in last.unbind(0))
        self.recorded += last.shape[0] - 1

    # ------------------------------------------------------------------ replay
    def take(self, shape, what: str = "a draw") -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        if not self.log:
            raise AssertionError(f"the reference wants {what} of shape {shape}, but the method drew no more "
                                 f"({self.recorded} draws in all)")
        t = self.log.pop(0)
        if tuple(t.shape) != shape:
            raise AssertionError(f"the reference wants {what} of shape {shape}; the method's next draw has shape "
                                 f"{tuple(t.shape)}: the two draw in a different order")
        return t.clone()

    def randn(self, *shape) -> torch.Tensor:
        return self.take(shape, "randn")

    def randn_like(self, z: torch.Tensor) -> torch.Tensor:
        return self.take(z.shape, "randn_like").to(z.dtype)

    def randint(self, shape) -> torch.Tensor:
        t = self.take(shape, "randint")
        assert not t.is_floating_point(), "the method's draw here is not an integer draw"
        return t

    def assert_all_taken(self):
        left = [tuple(t.shape) for t in self.log]
        assert not left, f"the method made {len(left)} draws the reference did not use: shapes {left}"


def _steps(schedule, kw) -> int:
    return schedule.max_steps if kw.get("timesteps") is not None else schedule.total_steps


@contextlib.contextmanager
def explicit_noise(module, draws: Draws, names=("sample_prior", "langevin")):
    """Within the block, the samplers that ``module`` (a method's module) imported draw their noise with torch
    (recorded by ``draws``, one draw per step) and get it as ``noise=``; nothing else changes."""
    saved = {}
    for name in names:
        real = getattr(module, name, None)
        if real is None:
            continue
        saved[name] = real

        def wrapper(first, y0, schedule, *, _real=real, **kw):
            if kw.get("noise") is None:
                kw["noise"] = torch.randn((_steps(schedule, kw),) + tuple(y0.shape), dtype=y0.dtype,
                                          device=y0.device)
                draws.split_last()
            return _real(first, y0, schedule, **kw)

        setattr(module, name, wrapper)
    try:
        yield
    finally:
        for name, real in saved.items():
            setattr(module, name, real)


def record_step(method, module, x):
    """Run method.train_step(x) once, recording its draws. Returns (losses dict, Draws)."""
    draws = Draws()
    with explicit_noise(module, draws), draws:
        out = method.train_step(x)
    return out, draws


def networks(*modules):
    """Deep copies of the method's networks for the reference (the same initial parameters)."""
    return [copy.deepcopy(m) for m in modules]


def assert_same_state(method_module: torch.nn.Module, reference_module: torch.nn.Module, what: str, tol=1e-10):
    """Every parameter and buffer of the two modules equal to ``tol`` (absolute, float64)."""
    a, b = dict(method_module.state_dict()), dict(reference_module.state_dict())
    assert a.keys() == b.keys(), f"{what}: different state keys"
    worst = 0.0
    for k in a:
        if a[k].is_floating_point():
            d = (a[k] - b[k]).abs().max().item() if a[k].numel() else 0.0
            assert d <= tol, f"{what}.{k} differs from the reference by {d:.3g} (tolerance {tol:g})"
            worst = max(worst, d)
        else:
            assert torch.equal(a[k], b[k]), f"{what}.{k} differs from the reference"
    return worst


def assert_same_losses(out: dict, ref: dict, tol=1e-10):
    for k, v in ref.items():
        assert k in out, f"the method reports no {k!r} (it reports {sorted(out)})"
        v = float(v.detach()) if torch.is_tensor(v) else float(v)
        assert math.isfinite(v), f"{k}: the reference's value is {v} (make the test's networks tamer)"
        assert abs(out[k] - v) <= tol * max(1.0, abs(v)), f"{k}: method {out[k]!r}, reference {v!r}"


def assert_moved(before: torch.nn.Module, after: torch.nn.Module, what: str):
    """The step changed the parameters (so that the equality above says something)."""
    d = max((p - q).abs().max().item() for p, q in zip(before.parameters(), after.parameters()))
    assert d > 1e-8, f"{what}: the training step did not change the parameters (max change {d:.3g})"
