"""The methods of the library, each in one file that reads like its paper's algorithm:

    lebm           LEBM (ALGORITHMS.md 1)
    joint-ebm      the joint latent EBM prior of a multi-layer generator, scheme="mcmc" | "variational" (3.1)
    diffusion-ebm  the hierarchical EBM diffusion prior (6)
    multistage-nce the adaptive multi-stage density-ratio (NCE) prior (4)
    dual-mcmc      dual-MCMC teaching: data-space EBM, generator and inference model (5)

create(name, preset="digits", **overrides) -> Method (see base.Method for the interface).
"""
from __future__ import annotations

import importlib

from .base import Method

_MODULES = {"lebm": "lebm", "joint-ebm": "joint_ebm", "diffusion-ebm": "diffusion_ebm",
            "multistage-nce": "multistage_nce", "dual-mcmc": "dual_mcmc"}
METHODS = tuple(_MODULES)


def _module(name: str):
    if name not in _MODULES:
        raise ValueError(f"name must be one of {METHODS}, got {name!r}")
    return importlib.import_module(f".{_MODULES[name]}", __name__)


def presets(name: str) -> dict:
    """The presets of method ``name``: {preset: overrides of the config's defaults}."""
    return _module(name).PRESETS


def create(name: str, preset: str = "digits", **overrides) -> Method:
    """A Method by name with a preset ("digits" trains on the embedded data in minutes on a CPU; the papers'
    settings per dataset: "svhn", "cifar10", "celeba64", "mnist") and config overrides."""
    return _module(name).create(preset, **overrides)


__all__ = ["METHODS", "Method", "create", "presets"]
