"""Dual-MCMC teaching (Cui & Han, NeurIPS 2023), ALGORITHMS.md section 5 (5.1-5.4; jcui1224/dual-MCMC train.py).

Three models (5.1-5.2): a data-space EBM pi(x) ∝ exp(-E(x)) (DataEBM: SNGAN-style residual blocks, spectral norm,
outputs the energy), a generator p(x, z) = N(z; 0, I) N(x; G(z), sigma^2 I) (ResNetGenerator, BatchNorm) and an
inference model q(z | x) = N(mu(x), diag exp(logvar(x))) (ConvEncoder); init_weights_dual_mcmc on all three.

The two MCMC teachers (5.3), both on the generic engine (hebm_ext.langevin):
    x-chain T^x (EBM-guided, init G(z)):  x <- x - 0.5 s_x^2 dE/dx + n_x xi,     K_x = e_l_steps
        = langevin(data_ebm_target(E), G(z), LangevinSchedule.decoupled(K_x, s_x, n_x)): decoupled noise, so the
        chain samples exp(-E / tau) with tau = mcmc_temp = (n_x / s_x)^2 (the target itself stays at temperature 1)
    z-chain T^z (generator-guided, init q(z|x)):  z <- z - 0.5 s_z^2 (dR/dz / sigma^2 + z) + n_z xi,  K_z = l_steps
        R = sum (G(z) - x)^2 (no 1/2) = langevin(generator_posterior(G, x, prior=None, sigma, mse_factor=1.0),
        reparameterised q sample, LangevinSchedule.decoupled(K_z, s_z, n_z))

One iteration (5.4, in the code's order: train.py ``fit``; batch B):
    noise ~ N(0, I);  x_s = G(noise) (the graph is kept for errSample);  x_s' = T^x(x_s)      (the x-chain FIRST)
    (mu, logvar) = I(x);  z = mu + exp(logvar / 2) eps;  z' = T^z(z, x)
    G:  errG = Gfactor sum (G(z') - x)^2 / B + Sfactor sum (x_s - x_s')^2 / B
    I:  errI = Gfactor mean NLL(z'; mu(x), logvar(x)) + Ifactor mean NLL(noise; I(x_s')),
        NLL(z; mu, lv) = 0.5 sum lv + 0.5 sum (z - mu)^2 / (1e-6 + exp(lv))      (the code's diag_normal_NLL)
    E:  x_f' = T^x(G(noise)) with the UPDATED G (fine_tune; else x_f' = G(noise));
        errE = (mean E(x) - mean E(x_f')) / mcmc_temp         (use_temp; else without the division)
    stop rule: |mean E(x) - mean E(x_f')| > stop_threshold (1e4) or a NaN loss -> base.Diverged
Adam betas (0, 0.9): G 3e-4 (weight decay 5e-4), E 1e-4, I 1e-4 (weight decay 5e-4); ExponentialLR 0.998 per epoch.
Sampling for evaluation (5.4): x = T^x(G(z)), z ~ N(0, I) (task_fid.py: K_x = 70, s_x = 0.4: sample_l_steps,
sample_l_step_size); images are clamped to [-1, 1] as the FID code does.

python_tests/test_paper_steps.py checks one iteration against train.py's ``fit``, line by line (same draws in the
same order: noise, the x-chain's, eps, the z-chain's, the E-step x-chain's).
The code's `E(x)` logged under no_grad after the G step (one more power iteration of the spectral norm) is kept,
so that the spectral-norm vectors follow the same sequence of forwards.
BatchNorm (ALGORITHMS.md 10.5), config bn_mode:
    "train" (faithful): the code never calls .eval(): G's BatchNorm uses batch statistics everywhere, inside the
        z-chain (BN couples the chains of a batch and updates the running statistics at every step), for the
        E-step samples and for sampling / reconstruction.
    "eval": running statistics wherever G is not being trained: inside the z-chain, for the E-step samples
        G(noise), and in sample / reconstruct / posterior_latents / anomaly_score; batch statistics (train mode)
        only in the two forwards errG backpropagates through, G(noise) and G(z').
    The EBM's spectral norm runs its power iteration at every forward in both modes, as in the code.
posterior_latents(x): the z-chain from the reparameterised q sample (init="sample", as training) or from mu (the
code's recon_x, the default). anomaly_score(x): the negative log joint of the generator at the z-chain result,
sum (x - G(z))^2 / sigma^2 + ||z||^2 / 2 (the z-chain's own target; E(x) is available as energy(x)).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from .. import nn as hnn
from ..sampling import LangevinSchedule, langevin
from ..sampling.targets import data_ebm_target, generator_posterior
from .base import DataOptions, Diverged, Method, adam, check_positive, make_config, reparameterize

BN_MODES = ("train", "eval")


def diag_normal_nll(z, mu, logvar):
    """The code's ``diag_normal_NLL`` [B]: 0.5 sum logvar + 0.5 sum (z - mu)^2 / (1e-6 + exp(logvar)) (no constant)."""
    return 0.5 * logvar.flatten(1).sum(1) + 0.5 * ((z - mu) ** 2 / (1e-6 + torch.exp(logvar))).flatten(1).sum(1)


@dataclass
class DualMCMCConfig(DataOptions):
    dataset: str = "digits"
    nz: int = 128
    ngf: int = 512                   # generator width (ResNetGenerator)
    ndf: int = 512                   # EBM width (DataEBM)
    nif: int = 128                   # inference model width (ConvEncoder)
    add_sn: bool = True              # spectral norm on every conv / linear of the EBM
    e_l_steps: int = 30              # x-chain K_x
    e_l_step_size: float = 0.5       # s_x (CIFAR-10; CelebA-64 0.3)
    e_n_step_size: float = 1e-3      # n_x (decoupled noise)
    l_steps: int = 10                # z-chain K_z
    l_step_size: float = 0.1         # s_z
    n_step_size: float = 0.1         # n_z
    sig: float = 0.3                 # sigma of p(x | z) (the z-chain's R has no 1/2)
    Gfactor: float = 1.0
    Sfactor: float = 50.0            # CIFAR-10; CelebA-64 70
    Ifactor: float = 0.1
    use_temp: bool = True            # divide the EBM loss by mcmc_temp = (n_x / s_x)^2
    fine_tune: bool = True           # the E step revises G(noise) of the updated G with a second x-chain
    lrG: float = 3e-4
    lrE: float = 1e-4
    lrI: float = 1e-4
    betas: tuple = (0.0, 0.9)        # Adam betas of all three
    g_decay: float = 5e-4
    e_decay: float = 0.0
    i_decay: float = 5e-4
    gamma: float = 0.998             # ExponentialLR per epoch, all three
    bn_mode: str = "train"           # "train" (faithful) | "eval" (running statistics in chains and evaluation)
    sample_l_steps: int | None = None      # x-chain for sample() (None: e_l_steps; task_fid.py: 70)
    sample_l_step_size: float | None = None  # (None: e_l_step_size; task_fid.py: 0.4)
    stop_threshold: float = 1e4      # the code's stop rule on |E_T - E_F|
    batch_size: int = 100
    epochs: int = 301
    x_backend: str = "auto"          # langevin backends of the two chains
    z_backend: str = "auto"
    preset: str = ""


PRESETS = {
    # jcui1224/dual-MCMC config.py cifar10_config (ALGORITHMS.md 5.2-5.4)
    "cifar10": dict(dataset="cifar10", nz=128, ngf=512, ndf=512, nif=128, e_l_step_size=0.5, Sfactor=50.0),
    # celeba64_config; dataset.py: the crop box (15, 40, 163, 188), resize 64, random horizontal flips in training
    "celeba64": dict(dataset="celeba64", nz=128, ngf=1024, ndf=1024, nif=128, e_l_step_size=0.3, Sfactor=70.0,
                     crop="dual-mcmc", hflip=True),
    # the embedded digits (ours), minutes on a CPU: the 8x8 variants of the networks (nn.ResNetGenerator and
    # nn.DataEBM "digits") at width 32, and learning rates 3-30x CIFAR-10's so that a few hundred iterations (the
    # paper trains ~150k) teach the EBM something; the chains, factors and betas are CIFAR-10's
    "digits": dict(dataset="digits", nz=16, ngf=32, ndf=32, nif=32, lrG=2e-3, lrE=3e-3, lrI=1e-3, epochs=30),
}


class DualMCMC(Method):
    name = "dual-mcmc"

    def __init__(self, config: DualMCMCConfig):
        super().__init__(config)
        c = config
        check_positive(c, "nz", "ngf", "ndf", "nif", "e_l_step_size", "e_n_step_size", "l_step_size", "n_step_size",
                       "sig", "lrG", "lrE", "lrI", "batch_size", "stop_threshold")
        if c.bn_mode not in BN_MODES:
            raise ValueError(f"DualMCMCConfig.bn_mode must be one of {BN_MODES}, got {c.bn_mode!r}")
        self.ebm = hnn.DataEBM(c.dataset, ndf=c.ndf, spectral_norm=c.add_sn)
        self.generator = hnn.ResNetGenerator(c.dataset, c.nz, ngf=c.ngf)
        self.inference = hnn.encoder(c.dataset, c.nz, nif=c.nif)  # the code applies weights_init (xavier) too
        self.image_shape = self.generator.image_shape
        self.x_schedule = LangevinSchedule.decoupled(c.e_l_steps, c.e_l_step_size, c.e_n_step_size)
        self.z_schedule = LangevinSchedule.decoupled(c.l_steps, c.l_step_size, c.n_step_size)
        self.sample_schedule = LangevinSchedule.decoupled(
            c.e_l_steps if c.sample_l_steps is None else c.sample_l_steps,
            c.e_l_step_size if c.sample_l_step_size is None else c.sample_l_step_size, c.e_n_step_size)
        self.mcmc_temp = self.x_schedule.extras["temperature"]  # (n_x / s_x)^2
        self.optimizers = {"g": adam(self.generator.parameters(), c.lrG, c.betas, c.g_decay),
                           "e": adam(self.ebm.parameters(), c.lrE, c.betas, c.e_decay),
                           "i": adam(self.inference.parameters(), c.lrI, c.betas, c.i_decay)}
        self._schedule_epochs(c.gamma, ["g", "e", "i"])

    # ------------------------------------------------------------------ BatchNorm mode
    @contextlib.contextmanager
    def _g_not_training(self):
        """G where it is not being trained: running statistics with bn_mode="eval", batch statistics (the code)
        with bn_mode="train"."""
        was = self.generator.training
        self.generator.train(self.config.bn_mode == "train")
        try:
            yield self.generator
        finally:
            self.generator.train(was)

    # ------------------------------------------------------------------ the two MCMC teachers
    def x_chain(self, x0: torch.Tensor, schedule: LangevinSchedule | None = None, noise=None) -> torch.Tensor:
        """T^x: EBM-guided Langevin revision of images x0 (decoupled noise; 5.3). noise: optional [K, *x0.shape]."""
        return langevin(data_ebm_target(self.ebm), x0.detach(), schedule or self.x_schedule, noise=noise,
                        backend=self.config.x_backend)

    def z_chain(self, z0: torch.Tensor, x: torch.Tensor, noise=None) -> torch.Tensor:
        """T^z: generator-guided posterior Langevin from z0 given x (R without 1/2, N(0, I) prior; 5.3).
        noise: optional [K, *z0.shape]."""
        with self._g_not_training() as G:
            target = generator_posterior(G, x, prior=None, sigma=self.config.sig, mse_factor=1.0)
            return langevin(target, z0.detach(), self.z_schedule, noise=noise, backend=self.config.z_backend)

    # ------------------------------------------------------------------ learning
    def train_step(self, x: torch.Tensor) -> dict:
        x = self._check_x(x, self.image_shape)
        c = self.config
        B = x.shape[0]
        G, E, I = self.generator, self.ebm, self.inference
        opt_g, opt_e, opt_i = self.optimizers["g"], self.optimizers["e"], self.optimizers["i"]

        # G step: fit (data x, revised z') and (revised x_s', the noise that generated it); the x-chain runs first
        noise = torch.randn(B, c.nz, device=self.device)
        samples = G(noise)
        samples_corr = self.x_chain(samples)
        opt_g.zero_grad(set_to_none=True)
        mu, logvar = I(x)
        z_corr = self.z_chain(reparameterize(mu, logvar), x)
        err_recon = ((G(z_corr) - x) ** 2).sum() / B
        err_sample = ((samples - samples_corr) ** 2).sum() / B
        err_g = c.Gfactor * err_recon + c.Sfactor * err_sample
        err_g.backward()
        self._optimizer_step(opt_g)
        with torch.no_grad():
            E(x)  # the code logs E(x) here; the forward advances the spectral norm's power iteration

        # I step: q learns from the z-chain on data and from the x-chain's (x_s', noise) pairs
        opt_i.zero_grad(set_to_none=True)
        neg_log_q_z = diag_normal_nll(z_corr, mu, logvar).mean()
        mu_g, logvar_g = I(samples_corr)
        err_latent = diag_normal_nll(noise, mu_g, logvar_g).mean()
        err_i = c.Gfactor * neg_log_q_z + c.Ifactor * err_latent
        err_i.backward()
        self._optimizer_step(opt_i)

        # E step: data against the x-chain revision of the UPDATED generator's samples
        opt_e.zero_grad(set_to_none=True)
        en_data = E(x).mean()
        with torch.no_grad(), self._g_not_training():
            fake = G(noise)
        if c.fine_tune:
            fake = self.x_chain(fake)
        en_fake = E(fake).mean()
        err_e = en_data - en_fake
        (err_e / self.mcmc_temp if c.use_temp else err_e).backward()
        self._optimizer_step(opt_e)

        self.step += 1
        out = {"errG": err_g.item(), "errRecon": err_recon.item(), "errSample": err_sample.item(),
               "errI": err_i.item(), "neg_log_q_z": neg_log_q_z.item(), "errLatent": err_latent.item(),
               "errE": err_e.item(), "E_T": en_data.item(), "E_F": en_fake.item(),
               "mse": err_recon.item() / x[0].numel()}
        if not all(math.isfinite(out[k]) for k in ("errE", "errG", "errI")) or abs(out["errE"]) > c.stop_threshold:
            raise Diverged(f"dual-MCMC stop rule (ALGORITHMS.md 5.4) at step {self.step}: E_T - E_F = "
                               f"{out['errE']:.4g} (|.| must stay <= stop_threshold = {c.stop_threshold:g}), errG = "
                               f"{out['errG']:.4g}, errI = {out['errI']:.4g}: training diverged")
        return out

    # ------------------------------------------------------------------ latents
    def prior_latents(self, n: int) -> torch.Tensor:
        """z ~ N(0, I): the generator's prior (no latent EBM in dual-MCMC)."""
        return torch.randn(n, self.config.nz, device=self.device)

    def base_latents(self, n: int) -> torch.Tensor:
        return self.prior_latents(n)

    def posterior_latents(self, x: torch.Tensor, init: str = "mean") -> torch.Tensor:
        """z-chain result for x: T^z from mu(x) (init="mean", the code's recon_x) or from the reparameterised q
        sample (init="sample", as in training)."""
        if init not in ("mean", "sample"):
            raise ValueError(f"init must be 'mean' or 'sample', got {init!r}")
        x = self._check_x(x, self.image_shape)
        with torch.no_grad():
            mu, logvar = self.inference(x)
        return self.z_chain(mu if init == "mean" else reparameterize(mu, logvar), x)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """mu(x): the inference model's z without the z-chain (Table 3's "Inf only")."""
        with torch.no_grad():
            return self.inference(self._check_x(x, self.image_shape))[0]

    # ------------------------------------------------------------------ evaluation
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """G(z) without gradient (BatchNorm as bn_mode says)."""
        with torch.no_grad(), self._g_not_training() as G:
            return G(z)

    def sample_x(self, n: int):
        """(G(z), T^x(G(z))) for z ~ N(0, I), unclamped (the code's sample_x; x-chain of sample_schedule)."""
        raw = self.generate(self.prior_latents(n))
        return raw, self.x_chain(raw, self.sample_schedule)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The raw generator G(z) (sample_base(n): the ablation without the EBM's x-chain)."""
        return self.generate(z)

    def sample(self, n: int) -> torch.Tensor:
        """EBM-revised generator samples T^x(G(z)) (5.4 "Sampling for evaluation"), clamped to [-1, 1]."""
        return self.sample_x(n)[1].clamp(-1, 1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.generate(self.posterior_latents(x))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) [B] (lower = more likely under the EBM)."""
        with torch.no_grad():
            return self.ebm(self._check_x(x, self.image_shape))

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """-log p(x, z) up to a constant at the z-chain result z: sum (x - G(z))^2 / sigma^2 + ||z||^2 / 2 (the
        z-chain's target, no 1/2 on the squared error); higher = more anomalous."""
        x = self._check_x(x, self.image_shape)
        z = self.posterior_latents(x)
        rec = ((self.generate(z) - x) ** 2).flatten(1).sum(1)
        return rec / self.config.sig ** 2 + 0.5 * (z * z).sum(1)


def create(preset: str = "digits", **overrides) -> DualMCMC:
    return DualMCMC(make_config(DualMCMCConfig, PRESETS, preset, overrides))
