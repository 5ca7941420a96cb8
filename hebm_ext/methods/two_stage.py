"""The joint EBM prior's two-stage training on a frozen backbone (Cui, Wu & Han, CVPR 2023, ALGORITHMS.md 3.2;
jcui1224/hierarchical-joint-ebm two-stage-training/ebms_train.py): joint-ebm with scheme="two-stage".

Stage 1 trains the backbone by its ELBO (or it is loaded frozen: ``load_backbone`` / ``hebm train --backbone``).
Stage 2, one step, one EBM f_l = -E_l per group (TwoStageGroupEBM, the code's ``_netEzi``):
    z+ = encode(x)                                                  (a posterior sample)
    u ~ N(0, I) (fresh), K = ld_steps steps in u-space with eta = ld_size:
        u <- u + 0.5 eta grad_u [ sum_l f_l(T(u)_l) + log p_beta(T(u)) ] + sqrt(eta) xi       (ld_base="z", the code)
        (the code's 0.5 eta B grad of batch means is this per-sample gradient); ld_base="u" puts the N(0, I)
        density of u, -||u||^2 / 2, in place of log p_beta(T(u)) (the ICML-24 correction: log p_beta(z(u)) lacks
        the log-Jacobian of T)
    z- = T(u);  loss = sum_l [ mean E_l(z+_l) - mean E_l(z-_l) ]    (the code's mean f(z-) - mean f(z+))
    Adam(e_lr 2e-5, betas (0.99, 0.999), weight decay 3e-5) over all EBMs (per parameter: as one per group).
Sampling: the same chain, z = T(u_K), x = decode(z). The chain runs on the generic engine (hebm_ext.langevin).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..sampling import LangevinSchedule, langevin
from .backbone_stage import BackboneStage, build_backbone
from .base import adam, check_positive

LD_BASES = ("z", "u")


class TwoStageTarget(nn.Module):
    """log p~(u) = -sum_l E_l(T(u)_l) + log p_beta(T(u))  (base "z")  or  - ||u||^2 / 2  (base "u");
    forward(u [B, D], t=None) -> [B]."""

    def __init__(self, backbone, ebms, layout, base: str):
        super().__init__()
        self.backbone, self.ebms, self.layout, self.base = backbone, ebms, layout, base

    def forward(self, u, _t=None):
        z = self.backbone.z_from_u(self.layout.split(u))
        lp = -sum(e(zl) for e, zl in zip(self.ebms, z))
        return lp + (self.backbone.log_prob(z) if self.base == "z" else -(u * u).sum(1) / 2)


class TwoStageJointEBM(BackboneStage):
    name = "joint-ebm"

    def __init__(self, config, backbone: nn.Module | None = None):
        c = config
        check_positive(c, "ld_size", "e_lr", "batch_size", "nef", "ndf")
        if c.ld_base not in LD_BASES:
            raise ValueError(f"ld_base must be one of {LD_BASES}, got {c.ld_base!r}")
        super().__init__(c, backbone if backbone is not None else build_backbone(c))
        self.ebms = self.group_energy_nets("two-stage", nef=c.nef, ndf=c.ndf)
        self.chain_schedule = LangevinSchedule.lebm(c.ld_steps, math.sqrt(c.ld_size))  # h = eta / 2, n = sqrt(eta)
        self.optimizers["e"] = adam(self.ebms.parameters(), c.e_lr, c.e_betas, c.e_weight_decay)
        self._schedule_epochs(c.gamma, ["e"])
        self.__dict__["target"] = TwoStageTarget(self.backbone, self.ebms, self.layout, c.ld_base)
        self.noise_fn = None  # tests: noise_fn(S, y0) -> explicit chain noise [S, *y0.shape]

    def prior_u(self, n: int) -> torch.Tensor:
        u0 = self.randn_groups(n)
        noise = self.noise_fn(self.chain_schedule.total_steps, u0) if self.noise_fn is not None else None
        return langevin(self.target, u0, self.chain_schedule, noise=noise, backend=self.config.chain_backend)

    def prior_latents(self, n: int) -> torch.Tensor:
        """z- = T(u_K), flat [n, D]."""
        u = self.prior_u(n)
        with torch.no_grad():
            return self.layout.cat(self.backbone.z_from_u(self.layout.split(u)))

    def energy(self, z) -> torch.Tensor:
        return self.group_energies(z)

    def _ebm_step(self, x) -> dict:
        self._enter_stage2()
        with torch.no_grad():
            z_pos = self.backbone.encode(x)
        z_neg = self.layout.split(self.prior_latents(x.shape[0]))
        def per_group(e, zp, zn):
            ep, en = e(zp).mean(), e(zn).mean()
            return ep - en, ep.detach(), en.detach()

        return self._ebm_update(z_pos, z_neg, per_group)
