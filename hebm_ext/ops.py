"""Thin wrappers over the compiled operators (torch.ops.hebm.*), their fake kernels, and what this build has."""
from __future__ import annotations

import torch

from . import _C  # noqa: F401  (registers torch.ops.hebm)

__all__ = ["available", "cpu_capability", "has_kernel", "langevin_update", "latent_langevin"]


_OPS = ("latent_langevin", "langevin_update")
# Looked up once: the registrations do not change after import (and torch.compile can read a dict).
_KERNELS = {(op, dev): torch._C._dispatch_has_kernel_for_dispatch_key(f"hebm::{op}", key)
            for op in _OPS for dev, key in (("cpu", "CPU"), ("cuda", "CUDA"))}


def has_kernel(op: str, device) -> bool:
    """Whether operator ``hebm::<op>`` has a kernel for ``device`` ("cpu" or "cuda") in this build."""
    dev = device if isinstance(device, str) else device.type
    return _KERNELS.get((op, dev.split(":")[0]), False)


def available() -> dict:
    """Which kernels this build has: ``{"cpu": True, "cuda": bool, "cpu_capability": "avx512" | ...}``."""
    return {
        "cpu": has_kernel("latent_langevin", "cpu"),
        "cuda": bool(_C.cuda_built()) and has_kernel("latent_langevin", "cuda"),
        "cuda_device": torch.cuda.is_available(),
        "cpu_capability": _C.cpu_capability(),
    }


def cpu_capability() -> str:
    """Instruction set the CPU kernels run with (HEBM_CPU_CAPABILITY=default|avx2|avx512 overrides)."""
    return _C.cpu_capability()


def latent_langevin(y0, cond, params, program, schedule, steps, timesteps, noise, rng, trace: bool,
                    precision: int = 0):
    """Raw call of ``hebm::latent_langevin``; see hebm_ext.sampling.fused for the documented entry point.
    precision: the index in hebm_ext.sampling.reference.PRECISIONS (0 fp32, 1 tf32, 2 bf16)."""
    return torch.ops.hebm.latent_langevin.default(y0, cond, params, program, schedule, steps, timesteps, noise, rng,
                                                  trace, precision)


@torch.library.register_fake("hebm::latent_langevin")
def _latent_langevin_fake(y0, cond, params, program, schedule, steps, timesteps, noise, rng, trace, precision=0):
    torch._check(y0.dim() == 2, lambda: "y0 must be [B, D]")
    per_chain = timesteps.numel() > 0
    S = max(steps) if per_chain else sum(steps)
    out = torch.empty_like(y0)
    tr = y0.new_empty((S, y0.shape[0], 2)) if trace else y0.new_empty((0,))
    return out, tr


def langevin_update(y, y_cond, grad, noise, rng, step: int, c1: float, c2: float, h: float, n: float):
    """Raw call of ``hebm::langevin_update``: ``c1 * y + c2 * y_cond + h * grad + n * xi`` in one pass, xi = ``noise``
    or the Philox normals of global step ``step`` (``rng`` = int64 [seed, offset] on y's device); y_cond and noise
    may be empty. See hebm_ext.sampling.generic for the documented entry point (hebm_ext.langevin)."""
    return torch.ops.hebm.langevin_update.default(y, y_cond, grad, noise, rng, step, c1, c2, h, n)


@torch.library.register_fake("hebm::langevin_update")
def _langevin_update_fake(y, y_cond, grad, noise, rng, step, c1, c2, h, n):
    torch._check(y.dim() >= 1, lambda: "y must have a chain dimension [B, ...]")
    torch._check(grad.shape == y.shape, lambda: f"grad must have y's shape {tuple(y.shape)}, got {tuple(grad.shape)}")
    return y.new_empty(y.shape)
