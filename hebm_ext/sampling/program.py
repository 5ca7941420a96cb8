"""Modules -> the fused kernels' latent program: ONE flat parameter buffer plus an int layout
(csrc/core/program.h documents the layout; this file writes it)."""
from __future__ import annotations

import math

import torch

from ..nn.convert import Act, ModuleEnergy, effective_bias, effective_weight
from ..nn.energy import ACT_CODES, ACT_WITH_PARAM, MLP, EnergyMLP, no_power_iteration
from ..nn.prior import LatentEBMPrior

MAGIC = 0x4842454D
VERSION = 2
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
        if isinstance(head, ModuleEnergy):
            if head.fused_reason is not None:
                return (f"heads[{i}] (a {type(head.net).__name__} converted by LatentEBMPrior.from_module): "
                        f"{head.fused_reason}; run it on the generic engine (hebm_ext.langevin with the prior's "
                        "log_prob) or the reference sampler")
            n_lin += head.n_linears
            continue
        if type(head) is not EnergyMLP:
            return (f"heads[{i}] is a {type(head).__name__}; the fused kernels run hebm_ext.EnergyMLP heads and "
                    "modules converted by LatentEBMPrior.from_module (any other module runs on the reference "
                    "sampler)")
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

    def add(self, t: torch.Tensor, align: int = 1) -> int:
        pad = -self.size % align
        if pad:  # zeros made on the device (a fill kernel, no host-to-device copy)
            self.chunks.append(torch.zeros(pad, dtype=self.dtype, device=self.device))
            self.size += pad
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


def _linear_entry(b: _Builder, w: torch.Tensor, bias, tb_off: int, act: str = "identity", param=None) -> list:
    """(in, out, w, b, tb, act, act_param) of one linear layer (csrc/core/program.h, version 2)."""
    code = ACT_CODES[act]
    p = b.scalar(param) if act in ACT_WITH_PARAM else -1
    # weights at a multiple of 4 elements: with in % 4 == 0 every row starts 16-byte aligned, which the CUDA
    # streamed path's 16-byte cp.async needs (csrc/core/streamed_linear.h; element copies otherwise)
    return [w.shape[1], w.shape[0], b.add(w, align=4), b.add(bias) if bias is not None else -1, tb_off, code, p]


def _mlp_entries(b: _Builder, mlp: MLP, in_off: int, role: int, out_off: int, out_dim: int):
    net = [role, in_off, mlp.in_dim, len(mlp.linears), out_off, out_dim, mlp.time_steps]
    lins = []
    with torch.no_grad(), no_power_iteration(mlp):
        tb = mlp.time_bias() if mlp.time_steps > 0 else None
        for i, lin in enumerate(mlp.linears):
            hidden = i < mlp.depth
            tbo = b.add(tb[:, i, :].contiguous()) if tb is not None and hidden else -1
            lins.append(_linear_entry(b, lin.weight, lin.bias, tbo, mlp.activation if hidden else "identity",
                                      mlp.slope))
    return net, lins


def _module_entries(b: _Builder, head: ModuleEnergy, in_off: int):
    """A converted module (nn/convert.py): its chain of layers x_j = m_j phi_j(a_j h_j) + c_j, h_j = W_j x_{j-1}
    + b_j, and E = sign * sum_k x_L,k, packed for kernels that compute x'_j = phi_j(W'_j x'_{j-1} + b'_j):
        W'_j = a_j m_{j-1} W_j,   b'_j = a_j (b_j + c_{j-1} W_j 1)      (m_{-1} = 1, c_{-1} = 0)
    then the output row sign * m_L 1^T with bias sign * c_L n (or, when the last layer has no activation, that
    layer folded into one row: sign * m_{L-1} 1^T W_L, sign * (1^T b_L + c_{L-1} 1^T W_L 1)). Weights are read live:
    spectral norm as the current W / sigma (no power iteration)."""
    lins = []
    m_prev, c_prev = 1.0, 0.0
    layers = head.layers
    dt = None
    with torch.no_grad():
        for j, layer in enumerate(layers):
            if layer.linear is not None:
                w = effective_weight(layer.linear)
                bias = effective_bias(layer.linear)
            else:
                ref = next(head.net.parameters())
                w = torch.eye(layer.width, dtype=ref.dtype, device=ref.device)
                bias = None
            dt = w
            if c_prev != 0.0:
                shift = c_prev * w.sum(1)
                bias = shift if bias is None else bias + shift
            last = j == len(layers) - 1
            if last and layer.act is None:  # fold the sum over the outputs into this layer
                wo = head.sign * m_prev * w.sum(0, keepdim=True)
                bo = (head.sign * (bias.sum() if bias is not None else w.new_zeros(()))).reshape(1)
                lins.append(_linear_entry(b, wo, bo, -1))
                break
            act = layer.act if layer.act is not None else Act("identity")  # Linear - Linear
            a = act.pre
            wj = a * m_prev * w if a * m_prev != 1.0 else w
            bj = (a * bias if a != 1.0 else bias) if bias is not None else None
            lins.append(_linear_entry(b, wj, bj, -1, act.kind, act.param))
            m_prev, c_prev = act.post, act.shift
        else:  # the last layer has an activation: the output row sums its units
            n = layers[-1].width
            wo = dt.new_full((1, n), head.sign * m_prev)
            bo = dt.new_full((1,), head.sign * c_prev * n)
            lins.append(_linear_entry(b, wo, bo, -1))
    net = [NET_HEAD, in_off, head.in_dim, len(lins), -1, 1, 0]
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
        if isinstance(head, ModuleEnergy):
            net, ls = _module_entries(b, head, off)
        else:
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
