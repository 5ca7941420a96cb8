"""LatentEBMPrior: the latent program that the samplers run (ARCHITECTURE.md, "The two sampler tiers").

    log p~_t(y) = -alpha_t * sum_h E_h(z[slice_h], t) + log p_base(y)

y is the concatenation of the latent layers (in the order of ``dims``); alpha_t comes from the schedule. The base
is a Gaussian N(0, sigma^2 I), or a top-down GaussianLadder in the z-parameterisation (y = z, base = the ladder's
log p(z)) or in the u-parameterisation (y = u, z = T(u), base = N(0, I) on u).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .ladder import GaussianLadder


class LatentEBMPrior(nn.Module):
    """Energy heads over latent layers and a Gaussian base.

    dims: sizes of the latent layers, concatenated in this order into y [B, D], D = sum(dims).
    heads: list of ``(module, which)``; ``which`` is a layer index (the head sees that layer's slice) or "all"
        (the whole concatenation). A module maps [B, in] (and t) to energies [B]; the fused kernels take
        hebm_ext.EnergyMLP heads and hebm_ext.nn.ModuleEnergy (a user's module, see from_module); any other
        module runs on the reference sampler.
    sigma: std of the Gaussian base N(0, sigma^2 I); ``math.inf`` means no base term (a flat base, as in Gao et
        al.'s recovery-likelihood form). Only for the Gaussian base.
    base: None (the Gaussian base) or a GaussianLadder with the same dims (top layer first).
    param: with a ladder, "z" (the variable is z; the joint latent EBM prior, ALGORITHMS.md 3.1) or "u" (the
        variable is the whitened u, heads see z = T(u); the hierarchical EBM diffusion prior, section 6).

    energy(y, t=None) -> [B]: sum_h E_h(z).  base_log_prob(y) -> [B].  log_prob(y, t=None) -> [B] (unnormalised,
    alpha = 1).  z(y) -> the heads' input.
    """

    def __init__(self, dims, heads, sigma: float = 1.0, base=None, param: str = "z"):
        super().__init__()
        try:
            dims = [int(d) for d in dims]
        except TypeError as e:
            raise TypeError(f"dims must be a list of layer sizes, got {dims!r}") from e
        if not dims or any(d <= 0 for d in dims):
            raise ValueError(f"dims must be a non-empty list of positive layer sizes, got {dims}")
        sigma = float(sigma)
        if not (sigma > 0):
            raise ValueError(f"sigma must be positive (or math.inf for no base), got {sigma}")
        if param not in ("z", "u"):
            raise ValueError(f"param must be 'z' or 'u', got {param!r}")
        if base is not None:
            if not isinstance(base, GaussianLadder):
                raise TypeError(f"base must be None (Gaussian) or a hebm_ext.GaussianLadder, got {type(base).__name__}")
            if list(base.dims) != dims:
                raise ValueError(f"base has layer dims {base.dims} (top first) but dims = {dims}")
            if sigma != 1.0:
                raise ValueError("sigma sets the Gaussian base; with a GaussianLadder base use its sigma_top")
        elif param == "u":
            raise ValueError("param='u' needs a GaussianLadder base (with the Gaussian base u and z coincide)")
        self.dims = dims
        self.sigma = sigma
        self.base = base
        self.param = param
        self.offsets = [sum(dims[:i]) for i in range(len(dims))]
        self.D = sum(dims)
        mods, which = [], []
        for i, item in enumerate(heads):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise TypeError(f"heads[{i}] must be a pair (module, which), got {item!r}")
            mod, w = item
            if not isinstance(mod, nn.Module):
                raise TypeError(f"heads[{i}][0] must be an nn.Module (e.g. hebm_ext.EnergyMLP), got {type(mod).__name__}")
            if w != "all" and (isinstance(w, bool) or not isinstance(w, int) or not 0 <= w < len(dims)):
                raise ValueError(f"heads[{i}][1] must be a layer index in [0, {len(dims)}) or 'all', got {w!r}")
            in_dim = self.D if w == "all" else dims[w]
            expect = getattr(mod, "in_dim", None)
            if expect is not None and expect != in_dim:
                raise ValueError(f"heads[{i}] takes {expect} inputs but its slice ({w!r}) has {in_dim} dims")
            mods.append(mod)
            which.append(w)
        self.heads = nn.ModuleList(mods)
        self.which = which

    @classmethod
    def from_module(cls, net: nn.Module, dims, *, sigma: float = 1.0, output: str = "energy",
                    energy_form: str = "identity", input="flat") -> "LatentEBMPrior":
        """The prior of a researcher's own energy network, for the fused sampler (docs/PORTING.md):

            log p~(y) = -E(y) - ||y||^2 / (2 sigma^2),   E(y) = sign * sum_k form(net(y)_k)

        net: the module as the user's code has it (``_netE`` of the LEBM code, an nn.Sequential of spectrally
            normalised Linear layers and activations, ...); it is used as is, not copied: an optimizer step on it
            is seen by the next sample_prior call. dims: the latent size (an int) or the layer sizes, concatenated
            into y [B, D]. sigma: the std of the Gaussian reference (LEBM's e_prior_sig). output: "energy" (the
            net returns E, Pang et al.) or "log_density" (it returns log p~ up to the Gaussian, Cui et al.: sign -1).
            energy_form: LEBM's e_energy_form, "identity" | "tanh" (tanh(-s)) | "sigmoid" | "softplus".
            input: how the net takes the latent: "flat" [B, D], a per-chain shape such as (nz, 1, 1) for
            [B, nz, 1, 1] (the LEBM code), or "layers" (a list of [B, d_l] tensors, Cui et al.'s code).

        The structure is read once here (hebm_ext.nn.convert); when the fused kernels cannot run it,
        ``prior.heads[0].fused_reason`` names the first unsupported layer and sample_prior(backend="auto") runs the
        reference with that reason in its warning. Convert again after changing the module's layers.
        """
        from .convert import ModuleEnergy  # noqa: PLC0415

        if isinstance(dims, int) and not isinstance(dims, bool):
            dims = [dims]
        try:
            dims = [int(d) for d in dims]
        except TypeError as e:
            raise TypeError(f"dims must be the latent size or a list of layer sizes, got {dims!r}") from e
        head = ModuleEnergy(net, dims, output=output, energy_form=energy_form, input=input)
        return cls(dims, [(head, "all")], sigma=sigma)

    def head_slice(self, i: int) -> tuple[int, int]:
        """(offset, size) of head i's input in z."""
        w = self.which[i]
        return (0, self.D) if w == "all" else (self.offsets[w], self.dims[w])

    def check_y(self, y: torch.Tensor, name: str = "y") -> None:
        if not torch.is_tensor(y) or y.dim() != 2 or y.shape[1] != self.D:
            shape = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
            raise ValueError(f"{name} must be [B, {self.D}] (latent dims {self.dims}), got {shape}")

    @property
    def base_sigma(self):
        """The std of an isotropic Gaussian base on y (None for the z-parameterised ladder)."""
        if self.base is None:
            return self.sigma
        return 1.0 if self.param == "u" else None

    def z(self, y: torch.Tensor) -> torch.Tensor:
        """The heads' input: T(y) in the u-parameterisation, y itself otherwise."""
        return self.base.z_from_u(y) if self.base is not None and self.param == "u" else y

    def energy(self, y: torch.Tensor, t=None) -> torch.Tensor:
        self.check_y(y)
        z = self.z(y)
        e = y.new_zeros(y.shape[0])
        for i, head in enumerate(self.heads):
            off, n = self.head_slice(i)
            e = e + (head(z[:, off:off + n], t) if _takes_time(head) else head(z[:, off:off + n]))
        return e

    def base_log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """log p_base(y) up to a constant: -||y||^2/(2 sigma^2), the ladder's log p(z), or -||u||^2/2."""
        self.check_y(y)
        if self.base is not None:
            return self.base.log_prob(y) if self.param == "z" else -(y * y).sum(1) / 2
        if math.isinf(self.sigma):
            return y.new_zeros(y.shape[0])
        return -(y * y).sum(1) / (2 * self.sigma ** 2)

    def log_prob(self, y: torch.Tensor, t=None) -> torch.Tensor:
        return -self.energy(y, t) + self.base_log_prob(y)

    def extra_repr(self) -> str:
        base = f"base=GaussianLadder, param={self.param!r}" if self.base is not None else f"sigma={self.sigma}"
        return f"dims={self.dims}, which={self.which}, {base}"


def _takes_time(head: nn.Module) -> bool:
    return getattr(head, "time_steps", 0) > 0
