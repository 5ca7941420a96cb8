"""hebm_ext: energy-based latent priors for hierarchical generative models, with fused Langevin kernels."""
import torch  # noqa: F401  (loads libtorch, which _C links against)

try:
    from . import _C  # noqa: F401
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError(
        "hebm_ext: the compiled extension hebm_ext._C could not be imported "
        f"({e}). Build it with `pip install --no-build-isolation -e .` from the repository root "
        "(or `pip install --no-build-isolation .`). An 'undefined symbol' error usually means torch was "
        "upgraded after the build: rebuild against the installed torch."
    ) from e

from . import ops  # noqa: E402,F401

__version__ = "0.1.0"

from .nn import MLP, EnergyMLP, GaussianLadder, LatentEBMPrior  # noqa: E402
from .sampling import LangevinSchedule, data_ebm_target, generator_posterior, langevin, sample_prior  # noqa: E402

__all__ = ["MLP", "EnergyMLP", "GaussianLadder", "LangevinSchedule", "LatentEBMPrior", "ops", "sample_prior",
           "langevin", "generator_posterior", "data_ebm_target", "data", "metrics", "methods", "backbones"]


def __getattr__(name):  # hebm_ext.data / .metrics / .methods / .backbones load on first use (scipy, scikit-learn)
    if name in ("data", "metrics", "methods", "backbones"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'hebm_ext' has no attribute {name!r}")
