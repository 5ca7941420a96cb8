"""Hierarchical EBM diffusion prior (Cui & Han, ICML 2024), ALGORITHMS.md section 6, in two stages as in the paper.

Stage 1 (steps < vae_steps): a multi-layer generator with an inference model and the Gaussian ladder prior (the
paper uses a pretrained NVAE; here an MLP ladder over the latent layers), trained by the ELBO
    L = (1/(2 sigma^2)) sum (g(z_1) - x)^2 + log q(z | x) - log p_beta(z),     z ~ q(z | x).
Stage 2: the generator is frozen. With the whitened variable u = T^{-1}(z) (z_top = sigma_top u_top,
z_l = mu_l + sigma_l u_l), the posterior u_0 = u_from_z(z+), z+ ~ q(z | x), is diffused with Gao et al.'s schedule
(6.2): t ~ U{0..T-1} per sample, u_t = a_cum[t] u_0 + s_cum[t] eps, u_{t+1} = a[t+1] u_t + s[t+1] eps'. One
time-conditioned EBM head per layer sees z = T(u). The negatives come from the conditional Langevin chain
(6.3, fused sampler in u-space, each chain at its own t):
    u- <- K steps of  u += 0.5 grad F(T(u), t) - 0.5 s_t^2 (r a (a u - u_{t+1}) / sigma^2 + u) + s_t xi,  u_init = u_{t+1}
and the loss (6.6) is  mean_b [ (E(T(u_t), t) - E(T(u-), t)) / s_t^2 ]   (E = -F; the heads see T(u) once, as the
sampler does). Adam lr 4e-5, betas (0.99, 0.999), weight decay 3e-5; ExponentialLR 0.9 per epoch.
python_tests/test_paper_steps.py checks both stages' steps against Trainer.py's ``train_fn``, line by line.
Paper presets: spectral norm on the heads' linear layers (ebm_net.py; the fused sampler reads W / sigma(W) as it
stands, without the power iteration the code's train-mode forwards run inside Langevin) and sigma_top = 1.01.
Sampling (6.7): u_T ~ N(0, I), the annealed T x K Langevin chain down to u_0 (fused, one launch), z = T(u_0), x = g(z_1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import nn as hnn
from ..sampling import LangevinSchedule, sample_prior
from .base import DataOptions, Method, adam, check_positive, make_config
from .hvae import MultiLayerGenerator


@dataclass
class DiffusionEBMConfig(DataOptions):
    dataset: str = "digits"
    z_dims: tuple = (8, 16)        # latent layers, TOP first
    ngf: int = 32
    nif: int = 32
    ladder_hidden: int = 128
    ladder_depth: int = 2
    ladder_activation: str = "lrelu"
    sigma_min: float = 0.01
    sigma_top: float = 1.0         # NVAE's top Normal(0, 0): exp(0) + 0.01 = 1.01 in the paper presets
    soft_clamp: bool = True        # NVAE's 5 tanh(x/5) on mu and log sigma (6.1)
    g_llhd_sigma: float = 0.3
    vae_steps: int = 1000          # stage 1 length, in train_steps
    vae_lr: float = 1e-3
    vae_betas: tuple = (0.9, 0.999)
    T: int = 3                     # diffusion timesteps (max_T)
    e_l_steps: int = 50            # K per timestep (CIFAR-10; CelebA-HQ-256: 30)
    b_square: float = 3e-5         # e_l_step_size (CIFAR-10; CelebA-HQ-256: 2e-5)
    head_hidden: int = 200
    head_depth: int = 2
    e_activation: str = "silu"     # the paper's EBMs use SiLU
    e_spectral_norm: bool = False  # spectral norm on every linear layer of the heads (ebm_net.py: True)
    e_lr: float = 4e-5
    e_betas: tuple = (0.99, 0.999)
    e_weight_decay: float = 3e-5
    e_gamma: float = 0.9           # ExponentialLR per epoch (CIFAR-10; CelebA-HQ-256: 0.98)
    batch_size: int = 50           # 25 per GPU x 2 GPUs
    epochs: int = 200
    prior_backend: str = "auto"
    # spatial backbones (methods/spatial_diffusion.py, ALGORITHMS.md 6.1-6.7): backbone="mlp" is the flat path of
    # this file (fused kernels); "spatial" = hebm_ext.backbones.SpatialHVAE over group_shapes; "custom" = the
    # object given as create(..., backbone=obj)
    backbone: str = "mlp"
    group_shapes: tuple = ()       # latent groups (c, h, w), TOP first
    vae_ch: int = 32               # SpatialHVAE: tower channels, residual cells per group, squeeze-excitation
    vae_cells: int = 1
    vae_se: bool = False
    ebm: str = "cifar10"           # per-group EBM (hebm_ext.nn.group_ebm): "cifar10" (6.4) | "celebahq256" (6.5)
    ebm_ch: int = 128
    chain_backend: str = "auto"    # generic engine: "eager" | "graph" (CUDA) | "auto"
    preset: str = ""


# the paper's EBMs and backbone (ebm_net.py: spectral norm on every layer; NVAE's top sigma exp(0) + 0.01)
_PAPER = dict(e_spectral_norm=True, sigma_top=1.01)
_SPATIAL_CIFAR10 = dict(dataset="cifar10", backbone="spatial", group_shapes=((20, 16, 16),) * 30, vae_ch=64, ebm="cifar10",
                       ebm_ch=128, T=3, e_l_steps=50, b_square=3e-5, batch_size=25, e_lr=4e-5, e_betas=(0.99, 0.999),
                       e_weight_decay=3e-5, e_gamma=0.9, vae_steps=100000, vae_lr=1e-3)
PRESETS = {
    # jcui1224/diffusion-hierarchical-ebm config.py a100_cifar10 (ALGORITHMS.md 6.2-6.6) with an MLP ladder standing
    # in for the pretrained NVAE (the flat, fused-kernel path)
    "cifar10-mlp": dict(dataset="cifar10", z_dims=(64, 128, 128), ngf=64, nif=64, ladder_hidden=256, head_hidden=200,
                        **_PAPER),
    # the paper's configuration (6.4, 6.6): 30 spatial groups (20, 16, 16) of an NVAE-shaped backbone (our
    # SpatialHVAE as stage 1, or a pretrained one with --backbone / create(backbone=obj)), one 6.4 EBM per group
    "cifar10": _SPATIAL_CIFAR10,
    # the CIFAR-10 recipe on the other datasets of the package
    "svhn": dict(dataset="svhn", z_dims=(64, 128, 128), ngf=64, nif=64, ladder_hidden=256, **_PAPER),
    "celeba64": dict(dataset="celeba64", z_dims=(64, 128, 128), ngf=128, nif=64, ladder_hidden=256,
                     e_l_steps=30, b_square=2e-5, e_gamma=0.98, **_PAPER),
    "mnist": dict(dataset="mnist", z_dims=(16, 32), ngf=64, nif=32, **_PAPER),
    # the embedded digits, minutes on a CPU (larger step size b and learning rate than CIFAR-10, decayed per epoch)
    "digits": dict(dataset="digits", z_dims=(4, 8), ngf=32, nif=32, ladder_hidden=64, vae_steps=1000, vae_lr=2e-3,
                   head_hidden=64, head_depth=2, e_l_steps=30, b_square=1e-3, e_lr=1e-4, e_betas=(0.9, 0.999),
                   e_gamma=0.99, batch_size=100, epochs=550),
    # CelebA-HQ-256 (6.5, 6.7; the decoder-order groups of 6.1), images from a folder
    "celebahq256": dict(dataset="celebahq256", backbone="spatial", vae_ch=64, ebm="celebahq256", ebm_ch=64,
                        group_shapes=(((20, 8, 8),) * 4 + ((20, 16, 16),) * 4 + ((20, 32, 32),) * 4
                                      + ((20, 64, 64),) * 8 + ((20, 128, 128),) * 16),
                        T=3, e_l_steps=30, b_square=2e-5, batch_size=2, e_lr=4e-5, e_betas=(0.99, 0.999),
                        e_weight_decay=3e-5, e_gamma=0.98, vae_steps=100000, vae_lr=1e-3),
    # the paper's configuration at digits scale: both stages in minutes on a CPU (docs/SPATIAL_DIGITS.md)
    # (2 groups (4, 4, 4), 6.4's network at ch 16 on 4 x 4 groups, K = 10; 800 ELBO steps, then 250 EBM steps)
    "digits-spatial": dict(dataset="digits", backbone="spatial", group_shapes=((4, 4, 4),) * 2, vae_ch=16,
                           vae_steps=800, vae_lr=2e-3, ebm="cifar10", ebm_ch=16, T=3, e_l_steps=10, b_square=1e-3,
                           e_lr=3e-4, e_betas=(0.9, 0.999), e_gamma=0.99, batch_size=100, epochs=75),
}


class DiffusionEBM(Method):
    name = "diffusion-ebm"

    def __init__(self, config: DiffusionEBMConfig):
        super().__init__(config)
        c = config
        if c.backbone != "mlp":
            raise ValueError(f"DiffusionEBM is the flat MLP path (backbone='mlp'); backbone={c.backbone!r} is built by "
                             "hebm_ext.methods.create('diffusion-ebm', ...) (SpatialDiffusionEBM)")
        check_positive(c, "ngf", "ladder_hidden", "g_llhd_sigma", "vae_lr", "b_square", "e_lr", "batch_size",
                       "head_hidden")
        if isinstance(c.T, bool) or not isinstance(c.T, int) or c.T < 2:
            raise ValueError(f"DiffusionEBMConfig.T must be an integer >= 2, got {c.T!r}")
        dims = list(c.z_dims)
        self.gen = MultiLayerGenerator(c.dataset, dims, c.ngf, c.ladder_hidden, c.ladder_depth, c.ladder_activation,
                                       c.sigma_min, c.sigma_top, c.soft_clamp, encoder=True, nif=c.nif)
        self.image_shape = self.gen.image_shape
        self.heads = torch.nn.ModuleList(hnn.EnergyMLP(d, c.head_hidden, c.head_depth, c.e_activation,
                                                       spectral_norm=c.e_spectral_norm, time_steps=c.T)
                                         for d in dims)
        self.prior = hnn.LatentEBMPrior(dims, [(f, l) for l, f in enumerate(self.heads)], base=self.gen.ladder,
                                        param="u")
        self.D = sum(dims)
        self.schedule = LangevinSchedule.recovery_likelihood(c.T, c.e_l_steps, c.b_square, form="hierarchical")
        ex = self.schedule.extras
        for k in ("a_s", "sigmas", "a_s_cum", "sigmas_cum", "step_size_square"):
            self.register_buffer(f"_{k}", torch.tensor(ex[k], dtype=torch.get_default_dtype()), persistent=False)
        self.optimizers = {"vae": adam(self.gen.parameters(), c.vae_lr, c.vae_betas),
                           "e": adam(self.heads.parameters(), c.e_lr, c.e_betas, c.e_weight_decay)}
        self.schedulers = {"e": torch.optim.lr_scheduler.ExponentialLR(self.optimizers["e"], c.e_gamma)}

    @property
    def stage(self) -> int:
        return 1 if self.step < self.config.vae_steps else 2

    def check_training_length(self, max_steps: int) -> None:
        vae = self.config.vae_steps
        if max_steps <= vae:
            from .config import ConfigError
            raise ConfigError(f"diffusion-ebm: {max_steps} steps end inside stage 1 (the VAE, vae_steps = {vae}), so "
                              f"the EBM prior would never train: use --max-steps > {vae}, or vae_steps=N with "
                              f"N < {max_steps}")

    # ------------------------------------------------------------------ chains
    def prior_latents(self, n: int) -> torch.Tensor:
        """z = T(u_0), u_0 from the annealed T x K Langevin chain started at u_T ~ N(0, I) (6.7; fused)."""
        u = sample_prior(self.prior, torch.randn(n, self.D, device=self.device), self.schedule,
                         backend=self.config.prior_backend)
        with torch.no_grad():
            return self.gen.ladder.z_from_u(u)

    def posterior_latents(self, x: torch.Tensor) -> torch.Tensor:
        """z+ ~ q(z | x)."""
        x = self._check_x(x, self.image_shape)
        with torch.no_grad():
            return self.gen.encode(x)[0]

    def base_latents(self, n: int) -> torch.Tensor:
        with torch.no_grad():
            return self.gen.ladder.sample(n)

    # ------------------------------------------------------------------ learning
    def _vae_step(self, x) -> dict:
        c = self.config
        opt = self.optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        z, log_q = self.gen.encode(x)
        rec = self.gen.recon_error(x, z)
        kl = log_q - self.gen.ladder.log_prob(z)
        loss = rec.mean() / (2 * c.g_llhd_sigma ** 2) + kl.mean()
        loss.backward()
        self._optimizer_step(opt)
        return {"stage": 1.0, "loss_vae": loss.item(), "kl": kl.mean().item(), "mse": rec.mean().item() / x[0].numel()}

    def _freeze_generator(self):
        for p in self.gen.parameters():
            p.requires_grad_(False)
        self.gen.eval()

    def diffuse(self, u0: torch.Tensor, t: torch.Tensor):
        """(u_t, u_{t+1}) = q_sample_pairs(u0, t) (ALGORITHMS.md 6.2)."""
        a_cum, s_cum = self._a_s_cum[t].unsqueeze(1), self._sigmas_cum[t].unsqueeze(1)
        u_t = a_cum * u0 + s_cum * torch.randn_like(u0)
        a, s = self._a_s[t + 1].unsqueeze(1), self._sigmas[t + 1].unsqueeze(1)
        return u_t, a * u_t + s * torch.randn_like(u0)

    def _ebm_step(self, x) -> dict:
        c = self.config
        if any(p.requires_grad for p in self.gen.parameters()):
            self._freeze_generator()
        B = x.shape[0]
        with torch.no_grad():
            u0 = self.gen.ladder.u_from_z(self.gen.encode(x)[0])
        t = torch.randint(0, c.T, (B,), device=self.device)
        u_t, u_next = self.diffuse(u0, t)
        u_neg = sample_prior(self.prior, u_next, self.schedule, cond=u_next, timesteps=t,
                             backend=c.prior_backend)
        opt = self.optimizers["e"]
        opt.zero_grad(set_to_none=True)
        s2 = self._step_size_square[t]
        # the prior's variable is u: energy(u, t) evaluates the heads once, at z = T(u) (6.6: z_pos = T(u_t),
        # z_neg = T(u-)), exactly as the sampler does
        en_pos, en_neg = self.prior.energy(u_t, t), self.prior.energy(u_neg, t)
        loss = ((en_pos - en_neg) / s2).mean()
        loss.backward()
        self._optimizer_step(opt)
        return {"stage": 2.0, "loss_e": loss.item(), "en_pos": en_pos.mean().item(), "en_neg": en_neg.mean().item()}

    def train_step(self, x: torch.Tensor) -> dict:
        x = self._check_x(x, self.image_shape)
        out = self._vae_step(x) if self.stage == 1 else self._ebm_step(x)
        self.step += 1
        return out

    def end_epoch(self):
        if self.stage == 2:  # the EBM's schedule counts its own epochs
            super().end_epoch()

    def load_extra_state(self, extra: dict):
        if self.stage == 2:
            self._freeze_generator()

    # ------------------------------------------------------------------ evaluation
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.gen.g(z)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.gen.g(self.posterior_latents(x))

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """-log p(x, z) at z ~ q(z | x): ||x - g(z)||^2/(2 sigma^2) - log p_beta(z) + sum_l E_l(z_l, t=0) (the
        t = 0 energy stands in for the EBM prior's log density; a heuristic, the paper reports no anomaly scores)."""
        x = self._check_x(x, self.image_shape)
        z = self.gen.encode(x)[0]
        t0 = torch.zeros(x.shape[0], dtype=torch.long, device=self.device)
        return (self.gen.recon_error(x, z) / (2 * self.config.g_llhd_sigma ** 2) - self.gen.ladder.log_prob(z)
                + self.prior.energy(self.gen.ladder.u_from_z(z), t0))


def create(preset: str = "digits", **overrides):
    """DiffusionEBM (backbone="mlp", the fused-kernel path) or, for backbone="spatial" or a backbone object
    (``backbone=obj``, hebm_ext.backbones' protocol), SpatialDiffusionEBM (methods/spatial_diffusion.py)."""
    from .backbone_stage import split_backbone_arg

    obj, overrides = split_backbone_arg(overrides)
    cfg = make_config(DiffusionEBMConfig, PRESETS, preset, overrides)
    if cfg.backbone == "mlp":
        return DiffusionEBM(cfg)
    from .spatial_diffusion import SpatialDiffusionEBM

    return SpatialDiffusionEBM(cfg, backbone=obj)
