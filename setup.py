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
except ImportError:  # pragma: no cover - explained to the user
    sys.exit(
        "hebm_ext builds against the installed PyTorch, and none was found.\n"
        "Install torch first (CPU: `pip install torch`; GPU: the CUDA build from pytorch.org), then\n"
        "`pip install --no-build-isolation .` (build isolation would fetch a different torch)."
    )


def _has_runtime_header(root):
    return any(os.path.exists(os.path.join(root, *sub, "cuda_runtime_api.h"))
               for sub in (("include",), ("targets", "x86_64-linux", "include"), ("targets", "sbsa-linux", "include")))


def _nvcc_top(nvcc):
    """The toolkit folder nvcc really runs from (PATH may hold a wrapper script or a link): nvcc's own -dryrun
    report names it (TOP=...)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "probe.cu")
        open(src, "w").close()
        try:
            out = subprocess.run([nvcc, "-dryrun", "-c", src, "-o", os.path.join(d, "probe.o")],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("#$ TOP="):
            return os.path.realpath(line.split("=", 1)[1].strip())
    return None


def _pip_cuda_roots():
    """CUDA headers from the nvidia pip packages installed next to torch (nvidia/cu13, nvidia/cuda_runtime, ...)."""
    roots = []
    for base in sys.path:
        nv = os.path.join(base, "nvidia")
        if os.path.isdir(nv):
            roots += sorted(glob.glob(os.path.join(nv, "cu*"))) + sorted(glob.glob(os.path.join(nv, "cuda_runtime")))
    return [r for r in roots if _has_runtime_header(r)]


def _find_cuda_home():
    """(CUDA_HOME, how it was found, extra include dirs) for a CUDA build, or (None, why, []) -- found here rather
    than by torch, which takes the folder above the first nvcc on PATH (a wrapper in /usr/local/bin gives
    /usr/local, with no cuda_runtime_api.h)."""
    # the other nvidia packages' headers (cuSPARSE, cuBLAS, ...): only with headers from the pip packages (a
    # toolkit's own headers come first; the glue needs none of those libraries' headers itself)
    extra = sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), os.pardir, "nvidia", "*", "include")))
    extra = [os.path.realpath(e) for e in extra]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        v = os.environ.get(var)
        if v:
            if not _has_runtime_header(v):
                sys.exit(f"{var}={v} has no include/cuda_runtime_api.h: point it at the CUDA toolkit folder "
                         "(the one holding bin/nvcc and include/), or unset it to let setup.py find nvcc's.")
            return v, f"{var}", []
    nvcc = shutil.which("nvcc")
    if nvcc:
        top = _nvcc_top(nvcc)
        if top and _has_runtime_header(top):
            return top, f"nvcc on PATH ({nvcc} runs from {top})", []
    if _has_runtime_header("/usr/local/cuda"):
        return "/usr/local/cuda", "/usr/local/cuda", []
    pip = _pip_cuda_roots()
    if pip:
        return pip[0], "the nvidia pip packages next to torch", extra
    return None, ("no CUDA toolkit headers found (looked at CUDA_HOME, CUDA_PATH, the folder nvcc runs from, "
                  "/usr/local/cuda and the nvidia pip packages next to torch)"), []


_CUDA_FOUND = _find_cuda_home() if torch.version.cuda is not None and not os.environ.get("FORCE_ONLY_CPU") else \
    (None, "", [])
if _CUDA_FOUND[0]:
    os.environ["CUDA_HOME"] = _CUDA_FOUND[0]  # read by torch.utils.cpp_extension at import

from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

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
        if not _CUDA_FOUND[0]:
            sys.exit(f"FORCE_CUDA=1, but {_CUDA_FOUND[1]}: install the CUDA toolkit (or the nvidia-cuda-runtime "
                     "and nvidia-cuda-nvcc pip packages) or set CUDA_HOME.")
        return True, f"FORCE_CUDA=1, CUDA headers from {_CUDA_FOUND[1]}: {_CUDA_FOUND[0]}"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} has no CUDA"
    if not nvcc:
        return False, "nvcc not found (set CUDA_HOME or FORCE_CUDA=1)"
    if not _CUDA_FOUND[0]:
        return False, _CUDA_FOUND[1]
    return True, f"torch {torch.__version__} with CUDA {torch.version.cuda}, headers from {_CUDA_FOUND[1]}"


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
            include_dirs=[os.path.join(ROOT, "csrc")] + (_CUDA_FOUND[2] if with_cuda else []),
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
