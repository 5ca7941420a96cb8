"""Joint latent space EBM prior for a multi-layer generator (Cui, Wu & Han, CVPR 2023), ALGORITHMS.md section 3.1.

    p_beta(z) = N(z_L; 0, sigma_top^2) prod_l N(z_l; mu_l(z_{l+1}), sigma_l(z_{l+1})^2)      (the GaussianLadder)
    p(z) = exp(sum_l f_l(z_l)) p_beta(z) / Z,        f_l = -E_l (layer-wise heads),   p(x | z) = N(g(z_1), sigma^2)

scheme="mcmc" (the paper's joint training), one iteration:
    z+ <- posterior Langevin over all layers from N(0, I): K = 40, s = 0.1 on log p(x|z) + log p(z)   (generic)
    z- <- prior Langevin over all layers from N(0, I): K = 60, s = 0.4 on log p(z)                     (fused)
    L_G1 = (1/(2 sigma^2)) mean_b sum (g(z1+) - x)^2                        decoder, Adam 1e-4
    L_G2 = mean log p_beta(z-) - mean log p_beta(z+)   (the conditionals only, as the code's netG[1].loss)  ladder
    L_E  = mean_l [mean E_l(z_l+) - mean E_l(z_l-)]                            heads, Adam 2e-5
scheme="variational" (the inference model amortises the posterior; ICCV-23 3.4 gives the optimiser settings):
    z_q ~ q(z | x) (ladder encoder, reparameterised); z+ = z_q, optionally refined by `refine_steps` posterior
    Langevin steps; z- as above;
    L_VAE = (1/(2 sigma^2)) mean sum (g(z_q) - x)^2 + mean [log q(z_q|x) - log p_beta(z_q)]
            (+ mean sum_l E_l(z_q) with ebm_in_elbo=True)                       encoder + decoder + ladder
    L_E as above: the EBM tilts the ladder towards the aggregate posterior that q amortises.
    Choices where the paper's code is not public (documented reconstruction): the ELBO's KL to the tilted prior
    would add log Z(alpha, beta), whose gradient w.r.t. the ladder needs prior samples; with short-run z- that
    estimate destabilised training on digits (the ladder sharpens until the prior chain diverges), so it is left
    out, as in the ICCV-23 variational training (3.4, a fixed base). The EBM term of the ELBO for the encoder is an
    option (ebm_in_elbo): with it the encoder and the EBM chase each other unless the EBM learns slowly (ICCV-23:
    lr 2e-6 and spectral norm).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import nn as hnn
from ..sampling import LangevinSchedule, langevin, sample_prior
from ..sampling.targets import generator_posterior
from .base import DataOptions, Method, adam, check_positive, make_config
from .hvae import MultiLayerGenerator

SCHEMES = ("mcmc", "variational", "two-stage")  # two-stage: methods/two_stage.py (3.2)


@dataclass
class JointEBMConfig(DataOptions):
    dataset: str = "digits"
    scheme: str = "mcmc"
    z_dims: tuple = (8, 16)          # latent layers, TOP first (3.1: z2 = 100 on top, z1 = 128)
    ngf: int = 32
    nif: int = 32                    # encoder width (variational scheme)
    ladder_hidden: int = 200         # p(z_l | z_{l+1}): depth x [Linear(-> 200) + LReLU(0.2)] then Linear(-> 2 d)
    ladder_depth: int = 4
    ladder_activation: str = "lrelu"
    sigma_min: float = 0.01          # sigma = exp(log sigma) + 0.01
    sigma_top: float = 1.01          # the code's Normal(0, 0) top: exp(0) + 0.01
    head_hidden: tuple = (100, 200)  # per layer, top first: f2 100 -> 100 -> 100 -> 1, f1 128 -> 200 x 3 -> 1
    head_depth: tuple = (2, 3)
    e_activation: str = "lrelu"
    e_l_steps: int = 60
    e_l_step_size: float = 0.4
    g_l_steps: int = 40
    g_l_step_size: float = 0.1
    g_llhd_sigma: float = 0.3
    g_lr: float = 1e-4               # decoder and ladder (Adam, default betas)
    g_betas: tuple = (0.9, 0.999)
    e_lr: float = 2e-5
    e_betas: tuple = (0.9, 0.999)
    vae_lr: float = 3e-4             # variational scheme: encoder + decoder + ladder (ICCV-23: lr 3e-4, betas (0, 0.9))
    vae_betas: tuple = (0.0, 0.9)
    refine_steps: int = 0            # variational scheme: posterior Langevin steps from q's sample
    ebm_in_elbo: bool = False        # variational scheme: the encoder also sees the EBM term E(z_q) of the ELBO
    gamma: float = 1.0               # ExponentialLR per epoch (the code: none)
    batch_size: int = 100
    epochs: int = 101
    prior_backend: str = "auto"
    posterior_backend: str = "auto"
    # scheme="two-stage" (methods/two_stage.py, ALGORITHMS.md 3.2): per-group EBMs on a frozen backbone
    backbone: str = "spatial"        # "spatial" (hebm_ext.backbones.SpatialHVAE) | "mlp" | "custom" (backbone=obj)
    group_shapes: tuple = ()         # latent groups (c, h, w), TOP first
    vae_ch: int = 32
    vae_cells: int = 1
    vae_se: bool = False
    vae_steps: int = 0               # stage 1 (the backbone's ELBO, Adam(vae_lr, vae_betas)); 0: a loaded backbone
    nef: int = 64                    # _netEzi: conv width, Linear width
    ndf: int = 200
    ld_steps: int = 10               # u-space Langevin: K, eta (3.2)
    ld_size: float = 1e-5
    ld_base: str = "z"               # "z": log p_beta(T(u)) as the code; "u": N(0, I) of u (ICML-24)
    e_weight_decay: float = 0.0
    chain_backend: str = "auto"
    preset: str = ""


_PAPER = dict(z_dims=(100, 128), ladder_hidden=200, ladder_depth=4, head_hidden=(100, 200), head_depth=(2, 3))
PRESETS = {
    # jcui1224/hierarchical-joint-ebm joint-training/train_cifar10.py (ALGORITHMS.md 3.1)
    "cifar10": dict(dataset="cifar10", ngf=64, nif=64, **_PAPER),
    # the same recipe on the other datasets of the package (the paper's code has CIFAR-10 only)
    "svhn": dict(dataset="svhn", ngf=64, nif=64, **_PAPER),
    "celeba64": dict(dataset="celeba64", ngf=128, nif=64, **_PAPER),
    "mnist": dict(dataset="mnist", ngf=64, nif=32, **_PAPER),
    # the embedded digits, minutes on a CPU. Step size and sigma_min keep the prior chain stable: Langevin on a
    # Gaussian of std sigma diverges when h = s^2/2 > 2 sigma^2, and digits' conditionals get sharp.
    "digits": dict(dataset="digits", z_dims=(4, 8), ngf=32, nif=32, ladder_hidden=64, ladder_depth=2,
                   sigma_min=0.15, e_l_step_size=0.2, head_hidden=(64, 64), head_depth=(2, 2), g_lr=1e-3, e_lr=1e-4,
                   vae_lr=1e-3, epochs=60),
    # two-stage on a pretrained NVAE-shaped backbone (3.2: CelebA-HQ-256, batch 2 per GPU, 6500 iterations)
    "celebahq256": dict(dataset="celebahq256", scheme="two-stage", vae_ch=64,
                        group_shapes=(((20, 8, 8),) * 4 + ((20, 16, 16),) * 4 + ((20, 32, 32),) * 4
                                      + ((20, 64, 64),) * 8 + ((20, 128, 128),) * 16),
                        nef=64, ndf=200, ld_steps=10, ld_size=1e-5, e_lr=2e-5, e_betas=(0.99, 0.999),
                        e_weight_decay=3e-5, batch_size=2, vae_steps=100000, vae_lr=1e-3, vae_betas=(0.9, 0.999)),
    # two-stage on the digits spatial backbone (the diffusion-ebm digits-spatial stage 1), minutes on a CPU
    # (the same backbone configuration, so `--backbone` takes a digits-spatial run's checkpoint)
    "digits-two-stage": dict(dataset="digits", scheme="two-stage", group_shapes=((4, 4, 4),) * 2, vae_ch=16,
                             vae_steps=800, vae_lr=2e-3, vae_betas=(0.9, 0.999), nef=32, ndf=64, ld_steps=10,
                             ld_size=1e-2, e_lr=1e-4, e_betas=(0.9, 0.999), batch_size=100, epochs=64),
}


class JointEBM(Method):
    name = "joint-ebm"

    def __init__(self, config: JointEBMConfig):
        super().__init__(config)
        c = config
        if c.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {c.scheme!r}")
        if c.scheme == "two-stage":
            raise ValueError("scheme='two-stage' is built by hebm_ext.methods.create('joint-ebm', ...) "
                             "(methods/two_stage.py: TwoStageJointEBM)")
        check_positive(c, "ngf", "ladder_hidden", "e_l_step_size", "g_l_step_size", "g_llhd_sigma", "g_lr", "e_lr",
                       "batch_size")
        dims = list(c.z_dims)
        if not (len(c.head_hidden) == len(c.head_depth) == len(dims)):
            raise ValueError(f"head_hidden and head_depth need one entry per latent layer ({len(dims)}), got "
                             f"{c.head_hidden} and {c.head_depth}")
        self.gen = MultiLayerGenerator(c.dataset, dims, c.ngf, c.ladder_hidden, c.ladder_depth, c.ladder_activation,
                                       c.sigma_min, c.sigma_top, encoder=c.scheme == "variational", nif=c.nif)
        self.image_shape = self.gen.image_shape
        self.heads = torch.nn.ModuleList(hnn.EnergyMLP(d, h, k, c.e_activation)
                                         for d, h, k in zip(dims, c.head_hidden, c.head_depth))
        self.prior = hnn.LatentEBMPrior(dims, [(f, l) for l, f in enumerate(self.heads)], base=self.gen.ladder,
                                        param="z")
        self.D = sum(dims)
        self.prior_schedule = LangevinSchedule.lebm(c.e_l_steps, c.e_l_step_size)
        self.posterior_schedule = LangevinSchedule.lebm(c.g_l_steps, c.g_l_step_size)
        self.optimizers["e"] = adam(self.heads.parameters(), c.e_lr, c.e_betas)
        if c.scheme == "mcmc":
            self.optimizers["g"] = adam(self.gen.g.parameters(), c.g_lr, c.g_betas)
            self.optimizers["ladder"] = adam(self.gen.ladder.parameters(), c.g_lr, c.g_betas)
        else:
            self.optimizers["vae"] = adam(self.gen.parameters(), c.vae_lr, c.vae_betas)
        self._schedule_epochs(c.gamma, list(self.optimizers))

    # ------------------------------------------------------------------ chains
    def prior_latents(self, n: int) -> torch.Tensor:
        """z- : prior Langevin over all layers from N(0, I) (3.1: z1 is NOT drawn from p(z1 | z2)); fused."""
        z0 = torch.randn(n, self.D, device=self.device)
        return sample_prior(self.prior, z0, self.prior_schedule, backend=self.config.prior_backend)

    def posterior_latents(self, x: torch.Tensor, z0: torch.Tensor | None = None, steps: int | None = None):
        """z+ : posterior Langevin over all layers (from N(0, I), or from z0); generic engine."""
        x = self._check_x(x, self.image_shape)
        if z0 is None and self.config.scheme == "variational":
            with torch.no_grad():
                z0, _ = self.gen.encode(x)
            steps = self.config.refine_steps if steps is None else steps
            if steps == 0:
                return z0
        z0 = torch.randn(x.shape[0], self.D, device=self.device) if z0 is None else z0
        sch = self.posterior_schedule if steps is None else LangevinSchedule.lebm(steps, self.config.g_l_step_size)
        target = generator_posterior(self.gen.g, x, prior=self.prior, sigma=self.config.g_llhd_sigma)
        return langevin(target, z0, sch, backend=self.config.posterior_backend)

    def base_latents(self, n: int) -> torch.Tensor:
        with torch.no_grad():
            return self.gen.ladder.sample(n)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior.energy(z)

    # ------------------------------------------------------------------ learning
    def _ebm_step(self, z_pos, z_neg) -> dict:
        opt = self.optimizers["e"]
        opt.zero_grad(set_to_none=True)
        en_pos, en_neg = self.energy(z_pos).mean(), self.energy(z_neg).mean()
        (en_pos - en_neg).backward()
        self._optimizer_step(opt)
        return {"loss_e": (en_pos - en_neg).item(), "en_pos": en_pos.item(), "en_neg": en_neg.item()}

    def train_step(self, x: torch.Tensor) -> dict:
        x = self._check_x(x, self.image_shape)
        c = self.config
        B = x.shape[0]
        out = {}
        if c.scheme == "mcmc":
            z_pos = self.posterior_latents(x)
            z_neg = self.prior_latents(B)
            opt = self.optimizers["g"]
            opt.zero_grad(set_to_none=True)
            loss_g1 = self.gen.recon_error(x, z_pos).mean() / (2 * c.g_llhd_sigma ** 2)
            loss_g1.backward()
            self._optimizer_step(opt)
            opt = self.optimizers["ladder"]
            opt.zero_grad(set_to_none=True)
            # the code's _netGzi_mlp.loss: sum_l log p(z_l | z_{l-1}) only (the top N(0, 1.01^2) has no parameter)
            loss_g2 = (self.gen.ladder.log_prob(z_neg, top=False).mean()
                       - self.gen.ladder.log_prob(z_pos, top=False).mean())
            loss_g2.backward()
            self._optimizer_step(opt)
            out.update(loss_g1=loss_g1.item(), loss_g2=loss_g2.item(),
                       mse=loss_g1.item() * 2 * c.g_llhd_sigma ** 2 / x[0].numel())
        else:
            z_q, log_q = self.gen.encode(x)
            z_neg = self.prior_latents(B)
            opt = self.optimizers["vae"]
            opt.zero_grad(set_to_none=True)
            rec = self.gen.recon_error(x, z_q)
            kl = log_q - self.gen.ladder.log_prob(z_q)
            if c.ebm_in_elbo:
                kl = kl + self.energy(z_q)
            loss_vae = rec.mean() / (2 * c.g_llhd_sigma ** 2) + kl.mean()
            loss_vae.backward()
            self._optimizer_step(opt)
            z_pos = z_q.detach()
            if c.refine_steps > 0:
                z_pos = self.posterior_latents(x, z0=z_pos, steps=c.refine_steps)
            out.update(loss_vae=loss_vae.item(), kl=kl.mean().item(), mse=rec.mean().item() / x[0].numel())
        out.update(self._ebm_step(z_pos, z_neg))
        self.step += 1
        return out

    # ------------------------------------------------------------------ evaluation
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.gen.g(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        z = self.posterior_latents(x)
        with torch.no_grad():
            return self.gen.g(z)

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """-log p(x, z) up to a constant at a posterior sample: ||x - g(z1)||^2/(2 sigma^2) - log p_beta(z) + sum E."""
        x = self._check_x(x, self.image_shape)
        z = self.posterior_latents(x)
        with torch.no_grad():
            rec = self.gen.recon_error(x, z) / (2 * self.config.g_llhd_sigma ** 2)
            return rec - self.gen.ladder.log_prob(z) + self.energy(z)


def create(preset: str = "digits", **overrides):
    """JointEBM (scheme "mcmc" | "variational") or TwoStageJointEBM (scheme="two-stage", methods/two_stage.py; a
    backbone object may be given as ``backbone=obj``)."""
    from .backbone_stage import split_backbone_arg

    obj, overrides = split_backbone_arg(overrides)
    cfg = make_config(JointEBMConfig, PRESETS, preset, overrides)
    if cfg.scheme != "two-stage":
        return JointEBM(cfg)
    from .two_stage import TwoStageJointEBM

    return TwoStageJointEBM(cfg, backbone=obj)
