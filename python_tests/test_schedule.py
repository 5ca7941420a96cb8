"""LangevinSchedule presets against the numbers printed in ALGORITHMS.md (sections 2.1, 2.2, 6.3, 10.3) and the
papers' update formulas."""
import math

import numpy as np
import pytest
import torch

import hebm_ext as H
from hebm_ext.sampling import diffusion_schedule


def test_gao_schedule_tables():
    s = diffusion_schedule(3)
    assert list(s["idx"]) == [0, 250, 500, 999]
    np.testing.assert_allclose(s["a_s"], [0.99995, 0.722132, 0.386265, 0.022776], rtol=2e-5)
    np.testing.assert_allclose(s["sigmas"], [0.01, 0.691755, 0.922388, 0.999741], rtol=2e-5)
    np.testing.assert_allclose(s["a_s_cum"], [0.99995, 0.722096, 0.278921, 0.006353], rtol=1e-4)
    np.testing.assert_allclose(s["sigmas_cum"], [0.01, 0.691793, 0.960314, 0.99998], rtol=2e-5)
    assert list(s["is_recovery"]) == [1, 1, 1, 0] and s["a_s_prev"][-1] == 1.0
    s = diffusion_schedule(6)
    assert list(s["idx"]) == [0, 100, 200, 300, 400, 500, 999]
    np.testing.assert_allclose(s["a_s"], [0.99995, 0.946167, 0.85629, 0.774796, 0.700918, 0.633956, 0.022776], rtol=2e-5)
    np.testing.assert_allclose(s["sigmas"], [0.01, 0.32368, 0.516495, 0.632211, 0.713242, 0.773369, 0.999741], rtol=2e-5)
    np.testing.assert_allclose(s["a_s_cum"], [0.99995, 0.946119, 0.810152, 0.627703, 0.439968, 0.278921, 0.006353], rtol=1e-4)
    np.testing.assert_allclose(s["sigmas_cum"], [0.01, 0.323818, 0.586219, 0.778453, 0.898013, 0.960314, 0.99998], rtol=2e-5)


def test_gao_step_sizes_T6():
    sch = H.LangevinSchedule.recovery_likelihood(6, steps=30, b_square=2e-4, form="gao")
    np.testing.assert_allclose(sch.extras["step_size_square"], [2.10e-5, 1.73e-3, 4.69e-3, 7.92e-3, 1.074e-2, 1.92e-2],
                               rtol=5e-3)
    assert sch.total_steps == 180 and sch.T == 6


@pytest.mark.parametrize("b,s2,s,c1,c2", [
    (3e-5, [1.4356e-5, 1.7657e-3, 2.8794e-3], [0.003789, 0.042021, 0.053660], [0.999985, 0.998962, 0.998560],
     [1.0832e-5, 4.0082e-4, 0.0]),
    (2e-5, [9.5705e-6, 1.1772e-3, 1.9196e-3], [0.003094, 0.034310, 0.043814], [0.999990, 0.999308, 0.999040],
     [7.2213e-6, 2.6722e-4, 0.0]),
])
def test_hierarchical_coefficients_tables(b, s2, s, c1, c2):
    """ALGORITHMS.md 6.3 / 10.3 (CIFAR-10 b = 3e-5, CelebA-HQ-256 b = 2e-5). Its c1 includes the N(0, I) reference
    term, which here comes from the prior's base: c1_table = c1 - h."""
    sch = H.LangevinSchedule.recovery_likelihood(3, steps=50, b_square=b)
    np.testing.assert_allclose(sch.extras["step_size_square"], s2, rtol=2e-4)
    np.testing.assert_allclose(sch.n, s, rtol=2e-4)
    np.testing.assert_allclose(np.array(sch.c1) - np.array(sch.h), c1, atol=1.5e-6)
    np.testing.assert_allclose(sch.c2, c2, rtol=2e-4, atol=1e-12)
    np.testing.assert_allclose(np.array(sch.alpha) * np.array(sch.h), 0.5)  # the 0.5 * grad F of the paper
    assert sch.d == (1.0, 1.0, 1.0) and sch.reference_sigma == 1.0


def test_lebm_preset():
    sch = H.LangevinSchedule.lebm()
    assert sch.K == (60,) and sch.h == pytest.approx((0.08,)) and sch.n == (0.4,) and sch.c1 == (1.0,) and sch.c2 == (0.0,)
    assert sch.total_steps == 60 and sch.reference_sigma == 1.0


def _one_step(prior, schedule, u, cond, t, xi):
    return H.sample_prior(prior, u, schedule, cond=cond, timesteps=torch.full((u.shape[0],), t),
                          noise=xi[None], backend="reference")


@pytest.mark.parametrize("t", [0, 1, 2])
def test_hierarchical_update_is_the_papers(t):
    """u' = u + 0.5 dF/du - 0.5 s^2 (r a (a u - u~)/sigma^2 + u) + s xi, F = -E  (ALGORITHMS.md 6.3)."""
    torch.manual_seed(t)
    head = H.EnergyMLP(5, 7, 1, "silu", time_steps=3).double()
    prior = H.LatentEBMPrior([5], [(head, 0)])
    sch = H.LangevinSchedule.recovery_likelihood(3, steps=1, b_square=0.01)
    sched = sch.extras
    u, ut, xi = (torch.randn(4, 5, dtype=torch.float64) for _ in range(3))
    a, sig, r = sched["a_s"][t + 1], sched["sigmas"][t + 1], sched["is_recovery"][t + 1]
    s2 = sched["step_size_square"][t]
    uu = u.clone().requires_grad_(True)
    gF = torch.autograd.grad(-head(uu, torch.full((4,), t)).sum(), uu)[0]
    expect = u + 0.5 * gF - 0.5 * s2 * (r * a * (a * u - ut) / sig ** 2 + u) + math.sqrt(s2) * xi
    for backend in ("reference", "fused"):
        got = H.sample_prior(prior, u, sch, cond=ut, timesteps=torch.full((4,), t), noise=xi[None], backend=backend)
        torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)


def test_gao_update_is_the_papers():
    """y' = y + 0.5 df/dy - 0.5 s^2 r (y - x~)/sigma^2 + s xi, then x = y / a_s_prev[t+1]  (ALGORITHMS.md 2.2)."""
    t = 1
    head = H.EnergyMLP(5, 7, 1, "lrelu", time_steps=4).double()
    prior = H.LatentEBMPrior([5], [(head, 0)], sigma=math.inf)
    sch = H.LangevinSchedule.recovery_likelihood(4, steps=1, b_square=0.01, form="gao")
    e = sch.extras
    y, xt, xi = (torch.randn(4, 5, dtype=torch.float64) for _ in range(3))
    s2, sig, r = e["step_size_square"][t], e["sigmas"][t + 1], e["is_recovery"][t + 1]
    yy = y.clone().requires_grad_(True)
    gf = torch.autograd.grad(-head(yy, torch.full((4,), t)).sum(), yy)[0]
    expect = (y + 0.5 * gf - 0.5 * s2 * r * (y - xt) / sig ** 2 + math.sqrt(s2) * xi) / e["a_s_prev"][t + 1]
    for backend in ("reference", "fused"):
        got = H.sample_prior(prior, y, sch, cond=xt, timesteps=torch.full((4,), t), noise=xi[None], backend=backend)
        torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)


def test_schedule_validation():
    with pytest.raises(ValueError, match="'h' has 1 entries"):
        H.LangevinSchedule(K=(3, 3), h=(0.1,), n=(1, 1), c1=(1, 1), c2=(0, 0), alpha=(1, 1), d=(1, 1))
    with pytest.raises(ValueError, match=r"K\[0\]"):
        H.LangevinSchedule(K=(-1,), h=(0.1,), n=(1,), c1=(1,), c2=(0,), alpha=(1,), d=(1,))
    with pytest.raises(ValueError, match="finite"):
        H.LangevinSchedule(K=(1,), h=(math.nan,), n=(1,), c1=(1,), c2=(0,), alpha=(1,), d=(1,))
    with pytest.raises(ValueError, match="form"):
        H.LangevinSchedule.recovery_likelihood(3, 10, 1e-4, form="ddpm")
    with pytest.raises(ValueError, match="T "):
        H.LangevinSchedule.recovery_likelihood(1, 10, 1e-4)
    with pytest.raises(ValueError, match="steps has 2 entries"):
        H.LangevinSchedule.recovery_likelihood(3, [1, 2], 1e-4)
