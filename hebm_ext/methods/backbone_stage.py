"""What the EBM stages on a backbone share (diffusion-ebm with backbone="spatial" | "custom", joint-ebm with
scheme="two-stage"): the backbone (hebm_ext.backbones protocol), its stage 1 (the backbone's ELBO for
``vae_steps`` steps, or none when it is loaded frozen: ``load_backbone``), the frozen backbone of stage 2, one EBM per
latent group, and the flat latent layout that the generic Langevin engine runs on.

Latents handed to the trainer and the evaluation (prior_latents, posterior_latents, base_latents) are flat
[B, D]: the groups flattened and concatenated top first (``method.layout``); ``decode`` takes that or a list.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import checkpoint as ckpt_io
from ..backbones import GroupLayout, MLPLadderBackbone, SpatialHVAE, check_backbone
from ..nn import EnergyMLP
from ..nn.conv import IMAGE_SHAPES
from .base import Method, adam
from .hvae import MultiLayerGenerator

# image shapes of the datasets that only the backbone presets use (read through hebm_ext.data.ImageFolder)
EXTRA_IMAGE_SHAPES = {"celebahq256": (3, 256, 256)}
BACKBONES = ("mlp", "spatial", "custom")


def image_shape_of(dataset: str):
    shapes = {**IMAGE_SHAPES, **EXTRA_IMAGE_SHAPES}
    if dataset not in shapes:
        raise ValueError(f"dataset must be one of {sorted(shapes)}, got {dataset!r}")
    return shapes[dataset]


def build_backbone(c) -> nn.Module:
    """The library backbone named by config ``c.backbone``: "spatial" (SpatialHVAE over c.group_shapes) or "mlp"
    (the MLP ladder over c.z_dims, as a protocol adapter)."""
    if c.backbone == "spatial":
        if not c.group_shapes:
            raise ValueError("backbone='spatial' needs group_shapes, e.g. group_shapes=((4, 4, 4),) * 3")
        return SpatialHVAE(image_shape_of(c.dataset), c.group_shapes, ch=c.vae_ch, cells=c.vae_cells, se=c.vae_se,
                           sigma_min=c.sigma_min, g_llhd_sigma=c.g_llhd_sigma)
    if c.backbone == "mlp":
        gen = MultiLayerGenerator(c.dataset, c.z_dims, c.ngf, c.ladder_hidden, c.ladder_depth, c.ladder_activation,
                                  c.sigma_min, c.sigma_top, getattr(c, "soft_clamp", False), encoder=True, nif=c.nif)
        return MLPLadderBackbone(gen, c.g_llhd_sigma)
    if c.backbone == "custom":
        raise ValueError("backbone='custom' needs the backbone object: create(..., backbone=my_backbone)")
    raise ValueError(f"backbone must be one of {BACKBONES} (or a module implementing hebm_ext.backbones' protocol), "
                     f"got {c.backbone!r}")


def split_backbone_arg(overrides: dict):
    """create(..., backbone=obj): (obj or None, overrides with backbone='custom' for an object)."""
    b = overrides.get("backbone")
    if b is None or isinstance(b, str):
        return None, overrides
    return b, {**overrides, "backbone": "custom"}


class BackboneStage(Method):
    """Stage 1 (steps < config.vae_steps): the backbone's ELBO, Adam(vae_lr, vae_betas). Stage 2: the backbone is
    frozen (requires_grad False, eval mode even under method.train()) and a subclass trains ``self.ebms``."""

    def __init__(self, config, backbone: nn.Module):
        super().__init__(config)
        self.group_shapes = check_backbone(backbone)
        self.backbone = backbone
        self.layout = GroupLayout(self.group_shapes)
        self.image_shape = tuple(backbone.image_shape)
        self.D = self.layout.D
        if config.vae_steps > 0:
            if not callable(getattr(backbone, "elbo", None)):
                raise ValueError(f"vae_steps={config.vae_steps} trains the backbone as stage 1, but "
                                 f"{type(backbone).__name__} has no elbo(x): pass vae_steps=0 for a pretrained one")
            self.optimizers["vae"] = adam(backbone.parameters(), config.vae_lr, config.vae_betas)
        self._frozen = False

    def group_energy_nets(self, kind: str, time_steps: int = 0, flat=(200, 2), **kw) -> nn.ModuleList:
        """One EBM per group: the conv network ``kind`` (hebm_ext.nn.group_ebm) for (c, h, w) groups, a SiLU
        EnergyMLP (hidden, depth = ``flat``; time-conditioned when time_steps > 0) for flat (d,) groups."""
        from ..nn.group_ebm import group_ebm

        nets = []
        for s in self.group_shapes:
            if len(s) == 3:
                nets.append(group_ebm(kind, s, **kw))
            else:
                nets.append(EnergyMLP(s[0], flat[0], flat[1], "silu", time_steps=time_steps))
        return nn.ModuleList(nets)

    @property
    def stage(self) -> int:
        return 1 if self.step < self.config.vae_steps else 2

    # ------------------------------------------------------------------ stage 1 / frozen backbone
    def _vae_step(self, x) -> dict:
        opt = self.optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        loss, stats = self.backbone.elbo(x)
        loss.backward()
        self._optimizer_step(opt)
        return {"stage": 1.0, "loss_vae": loss.item(), **stats}

    def _ebm_update(self, z_pos, z_neg, per_group) -> dict:
        """Stage 2's optimizer step: the loss is sum_l loss_l over the groups, (loss_l, mean E_l(z+), mean E_l(z-)) =
        per_group(ebm_l, z+_l, z-_l); one Adam ("e") over every group's EBM."""
        opt = self.optimizers["e"]
        opt.zero_grad(set_to_none=True)
        loss, en_pos, en_neg = 0.0, 0.0, 0.0
        for e, zp, zn in zip(self.ebms, z_pos, z_neg):
            l, ep, en = per_group(e, zp, zn)
            loss, en_pos, en_neg = loss + l, en_pos + ep, en_neg + en
        loss.backward()
        self._optimizer_step(opt)
        return {"stage": 2.0, "loss_e": loss.item(), "en_pos": float(en_pos), "en_neg": float(en_neg)}

    def train_step(self, x: torch.Tensor) -> dict:
        x = self._check_x(x, self.image_shape)
        out = self._vae_step(x) if self.stage == 1 else self._ebm_step(x)
        self.step += 1
        return out

    def _freeze_backbone(self):
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()
        self._frozen = True

    def train(self, mode: bool = True):
        super().train(mode)
        if self._frozen:
            self.backbone.eval()
        return self

    def load_backbone(self, source) -> "BackboneStage":
        """Reuse a finished stage 1: load the backbone's parameters from ``source`` (a trainer checkpoint path, a
        Method.state_dict() or the backbone's own state_dict), freeze it, and skip stage 1 (config.vae_steps = 0,
        so the run's saved config says so)."""
        state = ckpt_io.load(source)["method"] if isinstance(source, str) else source
        if not isinstance(state, dict):
            raise TypeError(f"source must be a checkpoint path or a state dict, got {type(source).__name__}")
        modules = state.get("modules", state)
        sub = {k[len("backbone."):]: v for k, v in modules.items() if k.startswith("backbone.")}
        if not sub and "modules" in state:
            raise ValueError(f"source holds no backbone parameters (a {state.get('method')!r} checkpoint without "
                             "backbone.* entries: the flat MLP path keeps its generator as gen.*)")
        try:
            self.backbone.load_state_dict(sub or modules)
        except RuntimeError as e:
            raise ValueError(f"source's backbone does not match this configuration's backbone "
                             f"({type(self.backbone).__name__}, groups {self.group_shapes}): {e}") from e
        self.config.vae_steps = 0
        self.optimizers.pop("vae", None)
        self._freeze_backbone()
        return self

    def load_extra_state(self, extra: dict):
        if self.stage == 2:
            self._freeze_backbone()

    def _enter_stage2(self):
        if not self._frozen:
            self._freeze_backbone()

    def end_epoch(self):
        if self.stage == 2:  # the EBMs' schedules count their own epochs
            super().end_epoch()

    # ------------------------------------------------------------------ latents
    def z_groups(self, z) -> list:
        return self.layout.split(z) if torch.is_tensor(z) else list(z)

    def posterior_latents(self, x: torch.Tensor) -> torch.Tensor:
        """z+ ~ q(z | x), flat [B, D]."""
        x = self._check_x(x, self.image_shape)
        with torch.no_grad():
            return self.layout.cat(self.backbone.encode(x))

    def randn_groups(self, n: int) -> torch.Tensor:
        """u ~ N(0, I), flat [n, D], drawn group by group (the papers' order: one randn per group, top first)."""
        return self.layout.cat([torch.randn((n,) + s, device=self.device, dtype=self.backbone_dtype)
                                for s in self.group_shapes])

    @torch.no_grad()
    def base_latents(self, n: int) -> torch.Tensor:
        """z = T(u), u ~ N(0, I): the backbone's Gaussian prior, flat [n, D]."""
        return self.layout.cat(self.backbone.z_from_u(self.layout.split(self.randn_groups(n))))

    @property
    def backbone_dtype(self):
        return next(self.parameters()).dtype

    def decode(self, z) -> torch.Tensor:
        with torch.no_grad():
            return self.backbone.decode(self.z_groups(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.posterior_latents(x))

    def group_energies(self, z, t=None) -> torch.Tensor:
        """sum_l E_l(z_l[, t]) [B] (t for time-conditioned EBMs)."""
        zs = self.z_groups(z)
        return sum(e(zl, t) if _timed(e) else e(zl) for e, zl in zip(self.ebms, zs))

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """||x - g(z)||^2 / (2 sigma^2) - log p_beta(z) + sum_l E_l(z_l) at z ~ q(z | x) (t = 0 for the time-
        conditioned EBMs; a heuristic, the papers report no anomaly scores for these configurations)."""
        x = self._check_x(x, self.image_shape)
        zs = self.backbone.encode(x)
        rec = ((self.backbone.decode(zs) - x) ** 2).flatten(1).sum(1) / (2 * self.config.g_llhd_sigma ** 2)
        t0 = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return rec - self.backbone.log_prob(zs) + self.group_energies(zs, t0)


def _timed(net: nn.Module) -> bool:
    return getattr(net, "time_steps", 0) > 0
