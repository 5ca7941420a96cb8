"""Thin wrappers over the compiled operators (torch.ops.hebm.*), their fake kernels, and what this build has."""
from __future__ import annotations

import torch

from . import _C  # noqa: F401  (registers torch.ops.hebm)

__all__ = ["available", "cpu_capability", "has_kernel", "latent_langevin"]


_OPS = ("latent_langevin",)
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


def latent_langevin(y0, cond, params, program, schedule, steps, timesteps, noise, rng, trace: bool):
    """Raw call of ``hebm::latent_langevin``; see hebm_ext.sampling.fused for the documented entry point."""
    return torch.ops.hebm.latent_langevin.default(y0, cond, params, program, schedule, steps, timesteps, noise, rng, trace)


@torch.library.register_fake("hebm::latent_langevin")
def _latent_langevin_fake(y0, cond, params, program, schedule, steps, timesteps, noise, rng, trace):
    torch._check(y0.dim() == 2, lambda: "y0 must be [B, D]")
    per_chain = timesteps.numel() > 0
    S = max(steps) if per_chain else sum(steps)
    out = torch.empty_like(y0)
    tr = y0.new_empty((S, y0.shape[0], 2)) if trace else y0.new_empty((0,))
    return out, tr
