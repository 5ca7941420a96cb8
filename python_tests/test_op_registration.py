"""Operator registration: opcheck (schema, fake kernel, AOT dispatch), torch.compile, availability."""
import pytest
import torch

import hebm_ext as H
from hebm_ext.sampling import program as P
from helpers import multi_head_prior


def test_available():
    av = H.ops.available()
    assert av["cpu"] is True and av["cpu_capability"] in ("default", "avx2", "avx512")
    assert isinstance(av["cuda"], bool)


def _samples(device="cpu"):
    out = []
    for dtype in (torch.float32, torch.float64):
        prior = multi_head_prior(dtype, time_steps=3, out_scale=0.05).to(device)
        params, program = P.build_program(prior, dtype, device)
        sch = H.LangevinSchedule.recovery_likelihood(3, steps=[2, 3, 1], b_square=1e-3)
        y0 = torch.randn(5, 48, dtype=dtype, device=device)
        e = y0.new_empty(0)
        rng = torch.tensor([7, 3], dtype=torch.int64, device=device)
        none = torch.empty(0, dtype=torch.int64, device=device)
        args = [params, program, sch.coefficients(), list(sch.K)]
        out.append((y0, e, *args, none, e, rng, True))
        out.append((y0, y0 * 0.5, *args, torch.tensor([0, 2, 1, 1, 0], device=device), e, rng, False))
        out.append((y0, e, *args, none, torch.randn(6, 5, 48, dtype=dtype, device=device), e, True))
    return out


def test_opcheck_cpu():
    for args in _samples():
        torch.library.opcheck(torch.ops.hebm.latent_langevin.default, args)


def test_torch_compile_fullgraph():
    prior = multi_head_prior(torch.float32, time_steps=3, out_scale=0.05)
    sch = H.LangevinSchedule.recovery_likelihood(3, steps=4, b_square=1e-3)
    y0 = torch.randn(6, 48)
    noise = torch.randn(12, 6, 48)

    def f(y):
        return H.sample_prior(prior, y, sch, noise=noise, backend="fused")

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(y0), f(y0))

    def g(y):  # the kernels' own noise, seeded inside the graph
        return H.sample_prior(prior, y, sch, seed=5, backend="fused") * 2

    torch.testing.assert_close(torch.compile(g, fullgraph=True, backend="aot_eager")(y0), g(y0))
