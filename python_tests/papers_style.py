"""The papers' energy networks and Langevin loops, written here in the papers' own style (our code, after
bpucla/latent-space-EBM-prior train_svhn.py, jcui1224/hierarchical-representation-ebm train_fid.py / utils.py and
ruiqigao/recovery_likelihood as ALGORITHMS.md 2 describes it): what a user's script looks like before it calls
hebm_ext. Used by python_tests/test_drop_in.py and benchmarks/bench_drop_in.py (docs/PORTING.md)."""
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

sn_hook = nn.utils.spectral_norm


class GELU(nn.Module):  # train_svhn.py's own wrapper
    def forward(self, x):
        return F.gelu(x)


class _netE(nn.Module):
    """train_svhn.py: Linear(nz, ndf) - f - Linear(ndf, ndf) - f - Linear(ndf, nez), optional spectral-norm hooks,
    z [B, nz, 1, 1] in, .view(-1, nez, 1, 1) out."""

    def __init__(self, nz=100, ndf=200, nez=1, activation="lrelu", e_sn=True):
        super().__init__()
        self.nez = nez
        apply_sn = sn_hook if e_sn else (lambda x: x)
        f = GELU() if activation == "gelu" else nn.LeakyReLU(0.2)
        self.ebm = nn.Sequential(
            apply_sn(nn.Linear(nz, ndf)),
            f,
            apply_sn(nn.Linear(ndf, ndf)),
            f,
            apply_sn(nn.Linear(ndf, nez)),
        )

    def forward(self, z):
        return self.ebm(z.squeeze()).view(-1, self.nez, 1, 1)


def energy(score, e_energy_form):
    if e_energy_form == "tanh":
        return torch.tanh(-score.squeeze())
    if e_energy_form == "sigmoid":
        return torch.sigmoid(score.squeeze())
    if e_energy_form == "softplus":
        return F.softplus(score.squeeze())
    return score.squeeze()


def sample_langevin_prior_z(z, netE, noise, e_l_step_size, e_prior_sig=1.0, e_energy_form="identity",
                            sign=1.0):
    """train_svhn.py's prior chain, with the draws taken from ``noise`` [S, B, ...] (sign -1: a net that returns
    log-densities)."""
    z = z.clone().detach()
    z.requires_grad = True
    for i in range(noise.shape[0]):
        en = sign * energy(netE(z), e_energy_form)
        z_grad = torch.autograd.grad(en.sum(), z)[0]
        z.data = z.data - 0.5 * e_l_step_size * e_l_step_size * (z_grad + 1.0 / (e_prior_sig * e_prior_sig) * z.data)
        z.data += e_l_step_size * noise[i].view_as(z)
    return z.detach()


def add_sn(m):  # hierarchical-representation-ebm utils.py
    for name, layer in m.named_children():
        m.add_module(name, add_sn(layer))
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        return nn.utils.spectral_norm(m)
    return m


class energy_model(nn.Module):
    """train_fid.py's netE: a log-density over the concatenation of the layers."""

    def __init__(self, z_dim, num_layers, ndf):
        super().__init__()
        self.z_dim = z_dim
        current_dims = self.z_dim
        layers = OrderedDict()
        for i in range(num_layers):
            layers["fc{}".format(i + 1)] = nn.Linear(current_dims, ndf)
            layers["lrelu{}".format(i + 1)] = nn.LeakyReLU(0.2)
            current_dims = ndf
        layers["out"] = nn.Linear(current_dims, 1)
        self.energy = nn.Sequential(layers)

    def forward(self, zs):
        z = torch.cat(zs, dim=1)
        assert z.shape[1] == self.z_dim
        z = z.view(-1, self.z_dim)
        en = self.energy(z).squeeze(1)
        return en


def langevin_prior(zs_init, netE, noise, e_l_step_size):
    """train_fid.py's chain over the layers (net = log-density, N(0, I) reference), draws from ``noise``."""
    zs = []
    for z in zs_init:
        z = z.clone().detach()
        z.requires_grad = True
        zs.append(z)
    dims = [z.shape[1] for z in zs]
    for k in range(noise.shape[0]):
        en = netE(zs).sum()
        en_grad = torch.autograd.grad(en, zs)
        xi = noise[k].split(dims, dim=1)
        for i, z in enumerate(zs):
            z.data += 0.5 * e_l_step_size * e_l_step_size * (en_grad[i] - z.data)
            z.data += e_l_step_size * xi[i]
    return [z.detach() for z in zs]


class _netG(nn.Module):
    """train_svhn.py's generator (SVHN 32 x 32, no batch norm): ConvTranspose2d nz -> 8 ngf (4 x 4) -> 4 ngf -> 2 ngf
    -> nc, LeakyReLU(0.2) between, Tanh out; z [B, nz, 1, 1]."""

    def __init__(self, nz=100, ngf=64, nc=3):
        super().__init__()
        f = nn.LeakyReLU(0.2)
        self.gen = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0), f,
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1), f,
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1), f,
            nn.ConvTranspose2d(ngf * 2, nc, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        return self.gen(z)


def sample_langevin_post_z(z, x, netG, netE, noise, g_l_step_size=0.1, g_llhd_sigma=0.3, e_prior_sig=1.0,
                           e_energy_form="identity"):
    """train_svhn.py's posterior chain (mse with reduction 'sum'), draws from ``noise`` [S, B, nz]."""
    mse = nn.MSELoss(reduction="sum")
    z = z.clone().detach()
    z.requires_grad = True
    for i in range(noise.shape[0]):
        x_hat = netG(z)
        g_log_lkhd = 1.0 / (2.0 * g_llhd_sigma * g_llhd_sigma) * mse(x_hat, x)
        z_grad_g = torch.autograd.grad(g_log_lkhd, z)[0]
        en = energy(netE(z), e_energy_form)
        z_grad_e = torch.autograd.grad(en.sum(), z)[0]
        z.data = z.data - 0.5 * g_l_step_size * g_l_step_size * (z_grad_g + z_grad_e + 1.0 / (e_prior_sig * e_prior_sig) * z.data)
        z.data += g_l_step_size * noise[i].view_as(z)
    return z.detach()


class ConvEnergy(nn.Module):
    """A small time-conditioned conv EBM f(y, t) for diffusion recovery likelihood (Gao et al.'s net_res_temb2 in
    miniature: conv - lrelu - strided conv - lrelu - a per-timestep channel bias - linear read-out)."""

    def __init__(self, nc=3, nf=32, T=6, size=16):
        super().__init__()
        self.c1 = nn.Conv2d(nc, nf, 3, 1, 1)
        self.c2 = nn.Conv2d(nf, 2 * nf, 4, 2, 1)
        self.temb = nn.Embedding(T, 2 * nf)
        self.out = nn.Linear(2 * nf * (size // 2) ** 2, 1)

    def forward(self, y, t):
        h = F.leaky_relu(self.c1(y), 0.2)
        h = F.leaky_relu(self.c2(h) + self.temb(t)[:, :, None, None], 0.2)
        return self.out(h.flatten(1)).squeeze(1)


def gao_sample(f, x_T, K, b_square, sched, noise):
    """Gao et al.'s annealed sampling (ALGORITHMS.md 2.2): for t = T-1 ... 0, y = x_{t+1} and K steps of
    y <- y + 0.5 s_t^2 grad_y [f(y, t) / s_t^2 - r (y - x_{t+1})^2 / (2 sigma^2)] + s_t xi, then x_t = y / a_s_prev.
    ``sched``: hebm_ext.sampling.diffusion_schedule(T); noise [T*K, B, ...] in that order."""
    T = len(sched["a_s"]) - 1
    x = x_T.detach().clone()
    k = 0
    for t in reversed(range(T)):
        sigma, r = float(sched["sigmas"][t + 1]), float(sched["is_recovery"][t + 1])
        b0 = float(sched["sigmas_cum"][t] / sched["sigmas_cum"][0] * b_square * sched["sigmas"][t + 1] ** 2)
        x_tilde = x
        y = x_tilde.clone()
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        for _ in range(K):
            y.requires_grad_(True)
            log_p = f(y, tt) / b0 - r * ((y - x_tilde) ** 2).flatten(1).sum(1) / (2 * sigma ** 2)
            grad = torch.autograd.grad(log_p.sum(), y)[0]
            y = y.detach() + 0.5 * b0 * grad + math.sqrt(b0) * noise[k]
            k += 1
        x = y / float(sched["a_s_prev"][t + 1])
    return x.detach()
