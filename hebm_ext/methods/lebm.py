"""LEBM: latent-space energy-based prior (Pang, Han, Nijkamp, Zhu, Wu, NeurIPS 2020), ALGORITHMS.md section 1.

    p(z) = exp(-E(z)) N(z; 0, sigma_p^2 I) / Z,      p(x | z) = N(g(z), sigma^2 I)

One iteration (1.2-1.3, in the code's order):
    z+_0, z-_0 ~ N(0, e_init_sig^2 I), both drawn first (the code's ``sample_p_0`` twice)
    z+ <- posterior Langevin from z+_0: K1 steps of size s1 on log p(x|z) + log p(z)          (generic engine)
    z- <- prior Langevin from z-_0: K0 steps of size s0 on log p(z)                           (fused sampler)
    generator:  loss_g = sum ||g(z+) - x||^2 / B        (the 1/(2 sigma^2) is absorbed in the learning rate)
    EBM:        loss_e = mean E(z+) - mean E(z-)
Adam (betas 0.5, 0.999): generator 1e-4, EBM 2e-5; ExponentialLR 0.998 per epoch; batch 100. The generator's
conv layers get xavier_normal weights (``weights_init_xavier``; the Linear layers of the EBM keep PyTorch's default).
python_tests/test_paper_steps.py checks one iteration against train_svhn.py's loop, line by line.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import nn as hnn
from ..sampling import LangevinSchedule, langevin, sample_prior
from ..sampling.targets import generator_posterior
from .base import DataOptions, Method, adam, check_positive, make_config


@dataclass
class LEBMConfig(DataOptions):
    dataset: str = "digits"
    nz: int = 16                  # latent dimension
    ngf: int = 32                 # generator width
    ndf: int = 200                # EBM width (Linear nz -> ndf -> ndf -> 1)
    e_activation: str = "gelu"    # the code's parse_args default (1.1); its grid search used "lrelu"
    g_init: str = "xavier"        # the code's weights_init_xavier on the generator's convs ("default": PyTorch's)
    e_prior_sig: float = 1.0      # sigma_p of the Gaussian reference
    e_init_sig: float = 1.0       # prior chains start at N(0, e_init_sig^2)
    e_l_steps: int = 60           # K0
    e_l_step_size: float = 0.4    # s0
    g_l_steps: int = 20           # K1
    g_l_step_size: float = 0.1    # s1
    g_llhd_sigma: float = 0.3     # sigma of p(x | z)
    e_lr: float = 2e-5
    g_lr: float = 1e-4
    e_betas: tuple = (0.5, 0.999)
    g_betas: tuple = (0.5, 0.999)
    e_gamma: float = 0.998        # ExponentialLR per epoch
    g_gamma: float = 0.998
    batch_size: int = 100
    epochs: int = 201
    prior_backend: str = "auto"   # sample_prior backend ("auto": the fused kernel where available)
    posterior_backend: str = "auto"  # langevin backend ("auto": CUDA-graph replay on GPU, eager on CPU)
    preset: str = ""


PRESETS = {
    # bpucla/latent-space-EBM-prior train_svhn.py (ALGORITHMS.md 1.1-1.3)
    "svhn": dict(dataset="svhn", nz=100, ngf=64, ndf=200),
    # the same recipe with the DAMC shapes of 7.1 (CIFAR-10 nz 128, ngf 128; CelebA-64 nz 100, ngf 128; MNIST nz 8)
    "cifar10": dict(dataset="cifar10", nz=128, ngf=64, ndf=200),
    "celeba64": dict(dataset="celeba64", nz=100, ngf=128, ndf=200),
    "mnist": dict(dataset="mnist", nz=8, ngf=64, ndf=200),
    # the embedded digits: small nets and larger learning rates so that minutes on a CPU show the prior learning
    "digits": dict(dataset="digits", nz=8, ngf=32, ndf=64, e_lr=1e-4, g_lr=1e-3, batch_size=100, epochs=60),
}


class LEBM(Method):
    name = "lebm"

    def __init__(self, config: LEBMConfig):
        super().__init__(config)
        c = config
        check_positive(c, "nz", "ngf", "ndf", "e_prior_sig", "e_init_sig", "e_l_step_size", "g_l_step_size",
                       "g_llhd_sigma", "e_lr", "g_lr", "batch_size")
        self.generator = hnn.decoder(c.dataset, c.nz, ngf=c.ngf, init=c.g_init)
        self.ebm = hnn.EnergyMLP(c.nz, c.ndf, 2, activation=c.e_activation)
        self.prior = hnn.LatentEBMPrior([c.nz], [(self.ebm, 0)], sigma=c.e_prior_sig)
        self.image_shape = self.generator.image_shape
        self.prior_schedule = LangevinSchedule.lebm(c.e_l_steps, c.e_l_step_size, c.e_prior_sig)
        self.posterior_schedule = LangevinSchedule.lebm(c.g_l_steps, c.g_l_step_size, c.e_prior_sig)
        self.optimizers = {"g": adam(self.generator.parameters(), c.g_lr, c.g_betas),
                           "e": adam(self.ebm.parameters(), c.e_lr, c.e_betas)}
        self.schedulers = {"g": torch.optim.lr_scheduler.ExponentialLR(self.optimizers["g"], c.g_gamma),
                           "e": torch.optim.lr_scheduler.ExponentialLR(self.optimizers["e"], c.e_gamma)}

    # ------------------------------------------------------------------ chains
    def sample_p_0(self, n: int) -> torch.Tensor:
        """Chain starts, N(0, e_init_sig^2 I) (the code's ``sample_p_0``; posterior and prior chains alike)."""
        return torch.randn(n, self.config.nz, device=self.device) * self.config.e_init_sig

    def prior_latents(self, n: int, z0: torch.Tensor | None = None) -> torch.Tensor:
        """z- : prior Langevin from z0 (default N(0, e_init_sig^2 I)); fused sampler."""
        z0 = self.sample_p_0(n) if z0 is None else z0
        return sample_prior(self.prior, z0, self.prior_schedule, backend=self.config.prior_backend)

    def posterior_latents(self, x: torch.Tensor, steps: int | None = None, z0: torch.Tensor | None = None):
        """z+ : posterior Langevin from z0 (default N(0, e_init_sig^2 I)) on log N(x; g(z), sigma^2) + log p(z)
        (generic engine)."""
        x = self._check_x(x, self.image_shape)
        sch = self.posterior_schedule if steps is None else \
            LangevinSchedule.lebm(steps, self.config.g_l_step_size, self.config.e_prior_sig)
        z0 = self.sample_p_0(x.shape[0]) if z0 is None else z0
        target = generator_posterior(self.generator, x, prior=self.prior, sigma=self.config.g_llhd_sigma)
        return langevin(target, z0, sch, backend=self.config.posterior_backend)

    def base_latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.nz, device=self.device) * self.config.e_prior_sig

    # ------------------------------------------------------------------ learning
    def train_step(self, x: torch.Tensor) -> dict:
        x = self._check_x(x, self.image_shape)
        B = x.shape[0]
        z_g_0, z_e_0 = self.sample_p_0(B), self.sample_p_0(B)  # both starts first, as the code draws them
        z_pos = self.posterior_latents(x, z0=z_g_0)
        z_neg = self.prior_latents(B, z0=z_e_0)

        opt_g, opt_e = self.optimizers["g"], self.optimizers["e"]
        opt_g.zero_grad(set_to_none=True)
        loss_g = ((self.generator(z_pos) - x) ** 2).sum() / B
        loss_g.backward()
        self._optimizer_step(opt_g)

        opt_e.zero_grad(set_to_none=True)
        en_pos, en_neg = self.ebm(z_pos).mean(), self.ebm(z_neg).mean()
        loss_e = en_pos - en_neg
        loss_e.backward()
        self._optimizer_step(opt_e)
        self.step += 1
        return {"loss_g": loss_g.item(), "loss_e": loss_e.item(), "en_pos": en_pos.item(), "en_neg": en_neg.item(),
                "mse": loss_g.item() / x[0].numel()}

    # ------------------------------------------------------------------ evaluation
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.generator(self.posterior_latents(x))

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """-log p(x, z) up to a constant at a posterior sample z (ALGORITHMS.md 1.4):
        ||x - g(z)||^2 / (2 sigma^2) + E(z) + ||z||^2 / (2 sigma_p^2); higher = more anomalous."""
        x = self._check_x(x, self.image_shape)
        z = self.posterior_latents(x)
        with torch.no_grad():
            c = self.config
            rec = ((self.generator(z) - x) ** 2).flatten(1).sum(1) / (2 * c.g_llhd_sigma ** 2)
            return rec + self.ebm(z) + (z * z).sum(1) / (2 * c.e_prior_sig ** 2)


def create(preset: str = "digits", **overrides) -> LEBM:
    return LEBM(make_config(LEBMConfig, PRESETS, preset, overrides))
