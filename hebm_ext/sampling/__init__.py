"""Samplers: the fused latent sampler, the eager reference, and the shared schedule."""
from .fused import sample_prior
from .reference import sample_prior_reference
from .schedule import LangevinSchedule, diffusion_schedule

__all__ = ["LangevinSchedule", "diffusion_schedule", "sample_prior", "sample_prior_reference"]
