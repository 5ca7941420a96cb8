"""Hierarchical EBM diffusion prior on a (spatial) backbone: the paper's configuration (Cui & Han, ICML 2024,
ALGORITHMS.md 6.1-6.7). diffusion-ebm with backbone="spatial" (our SpatialHVAE as stage 1, or loaded frozen) or a
user's backbone object; the flat MLP path (backbone="mlp") stays in diffusion_ebm.py on the fused kernels.

Stage 2, one training step (6.6), groups l = 0 .. L-1 (top first), one EBM f_l = -E_l per group:
    u_0 = u_from_z(z+),  z+ ~ q(z | x);   t ~ U{0 .. T-1} per sample (one t for all groups of a sample)
    per group: u_t = a_cum[t] u_0 + s_cum[t] eps,  u_{t+1} = a[t+1] u_t + s[t+1] eps'              (6.2)
    u- = K steps of the conditional Langevin chain from y = u_{t+1} through the frozen top-down map (6.3):
        y <- y + 0.5 grad_y F(T(y), t) - 0.5 s_t^2 grad_y Ker(y) + s_t xi,
        F = sum_l f_l(T(y)_l, t),  Ker = r ||a y - u_{t+1}||^2 / (2 sigma^2) + ||y||^2 / 2
    loss = sum_l mean_b [ (E_l(T(u_t)_l, t) - E_l(T(u-)_l, t)) / s_t^2 ]                         (6.6)
    one Adam(e_lr, e_betas, weight decay) over all EBMs (Adam is per parameter: the same as one per group),
    ExponentialLR(e_gamma) per epoch.
Sampling (6.7): u_T ~ N(0, I); for t = T-1 .. 0 the chain above at t (every chain at the same t); z = T(u_0);
x = decode(z). The EBMs are in eval mode while sampling (spectral norm without power iteration), as in the code.

The chains run on the generic engine (hebm_ext.langevin). Chains of one batch sit at different t and so have
different step sizes s_t; the engine's schedule has one step size per timestep, so the chain runs in the scaled
variable w = y / s_t (per chain) with unit steps: w <- w + 0.5 grad_w log p~(s_t w) + xi, which is exactly the update
above (grad_w = s_t grad_y, log p~ = F / s_t^2 - Ker).
"""
from __future__ import annotations

import torch
from torch import nn

from ..sampling import LangevinSchedule, langevin
from .backbone_stage import BackboneStage, build_backbone
from .base import adam, check_positive


class ConditionalChainTarget(nn.Module):
    """log p~(s w | u_{t+1}) per chain, the conditional density of 6.3 in the scaled variable w = y / s_t:

        log p~ = F(T(y), t) / s_t^2 - r ||a y - u_{t+1}||^2 / (2 sigma^2) - ||y||^2 / 2,    y = s_t w

    with per-chain t, s_t, a = a_s[t+1], sigma = sigmas[t+1], r = is_recovery[t+1] held in buffers (``set``).
    forward(w [B, D], t_engine) -> [B] (the engine's own timestep argument is not used)."""

    def __init__(self, backbone, ebms, layout):
        super().__init__()
        self.backbone, self.ebms, self.layout = backbone, ebms, layout
        for k in ("cond", "t", "s", "s2", "a", "sig2", "r"):
            self.register_buffer(k, torch.zeros(0), persistent=False)

    def set(self, cond, t, s2, a, sig2, r):
        """Copy the chains' conditioning in place when the shapes allow (a captured CUDA graph of the generic
        engine keeps reading the same buffers: no new capture per call), else replace the buffers."""
        for k, v in (("cond", cond), ("t", t), ("s2", s2), ("s", s2.sqrt()), ("a", a), ("sig2", sig2), ("r", r)):
            old = getattr(self, k)
            if old.shape == v.shape and old.dtype == v.dtype and old.device == v.device:
                old.copy_(v)
            else:
                setattr(self, k, v.clone())
        return self

    def forward(self, w, _t=None):
        y = w * self.s[:, None]
        z = self.backbone.z_from_u(self.layout.split(y))
        f = -sum(e(zl, self.t) for e, zl in zip(self.ebms, z))
        ker = self.r * ((self.a[:, None] * y - self.cond) ** 2).sum(1) / (2 * self.sig2) + (y * y).sum(1) / 2
        return f / self.s2 - ker


class SpatialDiffusionEBM(BackboneStage):
    name = "diffusion-ebm"

    def __init__(self, config, backbone: nn.Module | None = None):
        c = config
        check_positive(c, "b_square", "e_lr", "batch_size", "ebm_ch")
        if isinstance(c.T, bool) or not isinstance(c.T, int) or c.T < 2:
            raise ValueError(f"DiffusionEBMConfig.T must be an integer >= 2, got {c.T!r}")
        super().__init__(c, backbone if backbone is not None else build_backbone(c))
        self.ebms = self.group_energy_nets(c.ebm, time_steps=c.T, flat=(c.head_hidden, c.head_depth), ch=c.ebm_ch)
        rl = LangevinSchedule.recovery_likelihood(c.T, c.e_l_steps, c.b_square, form="hierarchical")
        for k in ("a_s", "sigmas", "a_s_cum", "sigmas_cum", "is_recovery", "step_size_square"):
            # float64 (.float() / .double() of the method cast them); indexed, then cast to the chains' dtype
            self.register_buffer(f"_{k}", torch.tensor(rl.extras[k], dtype=torch.float64), persistent=False)
        # unit steps in w = y / s_t (module docstring): h = 1/2, noise std 1
        self.chain_schedule = LangevinSchedule.lebm(c.e_l_steps, 1.0)
        self.optimizers["e"] = adam(self.ebms.parameters(), c.e_lr, c.e_betas, c.e_weight_decay)
        self.schedulers["e"] = torch.optim.lr_scheduler.ExponentialLR(self.optimizers["e"], c.e_gamma)
        # not a registered submodule: it holds the backbone and the EBMs, which the method already owns
        self.__dict__["target"] = ConditionalChainTarget(self.backbone, self.ebms, self.layout)
        self.noise_fn = None  # tests: noise_fn(S, y0) -> explicit chain noise [S, *y0.shape]

    # ------------------------------------------------------------------ chains
    def conditional_chain(self, u_next: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """u_t- from K steps of 6.3's chain started at y = u_{t+1} (flat [B, D]), each chain at its own t [B]."""
        s2 = self._step_size_square[t].to(u_next.dtype)
        self.target.set(u_next, t, s2, self._a_s[t + 1].to(u_next.dtype), self._sigmas[t + 1].to(u_next.dtype) ** 2,
                        self._is_recovery[t + 1].to(u_next.dtype))
        s = self.target.s[:, None]
        noise = self.noise_fn(self.chain_schedule.total_steps, u_next) if self.noise_fn is not None else None
        w = langevin(self.target, u_next / s, self.chain_schedule, noise=noise, backend=self.config.chain_backend)
        return w * s

    def prior_latents(self, n: int) -> torch.Tensor:
        """z = T(u_0), u_0 from the annealed chain of 6.7 started at u_T ~ N(0, I); flat [n, D]."""
        was = self.ebms.training
        self.ebms.eval()
        try:
            u = self.randn_groups(n)
            for t in reversed(range(self.config.T)):
                u = self.conditional_chain(u, torch.full((n,), t, dtype=torch.long, device=self.device))
        finally:
            self.ebms.train(was)
        with torch.no_grad():
            return self.layout.cat(self.backbone.z_from_u(self.layout.split(u)))

    def diffuse(self, u0: list, t: torch.Tensor):
        """(u_t, u_{t+1}) per group (6.2), the code's draw order: for each group, eps then eps'."""
        pos, nxt = [], []
        for u in u0:
            view = (-1,) + (1,) * (u.dim() - 1)
            u_t = self._a_s_cum[t].to(u.dtype).view(view) * u + self._sigmas_cum[t].to(u.dtype).view(view) * \
                torch.randn_like(u)
            pos.append(u_t)
            nxt.append(self._a_s[t + 1].to(u.dtype).view(view) * u_t + self._sigmas[t + 1].to(u.dtype).view(view) *
                       torch.randn_like(u))
        return pos, nxt

    # ------------------------------------------------------------------ learning
    def _ebm_step(self, x) -> dict:
        c = self.config
        self._enter_stage2()
        B = x.shape[0]
        with torch.no_grad():
            u0 = self.backbone.u_from_z(self.backbone.encode(x))
        t = torch.randint(0, c.T, (B,), device=self.device)
        u_t, u_next = self.diffuse(u0, t)
        u_neg = self.conditional_chain(self.layout.cat(u_next), t)
        with torch.no_grad():
            z_pos = self.backbone.z_from_u(u_t)
            z_neg = self.backbone.z_from_u(self.layout.split(u_neg))
        s2 = self._step_size_square[t].to(u_neg.dtype)

        def per_group(e, zp, zn):  # the positive forward, then the negative
            ep, en = e(zp, t), e(zn, t)
            return ((ep - en) / s2).mean(), ep.detach().mean(), en.detach().mean()

        return self._ebm_update(z_pos, z_neg, per_group)
