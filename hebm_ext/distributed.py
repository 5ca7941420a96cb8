"""Data-parallel training over torch.distributed (launched by torchrun): every rank runs the same method on its
shard of the data; the gradients are all-reduced (averaged) before every optimizer step, as the papers' multi-GPU
code does explicitly (ALGORITHMS.md 6.6); Langevin chains run on each rank's own modules; rank 0 writes."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_from_env(device: str | None = None) -> DistInfo:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = device == "cuda" or (device is None and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA GPU is visible")
    dev = torch.device("cuda", local) if want_cuda else torch.device("cpu")
    if want_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def broadcast_module(module: torch.nn.Module) -> None:
    """Every rank starts from rank 0's parameters and buffers."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params) -> None:
    """All-reduce (average) the gradients of ``params`` across ranks, in one flat buffer."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    o = 0
    for g in grads:
        g.copy_(flat[o:o + g.numel()].view_as(g))
        o += g.numel()


def all_reduce_mean(values: dict, device) -> dict:
    """The mean over ranks of a dict of floats (identical keys on every rank)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown(ok: bool = True) -> None:
    """Leave the process group: a barrier first when the command succeeded (so that rank 0, which hosts the
    launcher's store, does not exit while another rank still uses it), then ``destroy_process_group``, before the
    interpreter's teardown (Gloo's worker threads destroyed at interpreter exit abort the process: "terminate
    called without an active exception"). A no-op outside torchrun."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if ok:
            dist.barrier()
    finally:
        dist.destroy_process_group()
