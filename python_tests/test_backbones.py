"""The backbone protocol (hebm_ext.backbones): the layout, the NVAE-shaped SpatialHVAE, the MLP-ladder adapter, the
per-group EBMs' parameter counts (the official networks' counts), a user-defined backbone through the Python API
(an adapter over an NVAE-shaped stand-in with its own API, the README's example) and `hebm train --backbone PATH`."""
from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

import hebm_ext as H
from hebm_ext.backbones import GroupLayout, MLPLadderBackbone, SpatialHVAE, check_backbone

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


pytestmark = pytest.mark.usefixtures("one_thread")


def _u(shapes, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((B,) + s, generator=g, dtype=torch.float64) for s in shapes]


def test_group_layout_round_trip_and_errors():
    lay = GroupLayout([(2, 4, 4), (3,), (1, 2, 2)])
    assert lay.D == 32 + 3 + 4 and lay.offsets == [0, 32, 35]
    y = torch.randn(5, lay.D)
    parts = lay.split(y)
    assert [tuple(p.shape) for p in parts] == [(5, 2, 4, 4), (5, 3), (5, 1, 2, 2)]
    assert torch.equal(lay.cat(parts), y)
    with pytest.raises(ValueError, match=r"y must be \[B, 39\]"):
        lay.split(torch.randn(5, 38))
    with pytest.raises(ValueError, match=r"groups\[1\] must be \[B, 3\]"):
        lay.cat([parts[0], parts[0], parts[2]])


# ------------------------------------------------------------------------------------------ SpatialHVAE
def _hvae(shapes=((2, 2, 2), (2, 4, 4), (3, 4, 4)), image=(1, 8, 8)):
    torch.manual_seed(0)
    return SpatialHVAE(image, shapes, ch=8).double().eval()


def test_spatial_hvae_maps_are_inverse_and_log_prob_is_the_whitened_density():
    b = _hvae()
    check_backbone(b)
    u = _u(b.group_shapes)
    z = b.z_from_u(u)
    assert [tuple(v.shape[1:]) for v in z] == b.group_shapes
    assert max((a - c).abs().max().item() for a, c in zip(b.u_from_z(z), u)) < 1e-12
    # top group: N(0, 1.01^2) exactly (mu = 0, sigma = exp(0) + 0.01)
    assert torch.allclose(z[0], 1.01 * u[0], atol=1e-14)
    # log p(z) = sum_l sum [-u_l^2/2 - log sigma_l - log sqrt(2 pi)], sigma_l = (z_l - mu_l) / u_l, mu_l = T(u with u_l=0)_l
    lp = b.log_prob(z)
    expect = torch.zeros(4, dtype=torch.float64)
    for l in range(3):
        u0 = [v.clone() for v in u]
        u0[l] = torch.zeros_like(u[l])
        mu = b.z_from_u(u0)[l]
        sigma = (z[l] - mu) / u[l]
        expect += (-u[l] ** 2 / 2 - torch.log(sigma) - LOG_SQRT_2PI).flatten(1).sum(1)
    assert (lp - expect).abs().max().item() < 1e-8


def test_spatial_hvae_soft_clamp_bounds_mu_and_sigma():
    b = _hvae(shapes=((2, 4, 4), (2, 4, 4)))
    with torch.no_grad():
        for p in b.dec_sampler.parameters():
            p.mul_(1e4)  # raw mu / log sigma far outside [-5, 5]
    u = _u(b.group_shapes)
    zero = [torch.zeros_like(v) for v in u]
    one = [zero[0], torch.ones_like(u[1])]
    mu = b.z_from_u(zero)[1]
    sigma = b.z_from_u(one)[1] - mu
    assert mu.abs().max().item() <= 5.0 and mu.abs().max().item() > 4.0
    assert sigma.min().item() >= 0.01 and sigma.max().item() <= math.exp(5.0) + 0.01 + 1e-9
    assert sigma.max().item() > 50 or sigma.min().item() < 0.02  # the clamp is what binds


def test_spatial_hvae_encode_decode_elbo_and_stage1_learns():
    torch.manual_seed(0)
    b = SpatialHVAE((1, 8, 8), [(4, 4, 4)] * 2, ch=8)
    x = H.data.Digits(split="train").images[:32]
    z = b.encode(x)
    assert [tuple(v.shape) for v in z] == [(32, 4, 4, 4)] * 2
    assert b.decode(z).shape == x.shape
    opt = torch.optim.Adam(b.parameters(), 3e-3)
    first = None
    for _ in range(50):
        loss, stats = b.elbo(x)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.isfinite(loss.item()) and loss.item() < 0.7 * first
    b.eval()
    with torch.no_grad():  # the posterior carries x: reconstructions beat decoded prior samples
        rec = ((b.decode(b.encode(x)) - x) ** 2).mean().item()
        prior = ((b.decode(b.z_from_u([torch.randn(32, 4, 4, 4) for _ in range(2)])) - x) ** 2).mean().item()
    assert rec < 0.7 * prior, (rec, prior)


def test_spatial_hvae_bad_shapes_are_named():
    with pytest.raises(ValueError, match="twice as wide"):
        SpatialHVAE((1, 8, 8), [(2, 2, 2), (2, 8, 8)])
    with pytest.raises(ValueError, match="2\\^k times"):
        SpatialHVAE((1, 8, 8), [(2, 3, 3)])
    b = SpatialHVAE((1, 8, 8), [(2, 4, 4)])
    with pytest.raises(ValueError, match=r"u\[0\] must be \[B, 2, 4, 4\]"):
        b.z_from_u([torch.randn(2, 2, 2, 2)])
    with pytest.raises(ValueError, match="x must be images"):
        b.encode(torch.randn(2, 3, 8, 8))


def test_mlp_ladder_adapter_is_the_ladder():
    from hebm_ext.methods.hvae import MultiLayerGenerator

    torch.manual_seed(0)
    gen = MultiLayerGenerator("digits", [3, 5], 8, 16, 1, encoder=True, nif=8).double()
    b = MLPLadderBackbone(gen)
    assert check_backbone(b) == [(3,), (5,)]
    u = _u(b.group_shapes)
    z = b.z_from_u(u)
    assert torch.equal(torch.cat(z, 1), gen.ladder.z_from_u(torch.cat(u, 1)))
    assert torch.allclose(torch.cat(b.u_from_z(z), 1), torch.cat(u, 1), atol=1e-12)
    assert torch.equal(b.log_prob(z), gen.ladder.log_prob(torch.cat(z, 1)))
    assert b.decode(z).shape == (4, 1, 8, 8)


def test_check_backbone_names_what_is_missing():
    class NoDecode(nn.Module):
        group_shapes = [(2, 4, 4)]
        image_shape = (1, 8, 8)

        def encode(self, x): ...
        def z_from_u(self, u): ...
        def u_from_z(self, z): ...
        def log_prob(self, z): ...

    with pytest.raises(TypeError, match=r"lacks \['decode'\]"):
        check_backbone(NoDecode())
    with pytest.raises(TypeError, match="must be an nn.Module"):
        check_backbone(object())
    with pytest.raises(ValueError, match="backbone='spatial' needs group_shapes"):
        H.methods.create("diffusion-ebm", "digits", backbone="spatial")
    with pytest.raises(ValueError, match="no elbo"):
        H.methods.create("diffusion-ebm", "digits-spatial", backbone=_NVAEAdapter(_ToyNVAE()))


# ------------------------------------------------------------------------------------------ per-group EBMs
@pytest.mark.parametrize("cls,shape,kw,count", [
    ("Cifar10GroupEBM", (20, 16, 16), dict(ch=128), 2_116_624),   # ALGORITHMS.md 6.4, the paper's CIFAR-10 group
    ("Cifar10GroupEBM", (20, 8, 8), dict(ch=128), 1_428_496),
    ("CelebA256GroupEBM", (20, 64, 64), dict(ch=64), 1_986_816),  # 6.5
    ("CelebA256GroupEBM", (20, 8, 8), dict(ch=64), 1_790_208),
    ("TwoStageGroupEBM", (20, 16, 16), dict(nef=64, ndf=200), 331_545),  # 3.2 _netEzi
    ("TwoStageGroupEBM", (20, 128, 128), dict(nef=64, ndf=200), 648_945),
])
def test_group_ebm_parameter_counts_are_the_official_ones(cls, shape, kw, count):
    """Counts of the official networks (ebm_net.py, ebms_utils.py) for the same shapes."""
    net = getattr(H.nn, cls)(shape, **kw)
    assert sum(p.numel() for p in net.parameters()) == count
    z = torch.randn((2,) + shape)
    e = net(z, torch.tensor([0, 2])) if cls != "TwoStageGroupEBM" else net(z)
    assert e.shape == (2,) and torch.isfinite(e).all()


def test_group_ebm_state_dict_uses_the_official_names():
    keys = set(H.nn.Cifar10GroupEBM((20, 16, 16)).state_dict())
    for k in ("t_ebm_model1.0.weight_orig", "t_ebm_model1.0.weight_u", "conv_start.weight_orig", "conv_short.weight_v",
              "res_blocks.1.conv2d_shortcut.1.weight_orig", "linear2_short.1.weight_orig", "out.1.weight_orig"):
        assert k in keys
    assert "conv2d.conv1.weight" in H.nn.TwoStageGroupEBM((20, 16, 16)).state_dict()
    assert "linear.out.bias" in H.nn.TwoStageGroupEBM((20, 16, 16)).state_dict()
    with pytest.raises(ValueError, match="z_shape"):
        H.nn.Cifar10GroupEBM((20, 12, 12))


# ------------------------------------------------------------------------------------------ a user's backbone
class _ToyNVAE(nn.Module):
    """Stands in for a pretrained NVAE with its own API (the method names of the NVAE fork the papers' code uses;
    images in [0, 1]). Two groups (2, 4, 4), image (1, 8, 8). Not hebm_ext code and not NVAE code."""

    def __init__(self):
        super().__init__()
        self.prior_ftr0 = nn.Parameter(torch.rand(4, 4, 4))
        self.comb = nn.ModuleList(nn.Conv2d(6, 4, 1) for _ in range(2))
        self.sampler = nn.Sequential(nn.ELU(), nn.Conv2d(4, 4, 1))
        self.enc = nn.Conv2d(1, 8, 4, 2, 1)
        self.out = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(4, 1, 3, 1, 1))

    def _tower(self, bs, eps_list=None, z_list=None):
        s = self.prior_ftr0.expand(bs, -1, -1, -1)
        zs, eps, log_p = [], [], 0.0
        for l in range(2):
            mu, log_sig = (torch.zeros_like(s[:, :2]),) * 2 if l == 0 else self.sampler(s).chunk(2, 1)
            mu, sig = 5 * torch.tanh(mu / 5), torch.exp(5 * torch.tanh(log_sig / 5)) + 0.01
            z = mu + sig * eps_list[l] if z_list is None else z_list[l]
            e = (z - mu) / sig
            log_p = log_p + (-0.5 * e * e - torch.log(sig) - LOG_SQRT_2PI).flatten(1).sum(1)
            zs.append(z)
            eps.append(e)
            s = self.comb[l](torch.cat([s, z], 1))
        return s, zs, eps, log_p

    def new_sample_z_by_eps(self, bs, t=1.0, eps_list=None):
        s, zs, _, _ = self._tower(bs, eps_list=eps_list)
        return s, zs

    def new_sample_eps_by_z(self, z_list):
        s, _, eps, _ = self._tower(z_list[0].shape[0], z_list=z_list)
        return s, eps

    def sample(self, num_samples, t, eps_z):
        s, zs, _, log_p = self._tower(num_samples, eps_list=eps_z)
        return self.new_sample_x_by_s(s), zs, log_p

    def get_posterior_jcui7(self, x):
        mu, log_sig = self.enc(x).chunk(2, 1)
        z = mu + torch.exp(log_sig.clamp(-5, 2)) * torch.randn_like(mu)
        return [z[:, :2], z[:, 2:]]

    def new_sample_x_by_s(self, s):
        return torch.sigmoid(self.out(s))


class _NVAEAdapter(nn.Module):
    """The README's adapter: a pretrained NVAE-shaped model behind the backbone protocol (images: ours [-1, 1],
    the model's [0, 1])."""

    def __init__(self, nvae, group_shapes=((2, 4, 4), (2, 4, 4)), image_shape=(1, 8, 8)):
        super().__init__()
        self.nvae = nvae
        self.group_shapes = [tuple(s) for s in group_shapes]
        self.image_shape = tuple(image_shape)

    def encode(self, x):
        return self.nvae.get_posterior_jcui7((x + 1) / 2)

    def z_from_u(self, u):
        return self.nvae.new_sample_z_by_eps(u[0].shape[0], 1.0, list(u))[1]

    def u_from_z(self, z):
        return self.nvae.new_sample_eps_by_z(list(z))[1]

    def log_prob(self, z):
        return self.nvae.sample(z[0].shape[0], 1.0, self.u_from_z(z))[2]

    def decode(self, z):
        s, _ = self.nvae.new_sample_eps_by_z(list(z))
        return self.nvae.new_sample_x_by_s(s) * 2 - 1


@pytest.mark.parametrize("method,preset,kw", [
    ("diffusion-ebm", "digits-spatial", dict(ebm_ch=8, e_l_steps=3)),
    ("joint-ebm", "digits-two-stage", dict(nef=8, ndf=16, ld_steps=3)),
])
def test_a_user_defined_backbone_trains_the_ebm_stage(method, preset, kw):
    torch.manual_seed(0)
    adapter = _NVAEAdapter(_ToyNVAE())
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    m = H.methods.create(method, preset, backbone=adapter, vae_steps=0, batch_size=16, **kw)
    assert m.backbone is adapter and m.config.backbone == "custom" and len(m.ebms) == 2
    assert m.group_shapes == [(2, 4, 4), (2, 4, 4)]
    x = H.data.Digits(split="train").images[:16]
    params = [p.clone() for p in m.ebms.parameters()]
    m.train()
    for _ in range(3):
        out = m.train_step(x)
        assert out["stage"] == 2.0 and math.isfinite(out["loss_e"])
    assert any(not torch.equal(a, b) for a, b in zip(params, m.ebms.parameters()))  # the EBMs learn
    assert all(torch.equal(before[k], v) for k, v in adapter.state_dict().items())  # the backbone is frozen
    m.train()  # the trainer's switch leaves a frozen backbone in eval mode
    assert not adapter.training and not any(p.requires_grad for p in adapter.parameters())
    s = m.sample(5)
    assert s.shape == (5, 1, 8, 8) and torch.isfinite(s).all()


# ------------------------------------------------------------------------------------------ --backbone PATH
def test_hebm_train_backbone_path_reuses_a_finished_stage1_frozen(tmp_path, capsys):
    from hebm_ext import checkpoint, cli

    common = ["vae_ch=8", "group_shapes=((2, 4, 4), (2, 4, 4))", "batch_size=16"]
    run1 = str(tmp_path / "stage1")
    assert cli.main(["train", "--method", "diffusion-ebm", "--preset", "digits-spatial", "--out", run1,
                     "--max-steps", "3", "--no-progress", "--n-eval", "20", "vae_steps=3", "ebm_ch=8",
                     "e_l_steps=2"] + common) == 0
    ck1 = os.path.join(run1, "checkpoints", "last.pt")
    run2 = str(tmp_path / "ebm")
    assert cli.main(["train", "--method", "joint-ebm", "--preset", "digits-two-stage", "--out", run2,
                     "--max-steps", "2", "--no-progress", "--n-eval", "20", "--backbone", ck1, "vae_steps=50",
                     "nef=8", "ndf=16", "ld_steps=2"] + common) == 0
    s1 = checkpoint.load(ck1)["method"]["modules"]
    s2 = checkpoint.load(os.path.join(run2, "checkpoints", "last.pt"))["method"]
    assert s2["config"]["vae_steps"] == 0 and s2["step"] == 2
    for k, v in s1.items():
        if k.startswith("backbone."):
            assert torch.equal(v, s2["modules"][k]), k
    m = checkpoint.method_from_checkpoint(checkpoint.load(os.path.join(run2, "checkpoints", "last.pt")))
    assert m.stage == 2 and not any(p.requires_grad for p in m.backbone.parameters())
    capsys.readouterr()
    assert cli.main(["train", "--method", "lebm", "--preset", "digits", "--out", str(tmp_path / "x"),
                     "--backbone", ck1]) == 2  # a one-line usage error (exit 2), nothing written
    assert "--backbone" in capsys.readouterr().err and not os.path.exists(tmp_path / "x" / "config.json")
    assert cli.main(["train", "--method", "joint-ebm", "--preset", "digits-two-stage", "--out", str(tmp_path / "y"),
                     "--backbone", ck1, "vae_ch=16", "group_shapes=((2, 4, 4), (2, 4, 4))"]) == 2
    assert "does not match" in capsys.readouterr().err
