"""Build of hebm_ext._C: the CPU kernels always; the CUDA kernels when this torch has CUDA and nvcc is found,
or when FORCE_CUDA=1 (never merely because a GPU is visible). FORCE_ONLY_CPU=1 skips CUDA.
Install with `pip install --no-build-isolation .` so that the build uses the torch already installed."""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - explained to the user
    sys.exit(
        "hebm_ext builds against the installed PyTorch, and none was found.\n"
        "Install torch first (CPU: `pip install torch`; GPU: the CUDA build from pytorch.org), then\n"
        "`pip install --no-build-isolation .` (build isolation would fetch a different torch)."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _want_cuda():
    if _flag("FORCE_ONLY_CPU"):
        return False, "FORCE_ONLY_CPU=1"
    nvcc = shutil.which("nvcc") or (CUDA_HOME and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")))
    if _flag("FORCE_CUDA"):
        if torch.version.cuda is None:
            sys.exit(
                f"FORCE_CUDA=1, but the installed torch {torch.__version__} is a CPU-only build: the CUDA kernels "
                "need a CUDA build of torch (its headers and libraries). Install one, or unset FORCE_CUDA."
            )
        if not nvcc:
            sys.exit("FORCE_CUDA=1, but nvcc was not found (set CUDA_HOME or put nvcc on PATH).")
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} has no CUDA"
    if not nvcc:
        return False, "nvcc not found (set CUDA_HOME or FORCE_CUDA=1)"
    return True, f"torch {torch.__version__} with CUDA {torch.version.cuda} and nvcc found"


def extensions():
    with_cuda, why = _want_cuda()
    sources = ["csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-fno-math-errno"]
    link = []
    if torch.backends.openmp.is_available() and sys.platform.startswith("linux"):
        # at::parallel_for is inline: without OpenMP here the CPU kernels would run on one thread.
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    nvcc = ["-O3", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr"]
    define_macros = []
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        define_macros.append(("HEBM_WITH_CUDA", "1"))
        ext = CUDAExtension
        extra = {"cxx": cxx, "nvcc": nvcc}
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "(torch's default: the visible GPUs, else all supported)")
        print(f"hebm_ext: building the CPU and CUDA kernels ({why}; TORCH_CUDA_ARCH_LIST={arch})", flush=True)
    else:
        ext = CppExtension
        extra = {"cxx": cxx}
        print(f"hebm_ext: building the CPU kernels only ({why})", flush=True)
    return [
        ext(
            name="hebm_ext._C",
            sources=sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=define_macros,
            extra_compile_args=extra,
            extra_link_args=link,
        )
    ]


setup(
    packages=find_packages(include=["hebm_ext", "hebm_ext.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)},
)
