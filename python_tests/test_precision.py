"""sample_prior(precision="fp32" | "tf32" | "bf16"): validation, the CPU kernel's fp32-only rule, and the reference
backend at reduced precision (hebm_ext.sampling.reference.matmul_precision: matmul operands rounded as the
tensor-core kernels round them, fp32 accumulation), the "eager PyTorch at the same precision" of the accuracy rule
(docs/CUDA_KERNELS.md). The CUDA kernels at reduced precision are tested through the emulation
(test_cuda_emulation.py) and on a GPU (test_cuda.py)."""
import copy

import pytest
import torch

import hebm_ext as H
from hebm_ext.sampling import program as P
from hebm_ext.sampling.reference import PRECISIONS, matmul_precision, round_to
from helpers import joint_prior, lebm_prior, multi_head_prior


def _lebm(dtype=torch.float32):
    torch.manual_seed(0)
    return lebm_prior("lrelu", dtype, in_dim=40, hidden=72, depth=2)


def test_precision_is_validated():
    prior = _lebm()
    sch = H.LangevinSchedule.lebm(steps=2)
    y0 = torch.randn(3, 40)
    for bad in ("fp16", "BF16", 16, None):
        for backend in ("auto", "fused", "reference"):
            with pytest.raises(ValueError, match=r"^sample_prior: precision must be one of \('fp32', 'tf32', 'bf16'\), got"):
                H.sample_prior(prior, y0, sch, precision=bad, backend=backend)
    with pytest.raises(TypeError, match="precision='bf16'.*y0 must be float32, got torch.float64"):
        H.sample_prior(_lebm(torch.float64), y0.double(), sch, precision="bf16", backend="reference")
    assert PRECISIONS.index("bf16") == 2  # the op's int precision (core::Precision in csrc/core/simt.h)


def test_cpu_kernel_runs_fp32_only():
    prior = _lebm()
    sch = H.LangevinSchedule.lebm(steps=3)
    y0 = torch.randn(4, 40)
    noise = torch.randn(3, 4, 40)
    with pytest.raises(ValueError, match="CPU kernel runs precision='fp32' only, got precision='tf32'"):
        H.sample_prior(prior, y0, sch, noise=noise, backend="fused", precision="tf32")
    # auto: the reference at that precision, with a warning that says why
    with pytest.warns(UserWarning, match="CPU kernel runs precision='fp32' only, got precision='bf16'"):
        auto = H.sample_prior(prior, y0, sch, noise=noise, precision="bf16")
    ref = H.sample_prior(prior, y0, sch, noise=noise, backend="reference", precision="bf16")
    assert torch.equal(auto, ref)
    # the op itself: precision defaults to fp32 (old callers), and refuses the others with its reason
    params, program = P.packed(prior, y0.dtype, y0.device)
    e = y0.new_empty(0)
    args = (y0, e, params, program, sch.coefficients(), list(sch.K), torch.empty(0, dtype=torch.int64), noise,
            torch.empty(0, dtype=torch.int64), False)
    old = torch.ops.hebm.latent_langevin(*args)[0]
    assert torch.equal(old, torch.ops.hebm.latent_langevin(*args, 0)[0])
    torch.testing.assert_close(old, H.sample_prior(prior, y0, sch, noise=noise, backend="fused"))
    with pytest.raises(RuntimeError, match="CPU kernel runs precision='fp32' only, got precision='bf16'"):
        torch.ops.hebm.latent_langevin(*args, 2)
    with pytest.raises(RuntimeError, match="precision must be 0 \\(fp32\\), 1 \\(tf32\\) or 2 \\(bf16\\), got 5"):
        torch.ops.hebm.latent_langevin(*args, 5)


def test_round_to_is_the_kernels_rounding():
    """round_to (Python, used by the reference) and the C++ rounding of the fragment loads agree bit for bit,
    ties included."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4000, generator=g) * torch.logspace(-30, 30, 4000)
    bits = x.view(torch.int32)
    ties = torch.cat([(bits & ~0xFFFF) | 0x8000, (bits & ~0x1FFF) | 0x1000, (bits & ~0x1FFF) | 0x3000]).view(
        torch.float32)
    x = torch.cat([x, ties, torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 3.4028235e38, 1e-42])])
    for p in ("bf16", "tf32"):
        assert torch.equal(round_to(x, p).view(torch.int32), torch.ops.hebm._simt_round(p, x).view(torch.int32)), p
    assert round_to(x, "fp32") is x


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_matmul_precision_rounds_forward_and_backward_operands(precision):
    torch.manual_seed(1)
    lin = torch.nn.Linear(24, 16)
    x = torch.randn(5, 24, requires_grad=True)
    g = torch.randn(5, 16)
    with matmul_precision(precision):
        y = lin(x)
        z = x @ lin.weight.T
    r = lambda t: round_to(t, precision)  # noqa: E731
    torch.testing.assert_close(y, r(x) @ r(lin.weight).T + lin.bias, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(z, r(x) @ r(lin.weight).T, rtol=1e-6, atol=1e-6)
    assert (y - lin(x)).abs().max() > 1e-5  # rounded
    gx, = torch.autograd.grad(y, x, g)       # dX = r(dY) r(W): the backward's matmul at the same precision
    torch.testing.assert_close(gx, r(g) @ r(lin.weight), rtol=1e-6, atol=1e-6)
    assert (gx - g @ lin.weight).abs().max() > 1e-5


def _programs():
    """The LEBM, joint and diffusion (time-conditioned heads, recovery-likelihood schedule) programs, float32
    and float64 twins with the same weights."""
    torch.manual_seed(4)
    lebm = lebm_prior("lrelu", torch.float64, in_dim=100, hidden=200, depth=2)
    joint = joint_prior("z", torch.float64)
    diff = multi_head_prior(torch.float64, time_steps=3, out_scale=0.05)
    return [("lebm", lebm, H.LangevinSchedule.lebm(steps=10), 100),
            ("joint", joint, H.LangevinSchedule.lebm(steps=6), 228),
            ("diffusion", diff, H.LangevinSchedule.recovery_likelihood(3, steps=[2, 3, 2], b_square=1e-3), 48)]


@pytest.mark.parametrize("name", ["lebm", "joint", "diffusion"])
def test_reference_at_reduced_precision_against_float64(name):
    """The reduced-precision reference's error against the float64 chain (same noise) is > 0 and small, and grows
    as the format shrinks: fp32 < tf32 < bf16 (mean absolute error over the chains)."""
    _, p64, sch, D = next(p for p in _programs() if p[0] == name)
    torch.manual_seed(6)
    p32 = copy.deepcopy(p64).float()
    y0 = torch.randn(32, D, dtype=torch.float64)
    S = sch.total_steps
    noise = torch.randn(S, 32, D, dtype=torch.float64)
    exact = H.sample_prior(p64, y0, sch, noise=noise, backend="reference")
    err = {}
    for prec in PRECISIONS:
        y = H.sample_prior(p32, y0.float(), sch, noise=noise.float(), backend="reference", precision=prec)
        err[prec] = (y.double() - exact).abs().mean().item()
    scale = exact.abs().mean().item()
    assert 0 < err["fp32"] < err["tf32"] < err["bf16"] < 0.05 * scale, err
    assert err["tf32"] > 10 * err["fp32"], err
