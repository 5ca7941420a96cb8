"""Shared fixtures. Importing hebm_ext here makes the whole run fail (not skip) when the compiled extension is
missing: the CPU kernel tests never skip; only CUDA tests skip, and only when there is no GPU."""
import pytest
import torch

import hebm_ext  # noqa: F401  (fails loudly without hebm_ext._C)
from hebm_ext import ops


def cuda_ready() -> bool:
    if not torch.cuda.is_available():
        return False
    if not ops.available()["cuda"]:
        raise RuntimeError("a CUDA GPU is visible but this build of hebm_ext has no CUDA kernels: rebuild with "
                           "FORCE_CUDA=1 pip install --no-build-isolation -e .")
    return True


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """The digits-FID classifier is cached per test session, not in the user's home."""
    import os

    old = os.environ.get("HEBM_CACHE_DIR")
    os.environ["HEBM_CACHE_DIR"] = str(tmp_path_factory.mktemp("hebm_cache"))
    yield
    if old is None:
        os.environ.pop("HEBM_CACHE_DIR", None)
    else:
        os.environ["HEBM_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
    yield


def cpu_capabilities():
    """Instruction-set variants of the CPU kernels this machine can run."""
    best = ops.available()["cpu_capability"]
    order = ["default", "avx2", "avx512"]
    return order[: order.index(best) + 1]


@pytest.fixture
def one_thread():
    """Many small convolutions: on a loaded 2-core machine two threads run them up to 16x slower than one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
