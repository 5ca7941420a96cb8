"""Adaptive multi-stage density-ratio estimation of a latent EBM prior (Xiao & Han, NeurIPS 2022), ALGORITHMS.md
section 4 (4.1 is a reconstruction: the paper's code is not public).

    p_0(z) = N(0, I),   p_k(z) = p_0(z) prod_{j<k} exp(f_j(z)) / Z_k,   p(x | z) = N(g(z), sigma^2 I)
    f_k = log r_k = -E_k,  E_k an EnergyMLP; the prior after stage k is LatentEBMPrior([nz], [(E_0, 0) .. (E_k, 0)])

For stage k = 0 .. n_stages - 1, repeat until the switching rule fires (the last stage runs until training stops):
    z+ <- posterior Langevin from N(0, I): g_l_steps of size g_l_step_size on log p(x|z) + log p_k(z)     (generic)
    z- <- samples of p_k: short-run Langevin from N(0, I), or persistent chains (a replay buffer)         (fused)
          (p_0 = N(0, I) itself is drawn exactly: a chain would only add discretisation bias)
    generator (the "adaptive" part, as LEBM 1.3):  loss_g = sum ||g(z+) - x||^2 / B
    ratio (logistic NCE, balanced classes; posterior samples label 1, prior samples label 0):
        L_k = -mean log sigmoid(f_k(z+)) - mean log(1 - sigmoid(f_k(z-)))
            = mean softplus(E_k(z+)) + mean softplus(-E_k(z-))          ->  f_k = log q_k(z) - log p_k(z)
then freeze f_k: p_{k+1} = p_k exp(f_k). Final prior p_0 exp(sum_k f_k), sampled as ONE multi-head program by the
fused sampler (prior Langevin K = e_l_steps, s = e_l_step_size from N(0, I), as LEBM).

Choices where 4.1 is a reconstruction (each a config option; the defaults in brackets):
    posterior_prior ["p_k"]: the posterior chain of stage k uses the NCE's noise prior p_k (4.1 as written), or
        "p_k_r_k": p_k exp(f_k) with the ratio being learned (the model's current prior).
    prior_sampling ["short_run"]: z- by short-run Langevin from N(0, I) every iteration (LEBM-style), or
        "persistent": chains kept in a replay buffer of `buffer_size` (re-initialised from N(0, I) with
        probability `reinit_prob` per chain and iteration), advanced e_l_steps per iteration; the buffer carries
        over from stage k to stage k + 1 (p_k is the best start for p_{k+1}).
    switch_rule ["iterations"]: stage k lasts `iters_per_stage` iterations (an int, or one per stage), or
        "plateau": it ends earlier once an exponential moving average of L_k (decay `plateau_decay`) has not
        improved by `plateau_tol` for `plateau_patience` iterations (after at least `min_iters_per_stage`).
    Ratio networks: EnergyMLP(nz, head_hidden, head_depth) per stage (4.1: "a small MLP, scalar output; the bias
        absorbs the log-normaliser"), the LAST layer initialised to zero so that a new stage starts from r_k = 1
        and the model's prior p_k r_k is continuous across a switch. A separate Adam (lr nce_lr) per stage.
    The model's prior at any time (prior_latents, sample, anomaly_score) is p_k r_k with the ratio of the stage
    being learned; after the last stage it is the final prior. posterior_latents is the training posterior.
    The paper's number of stages and iterations per stage are unknown (ALGORITHMS.md 11.3); the papers' presets use
    4 stages of 50 epochs each with LEBM's networks and Langevin settings (section 9).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import nn as hnn
from ..sampling import LangevinSchedule, langevin, sample_prior
from ..sampling.targets import generator_posterior
from .base import DataOptions, Method, adam, check_positive, make_config

POSTERIOR_PRIORS = ("p_k", "p_k_r_k")
PRIOR_SAMPLING = ("short_run", "persistent")
SWITCH_RULES = ("iterations", "plateau")


@dataclass
class MultistageNCEConfig(DataOptions):
    dataset: str = "digits"
    nz: int = 8                      # latent dimension
    ngf: int = 32                    # generator width (LEBM's decoder)
    g_init: str = "xavier"           # LEBM's weights_init_xavier on the generator's convs ("default": PyTorch's)
    n_stages: int = 4                # K: number of ratio networks
    iters_per_stage: object = 300    # int, or a tuple with one entry per stage
    switch_rule: str = "iterations"  # "iterations" | "plateau"
    min_iters_per_stage: int = 100   # plateau rule: never switch earlier
    plateau_patience: int = 100      # plateau rule: iterations without improvement of the NCE loss's EMA
    plateau_tol: float = 1e-3        # plateau rule: what counts as an improvement
    plateau_decay: float = 0.98      # plateau rule: EMA decay of the NCE loss
    head_hidden: int = 64            # ratio network EnergyMLP(nz, head_hidden, head_depth)
    head_depth: int = 2
    e_activation: str = "gelu"       # LEBM's default activation (1.1)
    prior_sampling: str = "short_run"  # "short_run" | "persistent"
    buffer_size: int = 1000          # persistent chains
    reinit_prob: float = 0.05        # persistent chains: restart from N(0, I) with this probability
    posterior_prior: str = "p_k"     # "p_k" | "p_k_r_k": the prior of the posterior chain
    e_l_steps: int = 60              # prior chain K0 (LEBM, section 9)
    e_l_step_size: float = 0.4       # s0
    g_l_steps: int = 20              # posterior chain K1
    g_l_step_size: float = 0.1       # s1
    g_llhd_sigma: float = 0.3        # sigma of p(x | z)
    g_lr: float = 1e-4               # generator: LEBM's Adam (1.3)
    g_betas: tuple = (0.5, 0.999)
    g_gamma: float = 0.998           # ExponentialLR per epoch
    nce_lr: float = 1e-4             # ratio networks (unknown in the paper; a reconstruction)
    nce_betas: tuple = (0.5, 0.999)
    nce_gamma: float = 0.998         # per epoch, for the ratio network being learned
    batch_size: int = 100
    epochs: int = 200
    prior_backend: str = "auto"      # sample_prior backend ("auto": the fused kernel where available)
    posterior_backend: str = "auto"  # langevin backend
    preset: str = ""


def _iters(n_train: int, epochs: int, batch: int = 100) -> int:
    return epochs * -(-n_train // batch)


_LEBM = dict(head_hidden=200, head_depth=2, n_stages=4, epochs=200)  # LEBM's EBM width 200 for each ratio net
PRESETS = {
    # LEBM's SVHN recipe (1.1-1.3) for the shared parts; 4 stages x 50 epochs (a reconstruction, see above)
    "svhn": dict(dataset="svhn", nz=100, ngf=64, iters_per_stage=_iters(73257, 50), **_LEBM),
    "cifar10": dict(dataset="cifar10", nz=128, ngf=64, iters_per_stage=_iters(50000, 50), **_LEBM),
    "celeba64": dict(dataset="celeba64", nz=100, ngf=128, iters_per_stage=_iters(162770, 50), **_LEBM),
    "mnist": dict(dataset="mnist", nz=8, ngf=64, iters_per_stage=_iters(60000, 50), **_LEBM),
    # the embedded digits, minutes on a CPU: small nets, larger learning rates (as LEBM's digits preset); the first
    # stage is longer because the generator learns from scratch during it. Faster per-epoch decays (15 iterations
    # per epoch) settle the generator, so that later stages correct the prior instead of chasing a moving aggregate
    # posterior, and anneal each ratio network within its stage (docs/MULTISTAGE_NCE.md)
    "digits": dict(dataset="digits", nz=8, ngf=32, n_stages=4, iters_per_stage=(500, 250, 250, 250),
                   head_hidden=64, head_depth=2, g_lr=1e-3, nce_lr=1e-3, g_gamma=0.97, nce_gamma=0.9, epochs=84),
}


class MultistageNCE(Method):
    name = "multistage-nce"

    def __init__(self, config: MultistageNCEConfig):
        super().__init__(config)
        c = config
        check_positive(c, "nz", "ngf", "n_stages", "head_hidden", "head_depth", "e_l_step_size", "g_l_step_size",
                       "g_llhd_sigma", "g_lr", "nce_lr", "batch_size")
        for name, value, allowed in (("posterior_prior", c.posterior_prior, POSTERIOR_PRIORS),
                                     ("prior_sampling", c.prior_sampling, PRIOR_SAMPLING),
                                     ("switch_rule", c.switch_rule, SWITCH_RULES)):
            if value not in allowed:
                raise ValueError(f"MultistageNCEConfig.{name} must be one of {allowed}, got {value!r}")
        self.stage_iters = self._stage_iters(c)
        if c.prior_sampling == "persistent":
            check_positive(c, "buffer_size")
            if c.buffer_size < c.batch_size:
                raise ValueError(f"MultistageNCEConfig.buffer_size must be at least batch_size ({c.batch_size}) "
                                 f"for persistent chains, got {c.buffer_size}")
            if not 0 <= c.reinit_prob <= 1:
                raise ValueError(f"MultistageNCEConfig.reinit_prob must lie in [0, 1], got {c.reinit_prob!r}")
            # the persistent chains, a buffer so that state_dict carries them
            self.register_buffer("replay", torch.randn(c.buffer_size, c.nz))

        self.generator = hnn.decoder(c.dataset, c.nz, ngf=c.ngf, init=c.g_init)
        self.image_shape = self.generator.image_shape
        self.heads = torch.nn.ModuleList(hnn.EnergyMLP(c.nz, c.head_hidden, c.head_depth, activation=c.e_activation)
                                         for _ in range(c.n_stages))
        for e in self.heads:  # r_k = 1 at the start of stage k
            torch.nn.init.zeros_(e.linears[-1].weight)
            torch.nn.init.zeros_(e.linears[-1].bias)
        # _priors[j] = p_0 prod_{i<j} exp(f_i): the heads 0..j-1 as one multi-head program. A plain list, so the
        # heads are not registered twice in state_dict.
        self._priors = [hnn.LatentEBMPrior([c.nz], [(e, 0) for e in self.heads[:j]]) for j in range(c.n_stages + 1)]
        self.prior_schedule = LangevinSchedule.lebm(c.e_l_steps, c.e_l_step_size)
        self.posterior_schedule = LangevinSchedule.lebm(c.g_l_steps, c.g_l_step_size)

        self.optimizers = {"g": adam(self.generator.parameters(), c.g_lr, c.g_betas)}
        self.optimizers.update({f"f{k}": adam(e.parameters(), c.nce_lr, c.nce_betas) for k, e in enumerate(self.heads)})
        self._schedule_epochs(c.g_gamma, ["g"])
        self._schedule_epochs(c.nce_gamma, [f"f{k}" for k in range(c.n_stages)])
        self.stage = 0          # the stage being learned
        self.stage_step = 0     # iterations spent in it
        self._plateau = {"ema": None, "best": math.inf, "since_best": 0}
        self._freeze()

    @staticmethod
    def _stage_iters(c) -> tuple:
        it = c.iters_per_stage
        its = (it,) * c.n_stages if isinstance(it, int) and not isinstance(it, bool) else tuple(it)
        if len(its) != c.n_stages or any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in its):
            raise ValueError(f"MultistageNCEConfig.iters_per_stage must be a positive int or {c.n_stages} positive "
                             f"ints (one per stage), got {it!r}")
        return its

    # ------------------------------------------------------------------ priors
    def prior_of_stage(self, k: int) -> hnn.LatentEBMPrior:
        """p_k = p_0 prod_{j<k} exp(f_j), k = 0 .. n_stages (k = 0: N(0, I), no heads)."""
        if not 0 <= k <= self.config.n_stages:
            raise ValueError(f"k must lie in [0, {self.config.n_stages}], got {k}")
        return self._priors[k]

    @property
    def prior(self) -> hnn.LatentEBMPrior:
        """The model's prior now: p_k r_k with the ratio of the stage being learned (the final prior
        p_0 exp(sum_k f_k) once the last stage is reached)."""
        return self._priors[self.stage + 1]

    def _train_posterior_prior(self) -> hnn.LatentEBMPrior:
        return self._priors[self.stage + (self.config.posterior_prior == "p_k_r_k")]

    # ------------------------------------------------------------------ chains
    def _prior_chain(self, prior, z0):
        return sample_prior(prior, z0, self.prior_schedule, backend=self.config.prior_backend)

    def prior_latents(self, n: int, stages: int | None = None) -> torch.Tensor:
        """Samples of the model's prior p_k r_k (or of p_stages = p_0 prod_{j<stages} exp(f_j)): short-run Langevin
        from N(0, I), fused sampler."""
        prior = self.prior if stages is None else self.prior_of_stage(stages)
        return self._prior_chain(prior, torch.randn(n, self.config.nz, device=self.device))

    def noise_latents(self, n: int) -> torch.Tensor:
        """z- : samples of p_k, the NCE's noise distribution of the current stage (exact for p_0 = N(0, I);
        else short-run chains from N(0, I), or the persistent chains of the replay buffer)."""
        c = self.config
        if self.stage == 0:
            return torch.randn(n, c.nz, device=self.device)
        p_k = self._priors[self.stage]
        if c.prior_sampling == "short_run":
            return self._prior_chain(p_k, torch.randn(n, c.nz, device=self.device))
        idx = torch.randperm(self.replay.shape[0], device=self.device)[:n]
        z0 = self.replay[idx]
        restart = torch.rand(n, device=self.device) < c.reinit_prob
        z0 = torch.where(restart.unsqueeze(1), torch.randn(n, c.nz, device=self.device), z0)
        z = self._prior_chain(p_k, z0)
        self.replay[idx] = z
        return z

    def posterior_latents(self, x: torch.Tensor, steps: int | None = None, stages: int | None = None):
        """z+ : the training posterior of the current stage, Langevin from N(0, I) on log N(x; g(z), sigma^2) +
        log p_k(z) (+ f_k with posterior_prior="p_k_r_k"), or with the prior p_stages; generic engine (the prior's
        gradient from the fused op)."""
        x = self._check_x(x, self.image_shape)
        c = self.config
        sch = self.posterior_schedule if steps is None else LangevinSchedule.lebm(steps, c.g_l_step_size)
        prior = self._train_posterior_prior() if stages is None else self.prior_of_stage(stages)
        z0 = torch.randn(x.shape[0], c.nz, device=self.device)
        target = generator_posterior(self.generator, x, prior=prior, sigma=c.g_llhd_sigma)
        return langevin(target, z0, sch, backend=c.posterior_backend)

    def base_latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.nz, device=self.device)

    # ------------------------------------------------------------------ learning
    def train_step(self, x: torch.Tensor) -> dict:
        x = self._check_x(x, self.image_shape)
        B = x.shape[0]
        k = self.stage
        z_pos = self.posterior_latents(x)
        z_neg = self.noise_latents(B)

        opt_g = self.optimizers["g"]
        opt_g.zero_grad(set_to_none=True)
        loss_g = ((self.generator(z_pos) - x) ** 2).sum() / B
        loss_g.backward()
        self._optimizer_step(opt_g)

        opt_f, head = self.optimizers[f"f{k}"], self.heads[k]
        opt_f.zero_grad(set_to_none=True)
        f_pos, f_neg = -head(z_pos), -head(z_neg)
        loss_nce = F.softplus(-f_pos).mean() + F.softplus(f_neg).mean()
        loss_nce.backward()
        self._optimizer_step(opt_f)

        self.step += 1
        self.stage_step += 1
        out = {"stage": float(k), "loss_g": loss_g.item(), "loss_nce": loss_nce.item(),
               "f_pos": f_pos.mean().item(), "f_neg": f_neg.mean().item(),
               "nce_acc": 0.5 * ((f_pos > 0).float().mean() + (f_neg < 0).float().mean()).item(),
               "mse": loss_g.item() / x[0].numel()}
        if self._stage_done(out["loss_nce"]):
            self.next_stage()
        return out

    def _stage_done(self, loss: float) -> bool:
        c = self.config
        if self.stage == c.n_stages - 1:  # the last stage runs until training stops
            return False
        if self.stage_step >= self.stage_iters[self.stage]:
            return True
        if c.switch_rule != "plateau":
            return False
        p = self._plateau
        p["ema"] = loss if p["ema"] is None else c.plateau_decay * p["ema"] + (1 - c.plateau_decay) * loss
        if p["ema"] < p["best"] - c.plateau_tol:
            p["best"], p["since_best"] = p["ema"], 0
        else:
            p["since_best"] += 1
        return self.stage_step >= c.min_iters_per_stage and p["since_best"] >= c.plateau_patience

    def next_stage(self):
        """Freeze f_k and move to stage k + 1 (p_{k+1} = p_k exp(f_k)); called by the switching rule."""
        if self.stage >= self.config.n_stages - 1:
            raise ValueError(f"stage {self.stage} is the last of n_stages={self.config.n_stages}")
        self.stage += 1
        self.stage_step = 0
        self._plateau = {"ema": None, "best": math.inf, "since_best": 0}
        self._freeze()

    def _freeze(self):
        for j, e in enumerate(self.heads):
            e.requires_grad_(j == self.stage)

    def end_epoch(self):
        """ExponentialLR per epoch for the generator and the ratio network being learned (which counts the epochs
        of its own stage: none before its first step)."""
        self.schedulers["g"].step()
        if self.stage_step > 0:
            self.schedulers[f"f{self.stage}"].step()

    def extra_state(self) -> dict:
        return {"stage": self.stage, "stage_step": self.stage_step, "plateau": dict(self._plateau)}

    def load_extra_state(self, extra: dict):
        self.stage = int(extra.get("stage", 0))
        self.stage_step = int(extra.get("stage_step", 0))
        self._plateau = dict(extra.get("plateau", {"ema": None, "best": math.inf, "since_best": 0}))
        self._freeze()

    # ------------------------------------------------------------------ evaluation
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.generator(self.posterior_latents(x))

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """-log p(x, z) up to a constant at a posterior sample z, with the model's prior p_k r_k (ALGORITHMS.md 1.4):
        ||x - g(z)||^2 / (2 sigma^2) + sum_{j<=k} E_j(z) + ||z||^2 / 2; higher = more anomalous."""
        x = self._check_x(x, self.image_shape)
        z = self.posterior_latents(x)
        with torch.no_grad():
            rec = ((self.generator(z) - x) ** 2).flatten(1).sum(1) / (2 * self.config.g_llhd_sigma ** 2)
            return rec - self.prior.log_prob(z)


def create(preset: str = "digits", **overrides) -> MultistageNCE:
    return MultistageNCE(make_config(MultistageNCEConfig, PRESETS, preset, overrides))
