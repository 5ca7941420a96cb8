"""The drop-in path (issue 18): the papers' own energy networks and Langevin loops (papers_style.py: our code in the
papers' style, after bpucla/latent-space-EBM-prior train_svhn.py and jcui1224/hierarchical-representation-ebm
train_fid.py), converted by LatentEBMPrior.from_module and run on backend="fused" with the same explicit noise;
the other two examples of docs/PORTING.md (LEBM's posterior chain, a diffusion-EBM chain through a conv network) on
the generic engine."""
import math
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hebm_ext as H
from helpers import TOL
from papers_style import (ConvEnergy, _netE, _netG, add_sn, energy_model, gao_sample, langevin_prior,
                          sample_langevin_post_z, sample_langevin_prior_z)

sn_hook = nn.utils.spectral_norm
sn_param = nn.utils.parametrizations.spectral_norm


def _init(net, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale / math.sqrt(max(p.shape[-1], 1)))
    return net


def _fused(prior, y0, schedule, noise, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fused path must run without a warning
        return H.sample_prior(prior, y0, schedule, noise=noise, backend="fused", **kw)


# ---------------------------------------------------------------------------------------------------------------
# LEBM's _netE

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("activation", ["lrelu", "gelu"])
def test_lebm_netE_hooks(activation, dtype):
    """Done when 1: _netE with spectral-norm hooks, LeakyReLU 0.2 or GELU, .view(-1, 1, 1, 1): fused, no warning,
    its chains equal sample_langevin_prior_z (netE in eval mode: u, v fixed, as the fused path reads them)."""
    torch.manual_seed(0)
    nz, B, steps, s = 100, 16, 60, 0.4
    netE = _init(_netE(nz, 200, 1, activation), scale=2.0).to(dtype)
    netE.train()
    with torch.no_grad():  # a few power iterations, as training would have done
        for _ in range(3):
            netE(torch.randn(4, nz, 1, 1, dtype=dtype))
    netE.eval()
    z0 = torch.randn(B, nz, 1, 1, dtype=dtype)
    noise = torch.randn(steps, B, nz, dtype=dtype)
    ref = sample_langevin_prior_z(z0, netE, noise, s).view(B, nz)
    prior = H.LatentEBMPrior.from_module(netE, nz, sigma=1.0, input=(nz, 1, 1))
    assert prior.heads[0].fused_reason is None
    y = _fused(prior, z0.view(B, nz), H.LangevinSchedule.lebm(steps, s), noise)
    assert (y - ref).abs().max().item() < TOL[dtype]
    # the energy matters: without it the chains end far away
    free = sample_langevin_prior_z(z0, lambda z: 0 * z.sum((1, 2, 3)), noise, s).view(B, nz)
    assert (free - ref).abs().max().item() > 0.01  # spectral norm keeps the energy gentle (|grad E| <= 1)


def test_lebm_netE_trace_energy_and_nez():
    """The trace's energy is the papers' en (value, not only gradient), and nez > 1 sums the outputs (en.sum())."""
    torch.manual_seed(1)
    nz, B, steps, s = 12, 9, 10, 0.3
    netE = _init(_netE(nz, 30, 3, "gelu"), scale=2.0).double().eval()
    z0 = torch.randn(B, nz, dtype=torch.float64)
    noise = torch.randn(steps, B, nz, dtype=torch.float64)
    prior = H.LatentEBMPrior.from_module(netE, [nz], input=(nz, 1, 1), energy_form="softplus")
    ref = sample_langevin_prior_z(z0.view(B, nz, 1, 1), netE, noise, s, e_energy_form="softplus").view(B, nz)
    y, tr = _fused(prior, z0, H.LangevinSchedule.lebm(steps, s), noise, trace=True)
    assert (y - ref).abs().max().item() < 1e-10
    with torch.no_grad():
        en0 = F.softplus(netE(z0.view(B, nz, 1, 1)).view(B, 3)).sum(1)
    assert (tr["per_chain"][0, :, 0] - en0).abs().max().item() < 1e-10


# ---------------------------------------------------------------------------------------------------------------
# Every layer kind, parametrized spectral norm, bias-free layers, outputs and energy forms

def _mixed_net(nz, h, sn=sn_param):
    return nn.Sequential(
        sn(nn.Linear(nz, h, bias=False)), nn.ReLU(),
        sn(nn.Linear(h, h)), nn.ELU(alpha=0.7),
        nn.Linear(h, h, bias=False), nn.Softplus(beta=2.0),
        sn(nn.Linear(h, h)), nn.GELU(approximate="tanh"),
        nn.Linear(h, h), nn.SiLU(),
        nn.Linear(h, h), nn.Tanh(),
        nn.Linear(h, h), nn.Sigmoid(),
        nn.Linear(h, 1),
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("output", ["energy", "log_density"])
@pytest.mark.parametrize("form", ["identity", "tanh", "sigmoid", "softplus"])
def test_parametrized_sn_every_activation_form_and_output(form, output, dtype):
    """Done when 2: parametrized spectral norm, ReLU, ELU, Softplus, tanh-GELU (and SiLU, Tanh, Sigmoid), bias-free
    layers, output="log_density" and each energy_form, against the papers'-style loop."""
    torch.manual_seed(2)
    nz, B, steps, s = 16, 11, 25, 0.3
    net = _init(_mixed_net(nz, 24), scale=2.5).to(dtype)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, nz, dtype=dtype))
    net.eval()
    sign = 1.0 if output == "energy" else -1.0
    z0 = torch.randn(B, nz, dtype=dtype)
    noise = torch.randn(steps, B, nz, dtype=dtype)
    ref = sample_langevin_prior_z(z0, net, noise, s, e_prior_sig=1.3, e_energy_form=form, sign=sign)
    prior = H.LatentEBMPrior.from_module(net, nz, sigma=1.3, output=output, energy_form=form)
    y = _fused(prior, z0, H.LangevinSchedule.lebm(steps, s, sigma=1.3), noise)
    assert (y - ref).abs().max().item() < TOL[dtype]


ACTS = {
    "LeakyReLU(0.05)": lambda: nn.LeakyReLU(0.05),
    "LeakyReLU(1.7)": lambda: nn.LeakyReLU(1.7),
    "ReLU": nn.ReLU,
    "GELU": nn.GELU,
    "GELU(tanh)": lambda: nn.GELU(approximate="tanh"),
    "SiLU": nn.SiLU,
    "Tanh": nn.Tanh,
    "ELU(1.3)": lambda: nn.ELU(1.3),
    "Softplus": nn.Softplus,
    "Softplus(beta=4)": lambda: nn.Softplus(beta=4.0),
    "Sigmoid": nn.Sigmoid,
    "inplace LeakyReLU": lambda: nn.LeakyReLU(0.2, inplace=True),
    "inplace ReLU": lambda: nn.ReLU(inplace=True),
}


class _Functional(nn.Module):
    """The same activations written as functions in a forward (the way most research code writes them)."""

    def __init__(self, nz, h, fn, bias=True):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(nz, h, bias=bias), nn.Linear(h, h), nn.Linear(h, 1, bias=bias)
        self.fn = fn

    def forward(self, z):
        h = self.fn(self.fc1(z.flatten(1)))
        h = self.fn(self.fc2(h).unsqueeze(1)).squeeze(1)
        return self.out(h).squeeze(-1)


class Swish(nn.Module):  # train_svhn.py's 'swish'
    def forward(self, x):
        return x * torch.sigmoid(x)


ACTS["Swish (x * sigmoid(x))"] = Swish


FUNCS = {
    "F.leaky_relu": lambda x: F.leaky_relu(x, 0.3),
    "F.leaky_relu kw": lambda x: F.leaky_relu(x, negative_slope=0.1),
    "F.relu": F.relu,
    "torch.relu": torch.relu,
    "x.relu()": lambda x: x.relu(),
    "F.gelu": F.gelu,
    "F.gelu tanh": lambda x: F.gelu(x, approximate="tanh"),
    "F.silu": F.silu,
    "torch.tanh": torch.tanh,
    "x.tanh()": lambda x: x.tanh(),
    "F.elu": lambda x: F.elu(x, 0.4),
    "F.softplus": lambda x: F.softplus(x, beta=0.5),
    "torch.sigmoid": torch.sigmoid,
}


def _check_chain(net, nz, dtype=torch.float64, B=7, steps=12, s=0.3, **kw):
    z0 = torch.randn(B, nz, dtype=dtype) * 1.5
    noise = torch.randn(steps, B, nz, dtype=dtype)
    net = net.to(dtype).eval()
    ref = sample_langevin_prior_z(z0, net, noise, s)
    prior = H.LatentEBMPrior.from_module(net, nz, **kw)
    assert prior.heads[0].fused_reason is None, prior.heads[0].fused_reason
    y = _fused(prior, z0, H.LangevinSchedule.lebm(steps, s), noise)
    assert (y - ref).abs().max().item() < TOL[dtype]


@pytest.mark.parametrize("name", list(ACTS))
def test_every_activation_module(name):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 20), ACTS[name](), nn.Linear(20, 20), ACTS[name](), nn.Linear(20, 1))
    _check_chain(_init(net, 3.0), 6)


@pytest.mark.parametrize("name", list(FUNCS))
def test_every_activation_function(name):
    torch.manual_seed(4)
    _check_chain(_init(_Functional(6, 20, FUNCS[name], bias=False), 3.0), 6)


def test_activation_derivatives_against_autograd():
    """The kernels' activations, value and derivative, against PyTorch's at many points (one fused step with
    h = 1, n = c1 = 0 returns grad log p~; the trace returns E): wide pre-activations, Softplus past its threshold."""
    schedule = H.LangevinSchedule(K=(1,), h=(1.0,), n=(0.0,), c1=(0.0,), c2=(0.0,), alpha=(1.0,), d=(1.0,))
    for name, make in ACTS.items():
        torch.manual_seed(5)
        net = _init(nn.Sequential(nn.Linear(3, 64), make(), nn.Linear(64, 1)), 1.0).double()
        with torch.no_grad():
            net[0].weight.mul_(8.0)  # pre-activations of a few units up to |x| ~ 20-40
        prior = H.LatentEBMPrior.from_module(net, 3, sigma=math.inf)
        y = torch.randn(200, 3, dtype=torch.float64)
        g, tr = _fused(prior, y, schedule, torch.zeros(1, 200, 3, dtype=torch.float64), trace=True)
        yy = y.clone().requires_grad_(True)
        e = net(yy).squeeze(1)
        ga = torch.autograd.grad(-e.sum(), yy)[0]
        assert (g - ga).abs().max().item() < 1e-10, name
        assert (tr["per_chain"][0, :, 0] - e.detach()).abs().max().item() < 1e-10, name


def test_chained_activations_identity_layers_and_reshapes():
    """Two activations in a row, an activation on the input, Linear - Linear without one, no-op reshapes."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 2)

        def forward(self, z):
            h = torch.tanh(z.view(z.shape[0], 1, 8).reshape(-1, 8))
            h = F.softplus(torch.relu(self.a(h)))
            h = self.b(h).contiguous()
            return F.elu(self.c(h)).flatten(1)

    torch.manual_seed(6)
    net = _init(Net(), 2.0)
    _check_chain(net, 8)
    _check_chain(net, 8, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------------------
# Cui et al.: a log-density over the concatenated layers

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hierarchical_representation_ebm_chain(dtype):
    torch.manual_seed(7)
    dims, B, steps, s = [4, 3, 5, 2, 6], 10, 40, 0.3
    netE = add_sn(_init(energy_model(sum(dims), 2, 50), 2.0)).to(dtype)
    netE.train()
    with torch.no_grad():
        for _ in range(3):
            netE([torch.randn(4, d, dtype=dtype) for d in dims])
    netE.eval()
    zs0 = [torch.randn(B, d, dtype=dtype) for d in dims]
    noise = torch.randn(steps, B, sum(dims), dtype=dtype)
    ref = torch.cat(langevin_prior(zs0, netE, noise, s), 1)
    prior = H.LatentEBMPrior.from_module(netE, dims, output="log_density", input="layers")
    y = _fused(prior, torch.cat(zs0, 1), H.LangevinSchedule.lebm(steps, s), noise)
    assert (y - ref).abs().max().item() < TOL[dtype]


# ---------------------------------------------------------------------------------------------------------------
# Live parameters

def test_optimizer_step_and_power_iteration_are_seen():
    """An optimizer step on the user's module, and a train-mode forward that moves the spectral-norm vectors, are
    both seen by the next fused call (the packed program is rebuilt when the versions change)."""
    torch.manual_seed(8)
    nz, B, steps, s = 10, 6, 15, 0.3
    for sn in (sn_hook, sn_param):
        netE = _init(nn.Sequential(sn(nn.Linear(nz, 32)), nn.LeakyReLU(0.2), sn(nn.Linear(32, 1))), 2.0).double()
        prior = H.LatentEBMPrior.from_module(netE, nz)
        z0 = torch.randn(B, nz, dtype=torch.float64)
        noise = torch.randn(steps, B, nz, dtype=torch.float64)
        sched = H.LangevinSchedule.lebm(steps, s)
        first = _fused(prior, z0, sched, noise)
        opt = torch.optim.SGD(netE.parameters(), lr=0.5)
        netE.train()
        loss = netE(torch.randn(32, nz, dtype=torch.float64)).mean()  # also one power iteration
        opt.zero_grad()
        loss.backward()
        opt.step()
        netE.eval()
        ref = sample_langevin_prior_z(z0, netE, noise, s)
        y = _fused(prior, z0, sched, noise)
        assert (y - ref).abs().max().item() < 1e-10
        assert (y - first).abs().max().item() > 1e-3


def test_train_mode_power_iteration_difference_is_small():
    """In train mode the papers' loop runs one power iteration per forward; the fused path keeps u, v fixed. On the
    LEBM setting after some training-like iterations that difference is a small fraction of the chains' spread
    (docs/PORTING.md quotes the number, benchmarks/bench_drop_in.py measures it)."""
    torch.manual_seed(9)
    nz, B, steps, s = 100, 32, 60, 0.4
    netE = _init(_netE(nz, 200, 1, "lrelu"), 2.0)
    netE.train()
    with torch.no_grad():
        for _ in range(20):
            netE(torch.randn(8, nz, 1, 1))
    z0 = torch.randn(B, nz, 1, 1)
    noise = torch.randn(steps, B, nz)
    prior = H.LatentEBMPrior.from_module(netE, nz, input=(nz, 1, 1))
    y = _fused(prior, z0.view(B, nz), H.LangevinSchedule.lebm(steps, s), noise)
    ref_train = sample_langevin_prior_z(z0, netE, noise, s).view(B, nz)
    diff = (y - ref_train).abs().max().item()
    assert diff < 0.05 * ref_train.std().item()
    assert diff > 0  # train mode does change something (the comparison is not vacuous)


# ---------------------------------------------------------------------------------------------------------------
# Unsupported modules: a message naming the first unsupported layer or operation

class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(5, 5), nn.Linear(5, 1)

    def forward(self, z):
        return self.out(z + torch.relu(self.a(z)))


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 1)

    def forward(self, z):
        return 2.0 * self.a(z)


class _FunctionalLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 5))

    def forward(self, z):
        return F.linear(z, self.w)


class _MixChains(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(15, 1)

    def forward(self, z):  # [B, 5] viewed as [B/3, 15]: mixes chains
        return self.a(z.reshape(-1, 15))


class _WrongCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 1)

    def forward(self, zs):
        return self.a(torch.cat(list(reversed(zs)), dim=1)).squeeze(1)


class _TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 1)

    def forward(self, z):
        e = self.a(z).squeeze(1)
        return e, e


def _hooked():
    lin = nn.Linear(5, 1)
    lin.register_forward_hook(lambda m, i, o: o * 2)
    return nn.Sequential(lin)


UNSUPPORTED = {
    "BatchNorm1d": (lambda: nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1)),
                    "1 (BatchNorm1d)"),
    "LayerNorm": (lambda: nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.Linear(8, 1)), "1 (LayerNorm)"),
    "Dropout": (lambda: nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.1), nn.Linear(8, 1)), "1 (Dropout)"),
    "Mish": (lambda: nn.Sequential(nn.Linear(5, 8), nn.Mish(), nn.Linear(8, 1)), "1 (Mish)"),
    "Softplus threshold": (lambda: nn.Sequential(nn.Linear(5, 8), nn.Softplus(threshold=5), nn.Linear(8, 1)),
                           "threshold=5"),
    "residual": (_Residual, "add"),
    "scale": (_Scaled, "mul"),
    "F.linear": (_FunctionalLinear, "linear"),
    "hook": (_hooked, "forward hook"),
    "Conv1d": (lambda: nn.Sequential(nn.Unflatten(1, (1, 5)), nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(6, 1)),
               "1 (Conv1d)"),
    "tuple output": (_TupleOut, "output (tuple)"),
    "mixing reshape": (_MixChains, "mixes the chains"),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_layers_are_named(name):
    make, needle = UNSUPPORTED[name]
    torch.manual_seed(10)
    net = make().double()
    prior = H.LatentEBMPrior.from_module(net, 5)
    reason = prior.heads[0].fused_reason
    assert reason is not None and needle in reason, reason
    y0 = torch.randn(4, 5, dtype=torch.float64)
    sched = H.LangevinSchedule.lebm(3, 0.1)
    with pytest.raises(ValueError, match="generic engine"):
        H.sample_prior(prior, y0, sched, backend="fused")


def test_unsupported_cat_order_is_named():
    prior = H.LatentEBMPrior.from_module(_WrongCat().double(), [2, 3], input="layers")
    assert "order" in prior.heads[0].fused_reason


def test_batchnorm_auto_runs_reference_with_the_reason():
    """Done when 3: a BatchNorm1d inside: the message names it; backend="auto" runs the reference with that reason
    in the warning (and gives the reference's chains)."""
    torch.manual_seed(11)
    net = nn.Sequential(OrderedDict(fc1=nn.Linear(5, 8), bn=nn.BatchNorm1d(8), act=nn.LeakyReLU(0.2),
                                    out=nn.Linear(8, 1))).double().eval()
    prior = H.LatentEBMPrior.from_module(net, 5)
    assert prior.heads[0].fused_reason.startswith("bn (BatchNorm1d)")
    y0 = torch.randn(6, 5, dtype=torch.float64)
    noise = torch.randn(4, 6, 5, dtype=torch.float64)
    sched = H.LangevinSchedule.lebm(4, 0.2)
    with pytest.warns(UserWarning, match=r"bn \(BatchNorm1d\)"):
        y = H.sample_prior(prior, y0, sched, noise=noise, backend="auto")
    ref = sample_langevin_prior_z(y0, net, noise, 0.2)
    assert (y - ref).abs().max().item() < 1e-12


def test_conversion_leaves_the_module_as_it_was():
    """Reading the structure runs the module once in eval mode under no_grad: training flags, spectral-norm vectors
    and parameters are unchanged."""
    net = _netE(10, 20, 1).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    H.LatentEBMPrior.from_module(net, 10, input=(10, 1, 1))
    assert all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_bad_arguments():
    net = nn.Sequential(nn.Linear(5, 1))
    with pytest.raises(ValueError, match="output must be"):
        H.LatentEBMPrior.from_module(net, 5, output="logits")
    with pytest.raises(ValueError, match="energy_form must be"):
        H.LatentEBMPrior.from_module(net, 5, energy_form="exp")
    with pytest.raises(ValueError, match="input shape"):
        H.LatentEBMPrior.from_module(net, 5, input=(4, 1, 1))
    with pytest.raises(TypeError, match="net must be an nn.Module"):
        H.LatentEBMPrior.from_module(lambda z: z, 5)


# ---------------------------------------------------------------------------------------------------------------
# docs/PORTING.md's other two examples: the generic engine

def test_lebm_posterior_chain_generic_engine():
    """sample_langevin_post_z(z, x, netG, netE) -> langevin(generator_posterior(G, x, prior, sigma=0.3), ...):
    the prior's gradient from the fused op (a from_module prior), the generator's by autograd."""
    torch.manual_seed(12)
    nz, B, steps, s = 16, 5, 8, 0.1
    netG = _init(_netG(nz, 8, 3), 0.1).double()  # a gentle generator: a stable (non-chaotic) chain
    netE = _init(_netE(nz, 32, 1), 2.0).double().eval()
    x = torch.randn(B, 3, 32, 32, dtype=torch.float64).tanh()
    z0 = torch.randn(B, nz, dtype=torch.float64)
    noise = torch.randn(steps, B, nz, dtype=torch.float64)
    ref = sample_langevin_post_z(z0.view(B, nz, 1, 1), x, netG, netE, noise, s).view(B, nz)
    prior = H.LatentEBMPrior.from_module(netE, nz, input=(nz, 1, 1))
    G = nn.Sequential(nn.Unflatten(1, (nz, 1, 1)), netG)  # the generator takes [B, nz, 1, 1]
    target = H.generator_posterior(G, x, prior, sigma=0.3, fused_prior=True)
    y = H.langevin(target, z0, H.LangevinSchedule.lebm(steps, s), noise=noise)
    assert (y - ref).abs().max().item() < 1e-10


def test_diffusion_ebm_conv_chain_generic_engine():
    """Gao et al.'s annealed recovery-likelihood sampling through a conv EBM -> langevin(f, x_T,
    LangevinSchedule.recovery_likelihood(T, K, b_square, form="gao"))."""
    torch.manual_seed(13)
    T, K, B, b2 = 3, 4, 3, 2e-4
    f = _init(ConvEnergy(3, 8, T, 8), 1.0).double()
    x_T = torch.randn(B, 3, 8, 8, dtype=torch.float64)
    noise = torch.randn(T * K, B, 3, 8, 8, dtype=torch.float64)
    ref = gao_sample(f, x_T, K, b2, H.sampling.diffusion_schedule(T), noise)
    sched = H.LangevinSchedule.recovery_likelihood(T, K, b2, form="gao")
    y = H.langevin(lambda y, t: f(y, torch.full((y.shape[0],), t, dtype=torch.long)), x_T, sched, noise=noise)
    assert (y - ref).abs().max().item() < 1e-10
    assert (x_T - ref).abs().max().item() > 1e-3


@pytest.mark.parametrize("path", ["staged", "resident", "cluster", "streamed", "cluster4"])
def test_cuda_block_program_runs_the_new_activations(path):
    """The CUDA kernels' paths (executed lane by lane on the CPU by hebm::_latent_langevin_emulation) evaluate a
    converted module with every activation kind through the same core definitions as the CPU kernel."""
    from hebm_ext.sampling import program as P  # noqa: PLC0415

    torch.manual_seed(14)
    nz, B, steps, s = 10, 7, 8, 0.3
    net = _init(_mixed_net(nz, 12), scale=2.5).double().eval()
    prior = H.LatentEBMPrior.from_module(net, nz, output="log_density", energy_form="sigmoid")
    sched = H.LangevinSchedule.lebm(steps, s)
    y0 = torch.randn(B, nz, dtype=torch.float64)
    noise = torch.randn(steps, B, nz, dtype=torch.float64)
    ref = sample_langevin_prior_z(y0, net, noise, s, e_energy_form="sigmoid", sign=-1.0)
    params, program = P.build_program(prior, y0.dtype, y0.device)
    e = y0.new_empty(0)
    out, _, _ = torch.ops.hebm._latent_langevin_emulation(
        y0, e, params, program, sched.coefficients(), list(sched.K), torch.empty(0, dtype=torch.int64), noise,
        torch.zeros(2, dtype=torch.int64), False, path, 64, 3 if path == "staged" else 2,
        5 if path == "streamed" else 0, False, [])  # streamed: 5 rows a chunk, so that layers take several
    assert (out - ref).abs().max().item() < 1e-10
