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
