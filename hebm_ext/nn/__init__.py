"""Building blocks: energy heads, the latent prior, conv decoders / encoders, the data-space EBM of dual-MCMC."""
from .conv import *  # noqa: F401,F403
from .conv import __all__ as _conv_all
from .data_ebm import *  # noqa: F401,F403
from .data_ebm import __all__ as _ebm_all
from .convert import ModuleEnergy
from .energy import ACTIVATIONS, MLP, EnergyMLP
from .group_ebm import CelebA256GroupEBM, Cifar10GroupEBM, TwoStageGroupEBM, group_ebm
from .ladder import GaussianLadder
from .prior import LatentEBMPrior

__all__ = ["ACTIVATIONS", "MLP", "EnergyMLP", "GaussianLadder", "LatentEBMPrior", "ModuleEnergy", "Cifar10GroupEBM",
           "CelebA256GroupEBM", "TwoStageGroupEBM", "group_ebm"] + list(_conv_all) + list(_ebm_all)
