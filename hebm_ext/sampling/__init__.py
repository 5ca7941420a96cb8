"""Samplers: the fused latent sampler, the generic engine (any torch log-density), the eager reference, and the
shared schedule."""
from .fused import sample_prior
from .generic import clear_graph_cache, langevin
from .reference import sample_prior_reference
from .schedule import LangevinSchedule, diffusion_schedule
from .targets import DataEBMTarget, GeneratorPosterior, data_ebm_target, generator_posterior

__all__ = ["DataEBMTarget", "GeneratorPosterior", "LangevinSchedule", "clear_graph_cache", "data_ebm_target",
           "diffusion_schedule", "generator_posterior", "langevin", "sample_prior", "sample_prior_reference"]
