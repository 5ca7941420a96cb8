"""Modules -> the fused kernels' latent program: ONE flat parameter buffer plus an int layout
(csrc/core/program.h documents the layout; this file writes it)."""
from __future__ import annotations

import math

import torch

from ..nn.energy import ACT_CODES, MLP, EnergyMLP, no_power_iteration
from ..nn.prior import LatentEBMPrior

MAGIC = 0x4842454D
VERSION = 1
BASE_NONE, BASE_GAUSSIAN, BASE_LADDER_Z, BASE_LADDER_U = 0, 1, 2, 3
NET_HEAD, NET_LADDER = 0, 1
MAX_NETS, MAX_LINEARS, MAX_LAYERS = 32, 96, 16


def unsupported_reason(prior: LatentEBMPrior) -> str | None:
    """Why the fused kernels cannot run this prior, or None when they can."""
    if not isinstance(prior, LatentEBMPrior):
        return f"prior is a {type(prior).__name__}, not a hebm_ext.LatentEBMPrior"
    if len(prior.dims) > MAX_LAYERS:
        return f"prior has {len(prior.dims)} latent layers (the kernels take at most {MAX_LAYERS})"
    n_lin = 0
    if prior.base is not None:
        for i, net in enumerate(prior.base.nets):
            if type(net) is not MLP or net.time_steps:
                return f"base.nets[{i}] is not a plain hebm_ext.MLP (the fused kernels run the GaussianLadder's MLPs)"
            n_lin += len(net.linears)
    for i, head in enumerate(prior.heads):
        if type(head) is not EnergyMLP:
            return (f"heads[{i}] is a {type(head).__name__}; the fused kernels run hebm_ext.EnergyMLP heads "
                    "(any other module runs on the reference sampler)")
        n_lin += len(head.linears)
    n_nets = len(prior.heads) + (len(prior.base.nets) if prior.base is not None else 0)
    if n_nets > MAX_NETS:
        return f"prior has {n_nets} networks (heads and ladder conditionals; the kernels take at most {MAX_NETS})"
    if n_lin > MAX_LINEARS:
        return f"prior has {n_lin} linear layers in all (the kernels take at most {MAX_LINEARS})"
    return None


class _Builder:
    def __init__(self, dtype, device):
        self.dtype, self.device = dtype, device
        self.chunks, self.size = [], 0

    def add(self, t: torch.Tensor) -> int:
        off = self.size
        flat = t.detach().reshape(-1).to(dtype=self.dtype, device=self.device)
        self.chunks.append(flat)
        self.size += flat.numel()
        return off

    def scalar(self, v: float) -> int:
        # made on the device by a fill kernel: no pageable host-to-device copy (the CUDA host path never syncs)
        return self.add(torch.full((1,), float(v), dtype=self.dtype, device=self.device))

    def tensor(self) -> torch.Tensor:
        if not self.chunks:
            return torch.zeros(1, dtype=self.dtype, device=self.device)
        return torch.cat(self.chunks)


def _mlp_entries(b: _Builder, mlp: MLP, in_off: int, role: int, out_off: int, out_dim: int):
    net = [role, in_off, mlp.in_dim, ACT_CODES[mlp.activation],
           b.scalar(mlp.slope) if mlp.activation == "lrelu" else -1,
           len(mlp.linears), out_off, out_dim, mlp.time_steps]
    lins = []
    with torch.no_grad(), no_power_iteration(mlp):
        tb = mlp.time_bias() if mlp.time_steps > 0 else None
        for i, lin in enumerate(mlp.linears):
            w = b.add(lin.weight)
            bias = b.add(lin.bias) if lin.bias is not None else -1
            tbo = b.add(tb[:, i, :].contiguous()) if tb is not None and i < mlp.depth else -1
            lins.append([lin.in_features, lin.out_features, w, bias, tbo])
    return net, lins


def build_program(prior: LatentEBMPrior, dtype: torch.dtype, device) -> tuple[torch.Tensor, list]:
    """(params [P] of ``dtype`` on ``device``, program ints) for ``prior``. Raises ValueError when unsupported."""
    reason = unsupported_reason(prior)
    if reason:
        raise ValueError(reason)
    b = _Builder(dtype, device)
    nets, lins = [], []
    soft_clamp = 0
    if prior.base is not None:
        ladder = prior.base
        base = BASE_LADDER_U if prior.param == "u" else BASE_LADDER_Z
        base_param = b.scalar(ladder.sigma_min)
        b.scalar(ladder.sigma_top)  # base_param + 1
        soft_clamp = int(ladder.soft_clamp)
        for l, net in enumerate(ladder.nets, start=1):  # conditional of layer l given layer l - 1, top-down
            entry, ls = _mlp_entries(b, net, ladder.offsets[l - 1], NET_LADDER, ladder.offsets[l], 2 * ladder.dims[l])
            nets.append(entry)
            lins += ls
    elif math.isinf(prior.sigma):
        base, base_param = BASE_NONE, -1
    else:
        base, base_param = BASE_GAUSSIAN, b.scalar(1.0 / prior.sigma ** 2)
    for i, head in enumerate(prior.heads):
        off, n = prior.head_slice(i)
        net, ls = _mlp_entries(b, head, off, NET_HEAD, -1, 1)
        nets.append(net)
        lins += ls
    header = [MAGIC, VERSION, prior.D, len(prior.dims), base, base_param, soft_clamp, len(nets), len(lins)]
    layers = [v for off, dim in zip(prior.offsets, prior.dims) for v in (off, dim)]
    program = header + layers + [v for n in nets for v in n] + [v for L in lins for v in L]
    return b.tensor(), program


def _versions(prior: LatentEBMPrior):
    return tuple((id(t), t._version) for t in list(prior.parameters()) + list(prior.buffers()))


def packed(prior: LatentEBMPrior, dtype: torch.dtype, device) -> tuple[torch.Tensor, list]:
    """build_program, cached on the prior and rebuilt when any parameter or buffer changes (in-place optimizer
    steps bump the tensors' versions)."""
    if torch.compiler.is_compiling():
        return build_program(prior, dtype, device)
    key = (dtype, torch.device(device), _versions(prior))
    cache = prior.__dict__.setdefault("_hebm_packed", {})
    hit = cache.get((dtype, torch.device(device)))
    if hit is not None and hit[0] == key:
        return hit[1], hit[2]
    params, program = build_program(prior, dtype, device)
    cache[(dtype, torch.device(device))] = (key, params, program)
    return params, program
