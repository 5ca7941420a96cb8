"""The generic Langevin engine (hebm_ext.langevin) and its update op hebm::langevin_update on the CPU: against the
papers' eager loops with the same explicit noise (ALGORITHMS.md 1.2, 5.3), against the fused sampler with the same
seed, opcheck, errors. The CUDA side (the op on the GPU, the graph backend) is in test_generic_cuda.py."""
import copy
import math

import pytest
import torch
from torch import nn

import hebm_ext as H
from conftest import cpu_capabilities
from hebm_ext.sampling import program as P
from hebm_ext.sampling import reference as R
from hebm_ext.sampling.generic import _GRAPHS
from helpers import lebm_prior, multi_head_prior, sharpen

F64 = torch.float64


def _op(y, grad, *, cond=None, noise=None, rng=None, step=0, c1=1.0, c2=0.0, h=0.5, n=1.0):
    e = y.new_empty(0)
    rng = rng if rng is not None else torch.tensor([11, 0])
    return H.ops.langevin_update(y, e if cond is None else cond, grad, e if noise is None else noise, rng, step,
                                 c1, c2, h, n)


# ---------------------------------------------------------------------------------------------------------------
# the op

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_update_op_is_the_update_rule(dtype):
    y, g, yc, xi = (torch.randn(5, 3, 4, 7, dtype=dtype) for _ in range(4))
    out = _op(y, g, cond=yc, noise=xi, c1=0.9, c2=0.2, h=0.3, n=0.7)
    torch.testing.assert_close(out, 0.9 * y + 0.2 * yc + 0.3 * g + 0.7 * xi)
    out = _op(y, g, noise=xi, c1=1.0, c2=0.0, h=0.3, n=0.0)  # no y_cond term, n = 0
    torch.testing.assert_close(out, y + 0.3 * g)
    out = _op(y.transpose(1, 3), g.transpose(1, 3), noise=xi.transpose(1, 3), h=0.3, n=0.7)  # strided inputs
    torch.testing.assert_close(out, (y + 0.3 * g + 0.7 * xi).transpose(1, 3))
    assert out.is_contiguous()


def _fused_noise(B, D, seed, offset, k, dtype):
    """The fused sampler's noise of global step k: a flat prior (no heads, no base) under a schedule whose steps
    return y <- xi (c1 = 0, h = 0, n = 1)."""
    prior = H.LatentEBMPrior([D], [], sigma=math.inf)
    params, program = P.build_program(prior, dtype, "cpu")
    sch = H.LangevinSchedule(K=(k + 1,), h=(0.0,), n=(1.0,), c1=(0.0,), c2=(0.0,), alpha=(1.0,), d=(1.0,))
    e = torch.empty(0, dtype=dtype)
    return H.ops.latent_langevin(torch.zeros(B, D, dtype=dtype), e, params, program, sch.coefficients(),
                                 list(sch.K), torch.empty(0, dtype=torch.int64), e,
                                 torch.tensor([seed, offset]), False)[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_update_op_noise_is_the_fused_samplers(dtype):
    """Same seed, offset and global step -> the same normals (chain = first dim, element = flattened index)."""
    B, D = 6, 2 * 3 * 5  # D not a multiple of 4
    for seed, offset, k in [(3, 0, 0), (3, 0, 4), (2 ** 40 + 7, 9, 2)]:
        want = _fused_noise(B, D, seed, offset, k, dtype)
        y = torch.zeros(B, 2, 3, 5, dtype=dtype)
        got = _op(y, y, rng=torch.tensor([seed, offset]), step=k, c1=0.0, h=0.0, n=1.0)
        assert torch.equal(got.reshape(B, D), want), (seed, offset, k)
    assert want.std() > 0.5 and not torch.equal(_fused_noise(B, D, 3, 0, 1, dtype), _fused_noise(B, D, 3, 0, 2, dtype))


@pytest.mark.parametrize("cap", cpu_capabilities())
def test_update_op_every_instruction_set(cap, monkeypatch):
    y, g, yc = (torch.randn(9, 1001, dtype=F64) for _ in range(3))
    want = {dt: _op(y.to(dt), g.to(dt), cond=yc.to(dt), step=3, c1=0.9, c2=0.1) for dt in (F64, torch.float32)}
    monkeypatch.setenv("HEBM_CPU_CAPABILITY", cap)
    for dt, tol in ((F64, 1e-12), (torch.float32, 1e-5)):
        got = _op(y.to(dt), g.to(dt), cond=yc.to(dt), step=3, c1=0.9, c2=0.1)
        assert (got - want[dt]).abs().max().item() < tol, (cap, dt)


def _op_samples():
    out = []
    for dtype in (torch.float32, torch.float64):
        y = torch.randn(4, 3, 5, dtype=dtype)
        e = y.new_empty(0)
        rng = torch.tensor([7, 3])
        out.append((y, e, torch.randn_like(y), e, rng, 2, 1.0, 0.0, 0.05, 0.3))
        out.append((y, torch.randn_like(y), torch.randn_like(y), torch.randn_like(y), e.long(), 0, 0.9, 0.1, 0.05, 0.3))
        out.append((torch.randn(6, dtype=dtype), e, torch.randn(6, dtype=dtype), e, rng, 5, 1.0, 0.0, 0.5, 1.0))
    return out


def test_update_op_opcheck():
    for args in _op_samples():
        torch.library.opcheck(torch.ops.hebm.langevin_update.default, args)


def test_update_op_errors():
    y = torch.randn(3, 4)
    e = y.new_empty(0)
    with pytest.raises(RuntimeError, match=r"grad must have y's shape \[3, 4\], got \[3, 5\]"):
        H.ops.langevin_update(y, e, torch.randn(3, 5), e, torch.tensor([1, 0]), 0, 1.0, 0.0, 0.1, 0.1)
    with pytest.raises(RuntimeError, match="noise must have y's dtype and device"):
        H.ops.langevin_update(y, e, y, y.double(), torch.tensor([1, 0]), 0, 1.0, 0.0, 0.1, 0.1)
    with pytest.raises(RuntimeError, match=r"rng must be an int64 tensor \[seed, offset\]"):
        H.ops.langevin_update(y, e, y, e, torch.tensor([1.0, 0.0]), 0, 1.0, 0.0, 0.1, 0.1)
    with pytest.raises(RuntimeError, match="y_cond is empty but c2 = 0.5"):
        H.ops.langevin_update(y, e, y, e, torch.tensor([1, 0]), 0, 1.0, 0.5, 0.1, 0.1)
    with pytest.raises(RuntimeError, match="step must be >= 0"):
        H.ops.langevin_update(y, e, y, e, torch.tensor([1, 0]), -1, 1.0, 0.0, 0.1, 0.1)
    with pytest.raises(RuntimeError, match="y must be float32 or float64"):
        H.ops.langevin_update(y.half(), e, y.half(), e, torch.tensor([1, 0]), 0, 1.0, 0.0, 0.1, 0.1)


# ---------------------------------------------------------------------------------------------------------------
# the schedule preset

def test_decoupled_preset():
    """ALGORITHMS.md 5.3: h = s^2/2, n = noise_std, tau = (n/s)^2 (CIFAR-10 4e-6, CelebA-64 1.11e-5)."""
    sch = H.LangevinSchedule.decoupled(30, 0.5, 1e-3)
    assert sch.K == (30,) and sch.h == (0.125,) and sch.n == (1e-3,) and sch.c1 == (1.0,) and sch.c2 == (0.0,)
    assert sch.alpha == (1.0,) and sch.d == (1.0,) and sch.reference_sigma is None and sch.name == "decoupled"
    assert sch.extras["temperature"] == pytest.approx(4e-6)
    assert H.LangevinSchedule.decoupled(30, 0.3, 1e-3).extras["temperature"] == pytest.approx(1.111e-5, rel=1e-3)
    with pytest.raises(ValueError, match="step_size must be positive"):
        H.LangevinSchedule.decoupled(30, 0.0, 1e-3)
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        H.LangevinSchedule.decoupled(30, 0.5, -1.0)


# ---------------------------------------------------------------------------------------------------------------
# the engine against the fused sampler (same seed) and the papers' loops (same explicit noise)

def test_prior_only_equals_fused_sampler_same_seed():
    prior = lebm_prior("gelu", F64, in_dim=20, hidden=32)
    sch = H.LangevinSchedule.lebm(steps=40, step_size=0.4)
    y0 = torch.randn(13, 20, dtype=F64)
    fused = H.sample_prior(prior, y0, sch, seed=5, backend="fused")
    out = H.langevin(prior.log_prob, y0, sch, seed=5)
    assert (out - fused).abs().max().item() < 1e-10
    assert (out - y0).abs().max().item() > 1.0
    # another seed, another chain; a generator reproduces itself
    assert (H.langevin(prior.log_prob, y0, sch, seed=6) - fused).abs().max().item() > 0.1
    a = H.langevin(prior.log_prob, y0, sch, generator=torch.Generator().manual_seed(1))
    b = H.langevin(prior.log_prob, y0, sch, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_annealed_schedule_equals_fused_sampler():
    """T = 4 timesteps (Gao's form: flat base, so alpha scales the same terms in both tiers), per-timestep K, c1,
    c2 with y_cond, d; time-conditioned heads get t."""
    prior = multi_head_prior(F64, time_steps=4, sigma=math.inf, out_scale=0.05)
    sch = H.LangevinSchedule.recovery_likelihood(4, steps=[5, 6, 7, 8], b_square=1e-3, form="gao")
    y0, cond = torch.randn(9, 48, dtype=F64), torch.randn(9, 48, dtype=F64)
    fused = H.sample_prior(prior, y0, sch, cond=cond, seed=21, backend="fused")
    out = H.langevin(prior.log_prob, y0, sch, cond=cond, seed=21)
    assert (out - fused).abs().max().item() < 1e-10
    noise = torch.randn(sch.total_steps, 9, 48, dtype=F64)
    ref = H.sample_prior(prior, y0, sch, cond=cond, noise=noise, backend="reference")
    assert (H.langevin(prior.log_prob, y0, sch, cond=cond, noise=noise) - ref).abs().max().item() < 1e-10


def _svhn_posterior_models(nz=16):
    torch.manual_seed(0)
    netG = H.nn.SvhnDecoder(nz, ngf=4).double()
    prior = lebm_prior("gelu", F64, in_dim=nz, hidden=32)
    x = torch.rand(6, 3, 32, 32, dtype=F64) * 2 - 1
    return netG, prior, x


@pytest.mark.parametrize("fused_prior", [None, False])
def test_lebm_posterior_equals_papers_loop(fused_prior):
    """ALGORITHMS.md 1.2: z <- z - 0.5 s^2 (dL/dz + dE/dz + z) + s xi, L = ||g(z) - x||^2 / (2 sigma^2), K = 20,
    s = 0.1, sigma = 0.3, through an SVHN-shaped conv generator."""
    netG, prior, x = _svhn_posterior_models()
    z0 = torch.randn(6, 16, dtype=F64)
    noise = torch.randn(20, 6, 16, dtype=F64)
    ref = R.lebm_posterior_loop(netG, prior.heads[0], x, z0, steps=20, step_size=0.1, sigma=0.3, noise=noise)
    post = H.generator_posterior(netG, x, prior=prior, sigma=0.3, fused_prior=fused_prior)
    out = H.langevin(post, z0, H.LangevinSchedule.lebm(steps=20, step_size=0.1), noise=noise)
    assert (out - ref).abs().max().item() < 1e-10
    # the likelihood matters: the prior-only chain ends elsewhere
    free = H.langevin(prior.log_prob, z0, H.LangevinSchedule.lebm(steps=20, step_size=0.1), noise=noise)
    assert (free - ref).abs().max().item() > 0.05


@pytest.mark.parametrize("fused_prior", [None, False])
def test_joint_posterior_over_the_two_layer_hierarchy(fused_prior):
    """ALGORITHMS.md 3.1: the posterior over both layers of the joint prior (GaussianLadder 100 -> 128 with heads
    f2, f1, a CIFAR-10-shaped decoder from z1), K = 40, s = 0.1, sigma = 0.3: generic engine == the paper's loop."""
    from helpers import joint_prior

    torch.manual_seed(0)
    prior = joint_prior("z", F64)
    netG = H.nn.Cifar10Decoder(128, ngf=4).double()
    from hebm_ext.methods.hvae import BottomDecoder

    dec = BottomDecoder(netG, 100)
    x = torch.rand(5, 3, 32, 32, dtype=F64) * 2 - 1
    z0 = torch.randn(5, 228, dtype=F64)
    noise = torch.randn(40, 5, 228, dtype=F64)
    ref = R.joint_posterior_loop(netG, prior.base, list(prior.heads), x, z0, steps=40, noise=noise)
    post = H.generator_posterior(dec, x, prior=prior, sigma=0.3, fused_prior=fused_prior)
    out = H.langevin(post, z0, H.LangevinSchedule.lebm(steps=40, step_size=0.1), noise=noise)
    assert (out - ref).abs().max().item() < 1e-10
    free = H.langevin(prior.log_prob, z0, H.LangevinSchedule.lebm(steps=40, step_size=0.1), noise=noise)
    assert (free - ref).abs().max().item() > 0.05


def test_fused_prior_gradient_time_conditioned():
    """The single-step fused prior gradient at every timestep t of an annealed schedule (alpha = 1)."""
    prior = multi_head_prior(F64, time_steps=3, out_scale=0.3)
    sch = H.LangevinSchedule(K=(3, 2, 4), h=(0.01, 0.02, 0.03), n=(0.1, 0.1, 0.1), c1=(1.0, 0.99, 1.0),
                             c2=(0.0, 0.01, 0.0), alpha=(1.0, 1.0, 1.0), d=(1.0, 1.0, 0.9))
    netG = nn.Sequential(nn.Linear(48, 10), nn.Tanh()).double()
    x = torch.randn(5, 10, dtype=F64)
    z0 = torch.randn(5, 48, dtype=F64)
    a = H.langevin(H.generator_posterior(netG, x, prior=prior, fused_prior=True), z0, sch, seed=3)
    b = H.langevin(H.generator_posterior(netG, x, prior=prior, fused_prior=False), z0, sch, seed=3)
    assert (a - b).abs().max().item() < 1e-10 and (a - z0).abs().max().item() > 0.1


class _WideGaussian:
    """A prior that is not a LatentEBMPrior: an energy plus a N(0, 2^2) base (energy + base_log_prob protocol)."""

    def __init__(self, energy):
        self.energy = energy

    def base_log_prob(self, z):
        return -(z * z).sum(1) / 8.0


class _LogProbOnly:
    def __init__(self, energy):
        self.e = energy

    def log_prob(self, z):
        return -self.e(z) - (z * z).sum(1) / 8.0


def test_posterior_with_any_prior_object():
    netG, prior, x = _svhn_posterior_models()
    head = prior.heads[0]
    z0 = torch.randn(6, 16, dtype=F64)
    noise = torch.randn(12, 6, 16, dtype=F64)
    sch = H.LangevinSchedule.lebm(steps=12, step_size=0.1)
    ref = R.lebm_posterior_loop(netG, head, x, z0, steps=12, step_size=0.1, prior_sigma=2.0, noise=noise)
    for p in (_WideGaussian(head), _LogProbOnly(head)):
        out = H.langevin(H.generator_posterior(netG, x, prior=p), z0, sch, noise=noise)
        assert (out - ref).abs().max().item() < 1e-10
    # prior=None: N(0, I)
    ref = R.lebm_posterior_loop(netG, None, x, z0, steps=12, step_size=0.1, noise=noise)
    assert (H.langevin(H.generator_posterior(netG, x), z0, sch, noise=noise) - ref).abs().max().item() < 1e-10


def test_dual_mcmc_x_chain_equals_papers_loop():
    """ALGORITHMS.md 5.3: x <- x - 0.5 s^2 dE/dx + n xi, s = 0.5, n = 1e-3, K = 30, on a CIFAR-10-shaped EBM in train
    mode (spectral-norm power iterations at every forward, as the code)."""
    torch.manual_seed(0)
    ebm = sharpen(H.nn.DataEBM("cifar10", ndf=8).double(), 1.0)
    x0 = torch.rand(3, 3, 32, 32, dtype=F64) * 2 - 1
    noise = torch.randn(30, 3, 3, 32, 32, dtype=F64)
    e_ref, e_gen = copy.deepcopy(ebm), copy.deepcopy(ebm)
    ref = R.dual_mcmc_x_loop(e_ref, x0, steps=30, step_size=0.5, noise_std=1e-3, noise=noise)
    out = H.langevin(H.data_ebm_target(e_gen), x0, H.LangevinSchedule.decoupled(30, 0.5, 1e-3), noise=noise)
    assert (out - ref).abs().max().item() < 1e-10
    assert (ref - x0).abs().max().item() > 0.01  # the energy moved the chains (the noise alone is 1e-3 per step)
    for a, b in zip(e_ref.buffers(), e_gen.buffers()):  # the same power iterations happened
        assert torch.equal(a, b)
    # decoupled noise == an LEBM step on the tempered target -E/tau, tau = (n/s)^2
    ebm.eval()
    tau = H.LangevinSchedule.decoupled(30, 0.5, 1e-3).extras["temperature"]
    a = H.langevin(H.data_ebm_target(ebm), x0, H.LangevinSchedule.decoupled(30, 0.5, 1e-3), noise=noise)
    b = H.langevin(H.data_ebm_target(ebm, temperature=tau), x0, H.LangevinSchedule.lebm(30, step_size=1e-3),
                   noise=noise)
    assert (a - b).abs().max().item() < 1e-10


def test_dual_mcmc_z_chain_equals_papers_loop():
    """ALGORITHMS.md 5.3: z <- z - 0.5 s^2 (dR/dz / sigma^2 + z) + n xi, R = sum (g(z) - x)^2 (no 1/2), s = n = 0.1,
    sigma = 0.3, K = 10, through the dual-MCMC ResNet generator with BatchNorm in train mode (10.5)."""
    torch.manual_seed(0)
    netG = H.nn.ResNetGenerator("digits", nz=8, ngf=8).double()
    x = torch.rand(5, 1, 8, 8, dtype=F64) * 2 - 1
    z0 = torch.randn(5, 8, dtype=F64)
    noise = torch.randn(10, 5, 8, dtype=F64)
    g_ref, g_gen = copy.deepcopy(netG), copy.deepcopy(netG)
    ref = R.dual_mcmc_z_loop(g_ref, x, z0, steps=10, step_size=0.1, noise_std=0.1, sigma=0.3, noise=noise)
    post = H.generator_posterior(g_gen, x, sigma=0.3, mse_factor=1.0)
    out = H.langevin(post, z0, H.LangevinSchedule.decoupled(10, 0.1, 0.1), noise=noise)
    assert (out - ref).abs().max().item() < 1e-10
    free = z0 + 0 * noise[0]
    for k in range(10):  # no likelihood: the N(0, I) chain alone
        free = free - 0.005 * free + 0.1 * noise[k]
    assert (free - ref).abs().max().item() > 0.05


@pytest.mark.parametrize("dtype", [torch.float32])
def test_float32_loosely(dtype):
    netG, prior, x = _svhn_posterior_models()
    netG, prior, x = netG.float(), prior.float(), x.float()
    z0 = torch.randn(6, 16)
    noise = torch.randn(20, 6, 16)
    ref = R.lebm_posterior_loop(netG, prior.heads[0], x, z0, steps=20, step_size=0.1, noise=noise)
    out = H.langevin(H.generator_posterior(netG, x, prior=prior), z0, H.LangevinSchedule.lebm(20, 0.1), noise=noise)
    assert (out - ref).abs().max().item() < 1e-4


# ---------------------------------------------------------------------------------------------------------------
# API details

def test_trace_and_set_data():
    netG, prior, x = _svhn_posterior_models()
    post = H.generator_posterior(netG, x, prior=prior)
    z0 = torch.randn(6, 16, dtype=F64)
    sch = H.LangevinSchedule.lebm(steps=4, step_size=0.1)
    noise = torch.randn(4, 6, 16, dtype=F64)
    y, tr = H.langevin(post, z0, sch, noise=noise, trace=True)
    assert tr["per_chain"].shape == (4, 6, 2) and tr["log_prob"].shape == (4,)
    with torch.no_grad():
        torch.testing.assert_close(tr["per_chain"][0, :, 0], post(z0))
    zg = z0.clone().requires_grad_(True)
    g = torch.autograd.grad(post(zg).sum(), zg)[0]
    torch.testing.assert_close(tr["per_chain"][0, :, 1], g.norm(dim=1))
    post.set_data(torch.zeros_like(x))
    assert (H.langevin(post, z0, sch, noise=noise) - y).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"x must match the current data \(\[6, 3, 32, 32\]"):
        post.set_data(torch.zeros(5, 3, 32, 32, dtype=F64))
    with pytest.raises(ValueError, match=r"generator\(z\) has shape \[6, 3, 32, 32\] but x has shape \[6, 1\]"):
        H.langevin(H.generator_posterior(netG, torch.zeros(6, 1, dtype=F64)), z0, sch)


def test_wrong_log_prob_shape_names_the_shape_and_step():
    y0 = torch.randn(5, 3)
    sch = H.LangevinSchedule.lebm(steps=3)
    with pytest.raises(ValueError, match=r"shape \[B\] = \[5\], got shape \[5, 1\] at global step 0 .*squeeze"):
        H.langevin(lambda y, t: -(y * y).sum(1, keepdim=True), y0, sch)
    with pytest.raises(ValueError, match=r"got shape \[\] at global step 0.*not the sum over chains"):
        H.langevin(lambda y, t: -(y * y).sum(), y0, sch)
    with pytest.raises(TypeError, match="must return a tensor"):
        H.langevin(lambda y, t: 1.0, y0, sch)


def test_non_finite_values_name_the_step_and_the_chains():
    calls = []

    def log_prob(y, t):
        calls.append(t)
        lp = -0.5 * (y * y).sum(1)
        if len(calls) == 5:  # global step 4 = timestep 0, its step 1: chains 1 and 3 turn NaN
            lp = lp + torch.tensor([0.0, math.nan, 0.0, math.nan, 0.0, 0.0])
        return lp

    sch = H.LangevinSchedule(K=(3, 3), h=(0.1, 0.1), n=(0.1, 0.1), c1=(1.0, 1.0), c2=(0.0, 0.0),
                             alpha=(1.0, 1.0), d=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"global step 4 \(timestep t=0, step 1 of 3\) in 2 of 6 chains"):
        H.langevin(log_prob, torch.randn(6, 4), sch)
    calls.clear()
    out = H.langevin(log_prob, torch.randn(6, 4), sch, check_finite=False)
    assert torch.isfinite(out).all()  # NaN log_prob values with finite gradients: the chains themselves are fine
    # a gradient blow-up: the updated chains are non-finite
    y0 = torch.tensor([[1.0], [1e30], [2.0]])
    with pytest.raises(ValueError, match=r"global step 0 \(timestep t=0, step 0 of 3\) in 1 of 3 chains"):
        H.langevin(lambda y, t: -(y ** 4).sum(1), y0, H.LangevinSchedule.lebm(steps=3))


def test_argument_errors():
    f = lambda y, t: -(y * y).sum(1)  # noqa: E731
    y0 = torch.randn(4, 3)
    sch = H.LangevinSchedule.lebm(steps=3)
    with pytest.raises(ValueError, match="backend='graph' captures CUDA graphs and needs y0 on a CUDA device"):
        H.langevin(f, y0, sch, backend="graph")
    with pytest.raises(ValueError, match="backend must be one of"):
        H.langevin(f, y0, sch, backend="fused")
    with pytest.raises(ValueError, match=r"noise must be \[S, \*y0.shape\] = \[3, 4, 3\]"):
        H.langevin(f, y0, sch, noise=torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"cond must have y0's shape \[4, 3\]"):
        H.langevin(f, y0, sch, cond=torch.randn(4, 2))
    with pytest.raises(TypeError, match="y0 must be float32 or float64"):
        H.langevin(f, y0.long(), sch)
    with pytest.raises(TypeError, match="log_prob must be a callable"):
        H.langevin("energy", y0, sch)
    with pytest.raises(TypeError, match="schedule must be a hebm_ext.LangevinSchedule"):
        H.langevin(f, y0, {"K": 3})
    with pytest.raises(TypeError, match="prior must be None, a hebm_ext.LatentEBMPrior, or an object with log_prob"):
        H.generator_posterior(nn.Identity(), y0, prior=object())
    with pytest.raises(ValueError, match="fused_prior=True needs a hebm_ext.LatentEBMPrior"):
        H.generator_posterior(nn.Identity(), y0, prior=_LogProbOnly(lambda z: z.sum(1)), fused_prior=True)
    with pytest.raises(ValueError, match="sigma must be a positive finite number"):
        H.generator_posterior(nn.Identity(), y0, sigma=0.0)
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        H.data_ebm_target(nn.Identity(), temperature=-1.0)
    assert not _GRAPHS  # nothing captured on the CPU


def test_edge_cases():
    f = lambda y, t: -(y * y).sum(1)  # noqa: E731
    sch = H.LangevinSchedule(K=(0, 0), h=(0.1, 0.1), n=(1.0, 1.0), c1=(1.0, 1.0), c2=(0.0, 0.0), alpha=(1.0, 1.0),
                             d=(0.5, 0.5))
    y0 = torch.randn(3, 2)
    torch.testing.assert_close(H.langevin(f, y0, sch), 0.25 * y0)
    assert H.langevin(f, torch.randn(0, 2), H.LangevinSchedule.lebm(3)).shape == (0, 2)
    # chains of scalars ([B]) and a log_prob that ignores y
    out = H.langevin(lambda y, t: -0.5 * y * y, torch.zeros(7), H.LangevinSchedule.lebm(5), seed=1)
    assert out.shape == (7,) and out.abs().max() > 0
    out = H.langevin(lambda y, t: torch.zeros(y.shape[0]), torch.zeros(4, 2), H.LangevinSchedule.lebm(5, 1.0), seed=1)
    assert torch.isfinite(out).all() and out.abs().max() > 0
