"""Building blocks: energy heads, the latent prior, (later) the Gaussian ladder and conv networks."""
from .energy import ACTIVATIONS, EnergyMLP
from .prior import LatentEBMPrior

__all__ = ["ACTIVATIONS", "EnergyMLP", "LatentEBMPrior"]
