"""The generic engine on CUDA (skipped without a GPU): hebm::langevin_update on the GPU (against the CPU op and the
fused sampler's noise, opcheck), and the graph backend: graph == eager with the same noise, replays after optimizer
steps read the new parameters, train/eval switches recapture, no host synchronisation in a replay."""
import copy

import pytest
import torch

import hebm_ext as H
from conftest import cuda_ready, requires_cuda
from hebm_ext.sampling import generic as G
from hebm_ext.sampling import reference as R
from helpers import lebm_prior
from test_generic import _fused_noise, _op_samples

pytestmark = [pytest.mark.cuda, requires_cuda]
F64 = torch.float64


@pytest.fixture(autouse=True)
def _check_build():
    assert cuda_ready()
    G.clear_graph_cache()
    yield
    G.clear_graph_cache()


def _op(y, grad, rng, step, c1=1.0, c2=0.0, h=0.5, n=1.0, cond=None):
    e = y.new_empty(0)
    return H.ops.langevin_update(y, e if cond is None else cond, grad, e, rng, step, c1, c2, h, n)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_update_op_cuda_equals_cpu_same_seed(dtype, tol):
    y, g, yc = (torch.randn(37, 3, 5, 7, dtype=dtype) for _ in range(3))
    for seed, offset, step in [(1, 0, 0), (2 ** 40 + 3, 5, 17)]:
        rng = torch.tensor([seed, offset])
        cpu = _op(y, g, rng, step, 0.9, 0.1, 0.3, 0.7, cond=yc)
        gpu = _op(y.cuda(), g.cuda(), rng.cuda(), step, 0.9, 0.1, 0.3, 0.7, cond=yc.cuda())
        assert (gpu.cpu() - cpu).abs().max().item() < tol


def test_update_op_cuda_noise_is_the_fused_samplers():
    B, D = 50, 30
    want = _fused_noise(B, D, 9, 4, 3, torch.float32)  # CPU fused kernel; the CUDA kernel draws the same (test_cuda)
    got = _op(torch.zeros(B, D, device="cuda"), torch.zeros(B, D, device="cuda"),
              torch.tensor([9, 4], device="cuda"), 3, c1=0.0, h=0.0, n=1.0)
    assert (got.cpu() - want).abs().max().item() < 1e-5


def test_update_op_cuda_opcheck():
    for args in _op_samples():
        args = tuple(a.cuda() if torch.is_tensor(a) else a for a in args)
        torch.library.opcheck(torch.ops.hebm.langevin_update.default, args)


def _posterior(dtype=F64):
    torch.manual_seed(0)
    netG = H.nn.SvhnDecoder(16, ngf=4).to("cuda", dtype)
    prior = lebm_prior("gelu", dtype, in_dim=16, hidden=32).cuda()
    x = torch.rand(6, 3, 32, 32, dtype=dtype, device="cuda") * 2 - 1
    return netG, prior, x


def test_graph_equals_eager_and_the_papers_loop():
    netG, prior, x = _posterior()
    post = H.generator_posterior(netG, x, prior=prior)
    sch = H.LangevinSchedule.lebm(steps=20, step_size=0.1)
    z0 = torch.randn(6, 16, dtype=F64, device="cuda")
    noise = torch.randn(20, 6, 16, dtype=F64, device="cuda")
    ref = R.lebm_posterior_loop(netG, prior.heads[0], x, z0, steps=20, step_size=0.1, noise=noise)
    eager = H.langevin(post, z0, sch, noise=noise, backend="eager")
    first = H.langevin(post, z0, sch, noise=noise, backend="graph")   # warm-up + capture
    replay = H.langevin(post, z0, sch, noise=noise, backend="graph")  # replay
    assert len(G._GRAPHS) == 1
    for out in (eager, first, replay):
        assert (out - ref).abs().max().item() < 1e-10
    # Philox noise: the same seed gives the same chains on both backends, another seed other chains
    a = H.langevin(post, z0, sch, seed=4, backend="eager")
    H.langevin(post, z0, sch, seed=4, backend="graph")
    b = H.langevin(post, z0, sch, seed=4, backend="graph")
    assert (a - b).abs().max().item() < 1e-10
    c = H.langevin(post, z0, sch, seed=5, backend="graph")
    assert (c - b).abs().max().item() > 0.01
    # "auto" is the graph backend on CUDA
    H.langevin(post, z0, sch, seed=5)
    assert len(G._GRAPHS) == 2


def test_prior_only_graph_equals_fused_sampler_same_seed():
    prior = lebm_prior("lrelu", torch.float32, in_dim=20, hidden=32).cuda()
    sch = H.LangevinSchedule.lebm(steps=30, step_size=0.4)
    y0 = torch.randn(64, 20, device="cuda")
    fused = H.sample_prior(prior, y0, sch, seed=8, backend="fused")
    H.langevin(prior.log_prob, y0, sch, seed=8, backend="graph")
    out = H.langevin(prior.log_prob, y0, sch, seed=8, backend="graph")
    assert (out - fused).abs().max().item() < 1e-4


def test_replay_after_an_optimizer_step_reads_the_new_parameters():
    netG, prior, x = _posterior()
    post = H.generator_posterior(netG, x, prior=prior)
    sch = H.LangevinSchedule.lebm(steps=10, step_size=0.1)
    z0 = torch.randn(6, 16, dtype=F64, device="cuda")
    noise = torch.randn(10, 6, 16, dtype=F64, device="cuda")
    H.langevin(post, z0, sch, noise=noise, backend="graph")
    before = H.langevin(post, z0, sch, noise=noise, backend="graph")
    opt = torch.optim.Adam(list(netG.parameters()) + list(prior.parameters()), lr=1e-2)
    loss = ((netG(before) - x) ** 2).sum() + prior.energy(before).mean()
    loss.backward()
    opt.step()
    post.set_data(torch.rand_like(x))  # a new batch, copied in place
    after = H.langevin(post, z0, sch, noise=noise, backend="graph")
    assert len(G._GRAPHS) == 1  # a replay, not a new capture
    eager = H.langevin(post, z0, sch, noise=noise, backend="eager")
    assert (after - eager).abs().max().item() < 1e-10
    assert (after - before).abs().max().item() > 1e-3


def test_train_eval_switch_and_new_functions_recapture():
    """Dual-MCMC z-chain through the BatchNorm ResNet generator: train mode (batch statistics, running stats
    updated at every step, as the code) and eval mode are different functions; both equal eager."""
    torch.manual_seed(0)
    netG = H.nn.ResNetGenerator("digits", nz=8, ngf=8).to("cuda", F64)
    x = torch.rand(5, 1, 8, 8, dtype=F64, device="cuda") * 2 - 1
    z0 = torch.randn(5, 8, dtype=F64, device="cuda")
    noise = torch.randn(10, 5, 8, dtype=F64, device="cuda")
    sch = H.LangevinSchedule.decoupled(10, 0.1, 0.1)
    post = H.generator_posterior(netG, x, mse_factor=1.0)
    for mode in ("train", "eval", "train"):
        netG.train(mode == "train")
        eager = H.langevin(H.generator_posterior(copy.deepcopy(netG), x, mse_factor=1.0), z0, sch, noise=noise,
                           backend="eager")
        H.langevin(post, z0, sch, noise=noise, backend="graph")  # a capture (or a replay the second time in train)
        out = H.langevin(post, z0, sch, noise=noise, backend="graph")  # a replay
        assert (out - eager).abs().max().item() < 1e-10, mode
    assert len(G._GRAPHS) == 2  # train and eval; switching back reuses the train graph
    # a parameter replaced by a new tensor (not an in-place update): a new capture
    netG.lin.weight = torch.nn.Parameter(netG.lin.weight.detach().clone())
    H.langevin(post, z0, sch, noise=noise, backend="graph")
    assert len(G._GRAPHS) == 3
    # a new function object: a new capture
    f = post.forward
    H.langevin(lambda z, t: f(z, t), z0, sch, noise=noise, backend="graph")
    assert len(G._GRAPHS) == 4


def test_dual_mcmc_x_chain_graph_equals_papers_loop():
    torch.manual_seed(0)
    ebm = H.nn.DataEBM("cifar10", ndf=8).to("cuda", F64)  # train mode: spectral-norm power iterations in the graph
    x0 = torch.rand(4, 3, 32, 32, dtype=F64, device="cuda") * 2 - 1
    noise = torch.randn(30, 4, 3, 32, 32, dtype=F64, device="cuda")
    sch = H.LangevinSchedule.decoupled(30, 0.5, 1e-3)
    target = H.data_ebm_target(ebm)
    state = copy.deepcopy(ebm.state_dict())
    H.langevin(target, x0, sch, noise=noise, backend="graph")  # warm-up run: one chain of power iterations
    e_ref = copy.deepcopy(ebm)
    ref = R.dual_mcmc_x_loop(e_ref, x0, steps=30, step_size=0.5, noise_std=1e-3, noise=noise)
    out = H.langevin(target, x0, sch, noise=noise, backend="graph")  # replay
    assert (out - ref).abs().max().item() < 1e-10
    for a, b in zip(e_ref.buffers(), ebm.buffers()):
        assert torch.equal(a, b)
    assert any(not torch.equal(v, state[k]) for k, v in ebm.state_dict().items())


def test_no_host_synchronisation_in_a_replay():
    netG, prior, x = _posterior(torch.float32)
    post = H.generator_posterior(netG, x, prior=prior)
    sch = H.LangevinSchedule.lebm(steps=5, step_size=0.1)
    z0 = torch.randn(6, 16, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    H.langevin(post, z0, sch, generator=gen, backend="graph")  # capture
    H.langevin(post, z0, sch, generator=gen, backend="eager")  # packs the prior for the fused prior gradient
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        a = H.langevin(post, z0, sch, generator=gen, backend="graph", check_finite=False)
        b = H.langevin(post, z0, sch, seed=3, backend="graph", check_finite=False)
        c = H.langevin(post, z0, sch, generator=gen, backend="eager", check_finite=False)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(a).all() and torch.isfinite(b).all() and torch.isfinite(c).all()
    assert (a - c).abs().max().item() > 1e-3  # the generator advanced: new noise


def test_graph_errors():
    y0 = torch.randn(6, 4, device="cuda")
    sch = H.LangevinSchedule.lebm(steps=3)
    with pytest.raises(ValueError, match=r"shape \[B\] = \[6\], got shape \[6, 1\] at global step 0"):
        H.langevin(lambda y, t: -(y * y).sum(1, keepdim=True), y0, sch, backend="graph")
    y0[1, 0] = -1.0
    y0[4, 0] = -2.0
    y0[[0, 2, 3, 5], 0] = 1.0
    f = lambda y, t: torch.log(y[:, 0]) - (y * y).sum(1)  # noqa: E731  NaN where y[:, 0] < 0
    for _ in range(2):  # warm-up run, then a replay
        with pytest.raises(ValueError, match=r"global step 0 \(timestep t=0, step 0 of 3\) in 2 of 6 chains"):
            H.langevin(f, y0, H.LangevinSchedule.lebm(steps=3, step_size=0.01), backend="graph")


def test_a_function_that_synchronises_cannot_be_captured():
    y0 = torch.randn(6, 4, device="cuda")
    with pytest.raises(RuntimeError, match="could not be captured in a CUDA graph.*use backend='eager'"):
        H.langevin(lambda y, t: -(y * y).sum(1) * float((y * y).mean()), y0, H.LangevinSchedule.lebm(2),
                   backend="graph")
    assert not G._GRAPHS
