"""What every method shares: configs with presets, the Method interface that one trainer drives, and the complete
training state (modules, optimizers, schedulers, step) in one state_dict."""
from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import nn


@dataclasses.dataclass
class DataOptions:
    """How a method's training images are read: the readers' options, with the papers' values in the presets.
    Every method config inherits these fields."""
    crop: str = "lebm"    # CelebA-64 face crop: "lebm" (centre 140x140, the LEBM protocol) or "dual-mcmc" (the box
    #                       (15, 40, 163, 188) of dual-MCMC's dataset.py); other datasets are not cropped
    hflip: bool = False   # random horizontal flips of the training images (dual-MCMC's CelebA-64 training: True)


class Diverged(RuntimeError):
    """A method's own stop rule fired (e.g. dual-MCMC's energy gap); trainers treat it as divergence."""


def make_config(cls, presets: dict, preset: str, overrides: dict):
    """cls(**presets[preset], **overrides), with errors that name the preset or the unknown option."""
    from .config import ConfigError, validate  # every field's kind and range (config.py), before anything is built

    if preset not in presets:
        raise ConfigError(f"preset must be one of {sorted(presets)}, got {preset!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for {cls.__name__}; options are {sorted(names)}")
    cfg = cls(**validate(cls, {**presets[preset], **overrides}, overrides=set(overrides)))
    cfg.preset = preset
    return cfg


def check_positive(cfg, *names):
    for n in names:
        v = getattr(cfg, n)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
            raise ValueError(f"{type(cfg).__name__}.{n} must be a positive number, got {v!r}")


def adam(params, lr, betas, weight_decay=0.0):
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


class Method(nn.Module):
    """The interface one trainer drives (hebm_ext.methods.create returns one).

    train_step(x [B, C, H, W] in [-1, 1]) -> dict of floats (losses, diagnostics)
    sample(n) -> images [n, C, H, W] in [-1, 1] (default: decode(prior_latents(n)))
    sample_base(n) -> images from the Gaussian base alone (the ablation without the EBM prior)
    reconstruct(x) -> images like x
    anomaly_score(x) -> [B], higher = more anomalous (the negative log joint at posterior samples, ALGORITHMS.md 1.4)
    end_epoch(): the per-epoch learning-rate schedules of the papers
    prior_latents(n), base_latents(n), posterior_latents(x): latent samples for the prior-hole measure (MMD)
    decode(z) -> images: the generator
    state_dict() / load_state_dict(): modules, optimizers, schedulers and the step counter
    config: a plain dataclass (the resolved preset plus overrides)
    """

    name = "method"

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.step = 0
        self.optimizers: dict = {}
        self.schedulers: dict = {}
        self.grad_sync = None  # set by a data-parallel trainer: averages gradients across ranks

    # ---------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_x(self, x: torch.Tensor, shape) -> torch.Tensor:
        if not torch.is_tensor(x) or x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape):
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must be a batch of images [B, {', '.join(map(str, shape))}] in [-1, 1], got {got}")
        if not x.is_floating_point():
            raise TypeError(f"x must be floating-point images in [-1, 1], got {x.dtype} (from uint8 pixels: "
                            "x.float() / 127.5 - 1)")
        if x.numel() and not torch.compiler.is_compiling():
            lo, hi = torch.aminmax(x.detach())
            lo, hi = float(lo), float(hi)  # one read; NaN fails both comparisons
            if not (lo >= -1.0 - 1e-4 and hi <= 1.0 + 1e-4):
                raise ValueError(f"x must be images with pixels in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]"
                                 + (" (pixels in [0, 255]: x / 127.5 - 1)" if hi > 2 else
                                    " (pixels in [0, 1]: 2 x - 1)" if lo >= 0 else ""))
        return x.to(self.device)

    def check_training_length(self, max_steps: int) -> None:
        """Raise ConfigError when a run of max_steps train_steps cannot train what the method promises (a method
        with stages overrides it); called by the trainer before anything is written."""

    def _schedule_epochs(self, gamma: float, names):
        for n in names:
            self.schedulers[n] = torch.optim.lr_scheduler.ExponentialLR(self.optimizers[n], gamma=gamma)

    def _optimizer_step(self, opt: torch.optim.Optimizer):
        """opt.step(), after averaging the gradients across ranks when training data-parallel."""
        if self.grad_sync is not None:
            self.grad_sync([p for g in opt.param_groups for p in g["params"]])
        opt.step()

    def end_epoch(self):
        for s in self.schedulers.values():
            s.step()

    # ---------------------------------------------------------------- state
    def state_dict(self, *args, **kwargs):
        return {
            "method": self.name,
            "config": dataclasses.asdict(self.config),
            "modules": super().state_dict(*args, **kwargs),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "step": self.step,
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state, strict: bool = True):
        if not isinstance(state, dict) or "modules" not in state:
            raise ValueError("state must be a dict from Method.state_dict() (keys method, config, modules, ...)")
        if state.get("method") != self.name:
            raise ValueError(f"state is for method {state.get('method')!r}, this is {self.name!r}")
        super().load_state_dict(state["modules"], strict=strict)
        # deep copies: Optimizer.load_state_dict keeps tensors that already have the right dtype and device, so an
        # in-memory round trip would otherwise share Adam's moments between two methods
        for k, o in self.optimizers.items():
            o.load_state_dict(copy.deepcopy(state["optimizers"][k]))
        for k, s in self.schedulers.items():
            s.load_state_dict(copy.deepcopy(state["schedulers"][k]))
        self.step = int(state["step"])
        self.load_extra_state(state.get("extra", {}))
        return self

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, extra: dict):
        pass

    # ---------------------------------------------------------------- interface
    def train_step(self, x):
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int):
        return self.decode(self.prior_latents(n))

    @torch.no_grad()
    def sample_base(self, n: int):
        return self.decode(self.base_latents(n))

    def decode(self, z):
        raise NotImplementedError

    def reconstruct(self, x):
        raise NotImplementedError

    def anomaly_score(self, x):
        raise NotImplementedError

    def prior_latents(self, n: int):
        raise NotImplementedError

    def base_latents(self, n: int):
        raise NotImplementedError

    def posterior_latents(self, x):
        raise NotImplementedError


def gaussian_nll(z, mu, logvar):
    """-log N(z; mu, exp(logvar)) summed over dims, [B] (the constant included)."""
    return 0.5 * (logvar + (z - mu) ** 2 / torch.exp(logvar) + math.log(2 * math.pi)).sum(1)


def reparameterize(mu, logvar, generator=None):
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps
