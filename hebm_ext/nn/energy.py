"""MLP and EnergyMLP: the latent networks of the LEBM line of work (energies, ladder conditionals), optionally
time-conditioned."""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("lrelu", "gelu", "silu", "tanh")  # EnergyMLP's choices
# Every kind of the kernels, numbered as csrc/core/activations.h's ActKind ("softplus" is softplus - log(2)/beta
# there; converted modules use the kinds past "tanh", hebm_ext/nn/convert.py)
ACT_CODES = {"lrelu": 0, "gelu": 1, "silu": 2, "tanh": 3, "gelu_tanh": 4, "elu": 5, "softplus": 6, "identity": 7}
ACT_WITH_PARAM = ("lrelu", "elu", "softplus")  # slope, alpha, beta


def activation(x: torch.Tensor, kind: str, slope: float = 0.2) -> torch.Tensor:
    if kind == "lrelu":
        return F.leaky_relu(x, slope)
    if kind == "gelu":
        return F.gelu(x)  # exact erf form, as the kernels
    if kind == "silu":
        return F.silu(x)
    return torch.tanh(x)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 1e4) -> torch.Tensor:
    """[cos(t f_j), sin(t f_j)], f_j = exp(-ln(max_period) j / (dim/2)): the PositionalEmbedding of the
    hierarchical EBM diffusion code (ALGORITHMS.md 6.4). t: [N] (integer timesteps) -> [N, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


class MLP(nn.Module):
    """h_1 = W_1 x + b_1 (+ tau_1(t)), h_k = W_k phi(h_{k-1}) + b_k (+ tau_k(t)), out = W phi(h_depth) + b.

    ``depth`` hidden layers of width ``hidden`` with activation phi ("lrelu" with ``slope``, "gelu" (exact erf form),
    "silu", "tanh"), then a linear map to ``out_dim``. With ``spectral_norm=True`` every linear layer is spectrally
    normalised (torch.nn.utils.parametrizations). The fused kernels run this structure (csrc/core/program.h).

    Time conditioning (``time_steps=T > 0``): every hidden layer gets a per-timestep additive bias tau_k(t), learned
    through a sinusoidal embedding of t and a small MLP (Linear - SiLU - Linear), so the fused kernels see it as a
    [T, hidden] table per layer. ``t`` is then an integer tensor [B] (or an int) in 0..T-1.

    forward(x [B, in_dim], t=None) -> [B, out_dim].
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int, depth: int, activation: str = "lrelu",
                 slope: float = 0.2, spectral_norm: bool = False, time_steps: int = 0, time_embed_dim: int = 64):
        super().__init__()
        _check_int("in_dim", in_dim, 1)
        _check_int("out_dim", out_dim, 1)
        _check_int("hidden", hidden, 1)
        _check_int("depth", depth, 0)
        _check_int("time_steps", time_steps, 0)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not math.isfinite(float(slope)):
            raise ValueError(f"slope must be finite, got {slope!r}")
        self.in_dim, self.out_dim, self.hidden, self.depth = in_dim, out_dim, hidden, depth
        self.activation, self.slope = activation, float(slope)
        self.spectral_norm, self.time_steps = bool(spectral_norm), time_steps
        widths = [in_dim] + [hidden] * depth + [out_dim]
        layers = [nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
        if spectral_norm:
            layers = [nn.utils.parametrizations.spectral_norm(lin) for lin in layers]
        self.linears = nn.ModuleList(layers)
        if time_steps > 0:
            if depth == 0:
                raise ValueError("time_steps > 0 needs depth >= 1 (the time bias enters the hidden layers)")
            _check_int("time_embed_dim", time_embed_dim, 2)
            self.time_embed_dim = time_embed_dim
            self.time_mlp = nn.Sequential(nn.Linear(time_embed_dim, hidden), nn.SiLU(), nn.Linear(hidden, depth * hidden))

    def time_bias(self) -> torch.Tensor:
        """The per-timestep additive biases of the hidden layers, [T, depth, hidden]."""
        if self.time_steps == 0:
            raise RuntimeError(f"this {type(self).__name__} is not time-conditioned (time_steps=0)")
        ref = self.time_mlp[0].weight
        t = torch.arange(self.time_steps, device=ref.device)
        emb = sinusoidal_embedding(t, self.time_embed_dim).to(ref.dtype)
        return self.time_mlp(emb).view(self.time_steps, self.depth, self.hidden)

    def forward(self, x: torch.Tensor, t=None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"input must be [B, {self.in_dim}], got {tuple(x.shape)}")
        tb = None
        if self.time_steps > 0:
            if t is None:
                raise ValueError(f"t is required: this {type(self).__name__} is conditioned on {self.time_steps} timesteps")
            if not torch.is_tensor(t):
                t = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
            tb = self.time_bias()[t.long()]  # [B, depth, hidden]
        h = x
        for i, lin in enumerate(self.linears[:-1]):
            h = lin(h)
            if tb is not None:
                h = h + tb[:, i]
            h = activation(h, self.activation, self.slope)
        return self.linears[-1](h)

    def extra_repr(self) -> str:
        s = f"in_dim={self.in_dim}, out_dim={self.out_dim}, hidden={self.hidden}, depth={self.depth}, " \
            f"activation={self.activation!r}"
        if self.activation == "lrelu":
            s += f", slope={self.slope}"
        if self.spectral_norm:
            s += ", spectral_norm=True"
        if self.time_steps:
            s += f", time_steps={self.time_steps}"
        return s


class EnergyMLP(MLP):
    """E(z, t): an MLP with one output, an energy (lower is more likely); ALGORITHMS.md 1.1 and 10.2.

    EnergyMLP(in_dim, hidden, depth, activation="lrelu", slope=0.2, spectral_norm=False, time_steps=0):
    ``depth`` hidden layers of width ``hidden``, then a linear map to one scalar; time conditioning as in MLP.
    forward(z [B, in_dim], t=None) -> energy [B].
    """

    def __init__(self, in_dim: int, hidden: int, depth: int, activation: str = "lrelu", slope: float = 0.2,
                 spectral_norm: bool = False, time_steps: int = 0, time_embed_dim: int = 64):
        super().__init__(in_dim, 1, hidden, depth, activation, slope, spectral_norm, time_steps, time_embed_dim)

    def forward(self, z: torch.Tensor, t=None) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.in_dim:
            raise ValueError(f"z must be [B, {self.in_dim}], got {tuple(z.shape)}")
        return super().forward(z, t).squeeze(-1)


@contextlib.contextmanager
def no_power_iteration(module: nn.Module):
    """Read spectrally normalised weights as they stand: no power iteration (and no update of its vectors)."""
    from torch.nn.utils.parametrizations import _SpectralNorm  # noqa: PLC0415

    sn = [m for m in module.modules() if isinstance(m, _SpectralNorm) and m.training]
    for m in sn:
        m.training = False
    try:
        yield
    finally:
        for m in sn:
            m.training = True
