"""The CI's static check of the CUDA kernels (.ci/ptxas_report.py) on ptxas -v output written by hand: a kernel's
own stack frame counts even when ptxas prints its out-of-line callees' figures after it (the script once took the
last line, and a callee's 0 bytes hid a 9.5 KB frame of the kernel), a callee's spill counts for the kernel."""
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".ci", "ptxas_report.py")
KERNEL = "_ZN4hebm4cuda22latent_resident_kernelILi4EEEvNS_4core9BlockArgsIfEE"
CALLEE = "_ZN4hebm4core10block_stepIfE"


def report(kernel_frame, callee_frame, callee_spill=0):
    log = (f"ptxas info    : Compiling entry function '{KERNEL}' for 'sm_90'\n"
           f"ptxas info    : Function properties for {KERNEL}\n"
           f"    {kernel_frame} bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
           f"ptxas info    : Function properties for {CALLEE}\n"
           f"    {callee_frame} bytes stack frame, {callee_spill} bytes spill stores, {callee_spill} bytes spill loads\n"
           f"ptxas info    : Used 165 registers, used 1 barriers\n")
    return subprocess.run([sys.executable, SCRIPT], input=log, capture_output=True, text=True)


@pytest.mark.parametrize("kernel_frame, callee_frame, callee_spill, ok", [
    (160, 0, 0, True),       # today's kernels: a call frame, no local arrays
    (9488, 0, 0, False),     # the parameter block copied to the stack, the callee printed after it
    (0, 9488, 0, False),     # a callee's frame is local memory of the kernel too
    (160, 0, 8, False),      # a callee's spill
])
def test_stack_and_spills_of_kernel_and_callees(kernel_frame, callee_frame, callee_spill, ok):
    p = report(kernel_frame, callee_frame, callee_spill)
    assert (p.returncode == 0) == ok, p.stdout + p.stderr
    if not ok:
        assert "latent_resident_kernel<4> (sm_90)" in p.stderr


def _fake_throughput_ptx(path, tf32_form, bf16_form):
    """A PTX file with the three throughput kernels' entries (names mangled as nvcc mangles them inside
    latent_kernels.cuh's anonymous namespace), each body holding the given mma form or none."""
    ns = ("_ZN4hebm4cuda51_GLOBAL__N__eb2a3022_21_latent_throughput_cu_f4ca9e0124latent_throughput_kernelILi{}EEEvNS_"
          "4core9BlockArgsIfEE")
    text = "".join(f".visible .entry {ns.format(p)}(\n)\n{{\n {body}\n}}\n"
                   for p, body in ((0, "fma.rn.f32 %f1, %f2, %f3, %f4;"), (1, tf32_form), (2, bf16_form)))
    path.write_text(".version 8.8\n.target sm_90\n" + text)


@pytest.mark.parametrize("name, swap, ok", [("latent_throughput.compute_90.ptx", False, True),
                                            ("latent_throughput.compute_90.ptx", True, False),
                                            ("latent_cuda.compute_90.ptx", False, False)])
def test_mma_check_reads_the_throughput_files_ptx(tmp_path, name, swap, ok):
    """--ptx DIR: the throughput kernels' file (latent_throughput.cu, one file per kernel family) holds the tf32
    and bf16 mma forms in the right kernels; another file's PTX, or the forms swapped, fail the check."""
    tf32 = "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f1}, {%r1}, {%r2}, {%f2};"
    bf16 = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1}, {%r1}, {%r2}, {%f2};"
    _fake_throughput_ptx(tmp_path / name, bf16 if swap else tf32, tf32 if swap else bf16)
    log = (f"ptxas info    : Compiling entry function '{KERNEL}' for 'sm_90'\n"
           f"ptxas info    : Function properties for {KERNEL}\n"
           "    160 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
           "ptxas info    : Used 165 registers, used 1 barriers\n")
    p = subprocess.run([sys.executable, SCRIPT, "--ptx", str(tmp_path)], input=log, capture_output=True, text=True)
    assert (p.returncode == 0) == ok, p.stdout + p.stderr
