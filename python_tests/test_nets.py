"""Convolutional networks (hebm_ext.nn.conv, hebm_ext.nn.data_ebm): shapes, ranges, input gradients, and
structural checks against the papers' code (ALGORITHMS.md 1.1, 3.1, 3.4, 5.2)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hebm_ext.nn.conv import (
    DATASETS, IMAGE_SHAPES, Cifar10Decoder, ConvDecoder, ConvEncoder, GenBlock, LadderEncoder, MLPEncoder,
    ResNetGenerator, SvhnDecoder, decoder, encoder, init_weights_dual_mcmc, init_weights_xavier,
)
from hebm_ext.nn.data_ebm import DataEBM, EBMBlock, EBMBlockStart

DUAL_DATASETS = ("cifar10", "celeba64", "digits", "mnist")
B = 3


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _image(dataset, batch=B, requires_grad=False):
    x = torch.rand(batch, *IMAGE_SHAPES[dataset]) * 2 - 1
    return x.requires_grad_(requires_grad)


def _grad_ok(out_sum, inp):
    (g,) = torch.autograd.grad(out_sum, inp)
    assert g.shape == inp.shape
    assert torch.isfinite(g).all()
    assert g.abs().sum() > 0


def _convs(module, kind=nn.Conv2d):
    return [m for m in module.modules() if isinstance(m, kind)]


# --------------------------------------------------------------------------------------------------- decoders

@pytest.mark.parametrize("dataset", DATASETS)
def test_decoder_shape_range_grad(dataset):
    nz = 12
    g = decoder(dataset, nz, ngf=8)
    assert g.image_shape == IMAGE_SHAPES[dataset]
    z = torch.randn(B, nz, requires_grad=True)
    x = g(z)
    assert x.shape == (B, *IMAGE_SHAPES[dataset])
    assert torch.isfinite(x).all() and x.abs().max() <= 1.0
    _grad_ok(x.sum(), z)
    # the papers' [B, nz, 1, 1] layout gives the same image
    torch.testing.assert_close(g(z.detach().view(B, nz, 1, 1)), x.detach())


def test_decoder_saturates_within_range():
    g = decoder("digits", 4, ngf=8)
    x = g(1e3 * torch.randn(B, 4))
    assert x.abs().max() <= 1.0


def test_lebm_svhn_generator_structure_and_parameter_count():
    nz, ngf = 100, 64
    g = SvhnDecoder(nz, ngf)
    convts = _convs(g, nn.ConvTranspose2d)
    got = [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0]) for m in convts]
    assert got == [(nz, 8 * ngf, 4, 1, 0), (8 * ngf, 4 * ngf, 4, 2, 1), (4 * ngf, 2 * ngf, 4, 2, 1),
                   (2 * ngf, 3, 4, 2, 1)]
    assert all(m.bias is not None for m in convts)  # g_batchnorm=False -> bias=True
    acts = [m for m in g.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 3 and all(a.negative_slope == 0.2 for a in acts)
    assert isinstance(list(g.modules())[-1], nn.Tanh)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in g.modules())
    # by hand: ConvTranspose2d(in, out, k) has in*out*k*k weights and out biases
    by_hand = (100 * 512 * 16 + 512) + (512 * 256 * 16 + 256) + (256 * 128 * 16 + 128) + (128 * 3 * 16 + 3)
    assert by_hand == 3_447_683
    assert sum(p.numel() for p in g.parameters()) == by_hand
    assert g(torch.randn(2, nz)).shape == (2, 3, 32, 32)


def test_joint_cifar10_generator_maps_128_to_32x32():
    g = Cifar10Decoder(128)  # ngf = 64 as hard-coded in the joint code
    got = [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
           for m in _convs(g, nn.ConvTranspose2d)]
    assert got == [(128, 1024, 8, 1, 0), (1024, 512, 4, 2, 1), (512, 256, 4, 2, 1), (256, 3, 3, 1, 1)]
    x = g(torch.randn(2, 128))
    assert x.shape == (2, 3, 32, 32)


def test_celeba64_decoder_has_five_convt_layers():
    g = decoder("celeba64", 100)
    assert g.ngf == 128
    convts = _convs(g, nn.ConvTranspose2d)
    assert len(convts) == 5
    assert [m.out_channels for m in convts] == [1024, 512, 256, 128, 3]


def test_custom_conv_decoder_checks_chaining():
    with pytest.raises(ValueError, match=r"layers\[1\].*512"):
        ConvDecoder(10, [(10, 512, 4, 1, 0), (256, 3, 4, 2, 1)])
    with pytest.raises(ValueError, match=r"layers\[0\].*take 10"):
        ConvDecoder(10, [(11, 8, 4, 1, 0)])


# --------------------------------------------------------------------------------------------------- encoders

@pytest.mark.parametrize("dataset", DATASETS)
def test_encoder_shape_grad(dataset):
    nz = 7
    q = encoder(dataset, nz, nif=4)
    x = _image(dataset, requires_grad=True)
    mu, logvar = q(x)
    assert mu.shape == (B, nz) and logvar.shape == (B, nz)
    assert torch.isfinite(mu).all() and torch.isfinite(logvar).all()
    _grad_ok(mu.sum() + logvar.sum(), x)


def test_dual_mcmc_cifar10_inference_net_structure():
    nz, nif = 128, 128
    q = ConvEncoder("cifar10", nz, nif=nif)
    trunk = _convs(q.trunk)
    got = [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0]) for m in trunk]
    assert got == [(3, nif, 3, 1, 1), (nif, 2 * nif, 4, 2, 1), (2 * nif, 4 * nif, 4, 2, 1), (4 * nif, 8 * nif, 4, 2, 1)]
    assert all(m.bias is None for m in trunk)
    for head in (q.mu, q.logvar):
        assert (head.in_channels, head.out_channels, head.kernel_size, head.stride, head.padding) == \
            (8 * nif, nz, (4, 4), (1, 1), (0, 0))
        assert head.bias is not None
    by_hand = (3 * nif * 9 + nif * 2 * nif * 16 + 2 * nif * 4 * nif * 16 + 4 * nif * 8 * nif * 16
               + 2 * (8 * nif * nz * 16 + nz))
    assert sum(p.numel() for p in q.parameters()) == by_hand


def test_celeba64_encoder_first_conv_downsamples():
    q = ConvEncoder("celeba64", 16, nif=4)
    first = _convs(q.trunk)[0]
    assert (first.kernel_size[0], first.stride[0], first.padding[0]) == (4, 2, 1)
    assert q.mu.kernel_size == (4, 4)


@pytest.mark.parametrize("dataset", DATASETS)
def test_ladder_encoder_shapes_top_first(dataset):
    dims = [5, 9, 6]  # top, middle, bottom
    q = LadderEncoder(dataset, dims, nif=4)
    x = _image(dataset, requires_grad=True)
    feats = q.features(x)
    assert len(feats) == 3
    assert [f.shape[1] for f in feats] == [4, 8, 16]
    out = q(x)
    assert [tuple(mu.shape) for mu, _ in out] == [(B, 5), (B, 9), (B, 6)]
    assert [tuple(lv.shape) for _, lv in out] == [(B, 5), (B, 9), (B, 6)]
    assert all(torch.isfinite(mu).all() and torch.isfinite(lv).all() for mu, lv in out)
    _grad_ok(sum(mu.sum() + lv.sum() for mu, lv in out), x)


def test_ladder_encoder_bottom_head_reads_r1_and_top_head_reads_deepest():
    q = LadderEncoder("cifar10", [100, 128], nif=4)
    # head i takes its input from r_i: the bottom (last) output's head must accept r_1's channels
    assert q.mu[0].out_features == 128 and q.mu[1].out_features == 100
    r1, r2 = q.features(_image("cifar10"))
    assert q.heads[0][0][0].in_channels == r1.shape[1]
    assert q.heads[1][0][0].in_channels == r2.shape[1]
    # changing the top head's parameters leaves the bottom layer's output unchanged
    x = _image("cifar10")
    before = [t.detach().clone() for pair in q(x) for t in pair]
    with torch.no_grad():
        q.mu[1].weight.add_(1.0)
    after = [t.detach() for pair in q(x) for t in pair]
    assert not torch.equal(before[0], after[0])   # top mu changed
    torch.testing.assert_close(before[2], after[2])  # bottom mu unchanged


def test_mlp_encoder():
    q = MLPEncoder(128, 100, hidden=32, depth=3)
    h = torch.randn(B, 128, requires_grad=True)
    mu, logvar = q(h)
    assert mu.shape == (B, 100) and logvar.shape == (B, 100)
    _grad_ok(mu.sum() + logvar.sum(), h)
    assert len(_convs(q, nn.Linear)) == 4
    q0 = MLPEncoder(4, 2, hidden=8, depth=0)
    assert len(_convs(q0, nn.Linear)) == 1 and q0(torch.randn(2, 4))[0].shape == (2, 2)


# --------------------------------------------------------------------------------------------------- dual-MCMC

@pytest.mark.parametrize("dataset", DUAL_DATASETS)
def test_data_ebm_energy_shape_grad(dataset):
    E = DataEBM(dataset, ndf=16)
    x = _image(dataset, requires_grad=True)
    en = E(x)
    assert en.shape == (B,)
    assert torch.isfinite(en).all()
    _grad_ok(en.sum(), x)


def test_dual_mcmc_cifar10_ebm_structure():
    ndf = 512
    E = DataEBM("cifar10")
    assert E.ndf == ndf
    assert isinstance(E.blocks[0], EBMBlockStart) and E.blocks[0].downsample
    assert type(E.blocks[1]) is EBMBlock and E.blocks[1].downsample
    assert [type(b) for b in E.blocks[2:]] == [EBMBlock, EBMBlock] and not any(b.downsample for b in E.blocks[2:])
    convs, linears = _convs(E), _convs(E, nn.Linear)
    assert len(convs) == 3 + 3 + 2 + 2 and len(linears) == 1
    for m in convs + linears:
        assert nn.utils.parametrize.is_parametrized(m, "weight")
        assert any(type(p).__name__ == "_SpectralNorm" for p in m.parametrizations.weight)
        assert m.bias is None
    for m in convs:
        assert m.kernel_size in ((3, 3), (1, 1))
        if m.kernel_size == (3, 3):
            assert m.padding == (1, 1) and m.stride == (1, 1)
    assert (linears[0].in_features, linears[0].out_features) == (ndf, 1)
    by_hand = (3 * ndf * 9 + ndf * ndf * 9 + 3 * ndf) + (2 * ndf * ndf * 9 + ndf * ndf) + 2 * (2 * ndf * ndf * 9) + ndf
    assert sum(p.numel() for p in E.parameters()) == by_hand


def test_dual_mcmc_celeba64_ebm_channels():
    E = DataEBM("celeba64", ndf=64, spectral_norm=False)
    assert [b.conv2.out_channels for b in E.blocks] == [4, 8, 16, 32, 64]
    assert all(b.downsample for b in E.blocks)
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in _convs(E))
    with pytest.raises(ValueError, match="ndf must be divisible by 16"):
        DataEBM("celeba64", ndf=40)


def test_ebm_blocks_match_the_code_order():
    """The code convolves then pools the shortcut in EBMBlock (pools then convolves in EBMBlockStart); ours pools
    first in both: same function."""
    blk = EBMBlock(4, 6, downsample=True)
    x = torch.randn(2, 4, 8, 8)
    h = F.avg_pool2d(blk.conv2(F.relu(blk.conv1(F.relu(x)))), 2)
    ref = h + F.avg_pool2d(blk.sc(x), 2)
    torch.testing.assert_close(blk(x), ref)
    start = EBMBlockStart(3, 6, downsample=True)
    ref = F.avg_pool2d(start.conv2(F.relu(start.conv1(x[:, :3]))), 2) + start.sc(F.avg_pool2d(x[:, :3], 2))
    torch.testing.assert_close(start(x[:, :3]), ref)
    same = EBMBlock(4, 4, downsample=False)
    assert same.sc is None
    torch.testing.assert_close(same(x), same.conv2(F.relu(same.conv1(F.relu(x)))) + x)


@pytest.mark.parametrize("dataset", DUAL_DATASETS)
def test_resnet_generator_shape_range_grad(dataset):
    nz = 10
    G = ResNetGenerator(dataset, nz, ngf=16)
    z = torch.randn(4, nz, requires_grad=True)
    x = G(z)
    assert x.shape == (4, *IMAGE_SHAPES[dataset])
    assert torch.isfinite(x).all() and x.abs().max() <= 1.0
    _grad_ok(x.sum(), z)


def test_resnet_generator_layouts():
    G = ResNetGenerator("cifar10", 128, ngf=32)
    assert G.lin.out_features == 4 * 4 * 32 and len(G.blocks) == 3
    assert all(b.upsample and b.conv1.out_channels == 32 for b in G.blocks)
    C = ResNetGenerator("celeba64", 128, ngf=64)
    assert len(C.blocks) == 4
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in C.blocks] == [(64, 32), (32, 16), (16, 8), (8, 4)]
    assert C.conv_out.in_channels == 4 and C.conv_out.kernel_size == (3, 3)
    D = ResNetGenerator("digits", 8, ngf=8)
    assert D.bottom_width == 2 and len(D.blocks) == 2
    assert ResNetGenerator("cifar10", 128).ngf == 512 and ResNetGenerator("celeba64", 8, ngf=32).ngf == 32
    with pytest.raises(ValueError, match="ngf must be divisible by 16"):
        ResNetGenerator("celeba64", 8, ngf=40)


def test_genblock_bilinear_align_corners_upsampling():
    blk = GenBlock(2, 2, upsample=True)
    x = torch.randn(1, 2, 4, 4)
    with torch.no_grad():  # make the residual branch vanish and the shortcut the identity: out = up(x)
        blk.conv2.weight.zero_()
        blk.conv2.bias.zero_()
        blk.sc.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        blk.sc.bias.zero_()
    out = blk(x)
    torch.testing.assert_close(out, F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
    torch.testing.assert_close(out[..., 0, 0], x[..., 0, 0])  # align_corners keeps the corners
    torch.testing.assert_close(out[..., -1, -1], x[..., -1, -1])


def test_resnet_generator_batchnorm_follows_module_mode():
    """Train mode (as in the dual-MCMC code, which never calls .eval()) couples the samples of a batch through the
    BN batch statistics; eval mode does not."""
    G = ResNetGenerator("digits", 6, ngf=8)
    z = torch.randn(4, 6)
    z2 = z.clone()
    z2[1:] = torch.randn(3, 6)
    assert G.training
    assert not torch.allclose(G(z)[0], G(z2)[0])
    G.eval()
    torch.testing.assert_close(G(z)[0], G(z2)[0])


# --------------------------------------------------------------------------------------------------- init

def _xavier_std(w):
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
    return math.sqrt(2.0 / (fan_in + fan_out))


def test_init_functions():
    net = nn.Sequential(nn.Conv2d(64, 128, 3), nn.BatchNorm2d(4096), nn.ConvTranspose2d(64, 128, 4), nn.Linear(3, 3))
    lin_before = net[3].weight.detach().clone()
    init_weights_dual_mcmc(net)
    for conv in (net[0], net[2]):
        assert abs(conv.weight.std().item() / _xavier_std(conv.weight) - 1) < 0.05
    bn = net[1]
    assert abs(bn.weight.mean().item()) < 0.1 and abs(bn.weight.std().item() - 1) < 0.1  # N(0, 1), as the code
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    torch.testing.assert_close(net[3].weight, lin_before)  # Linear keeps the default
    init_weights_xavier(net)
    assert abs(bn.weight.mean().item() - 1) < 0.01 and bn.weight.std().item() < 0.05  # LEBM: N(1, 0.02)
    # spectrally normalised convs: the raw weight is initialised
    sn = nn.utils.parametrizations.spectral_norm(nn.Conv2d(64, 128, 3))
    init_weights_dual_mcmc(sn)
    w = sn.parametrizations.weight.original
    assert abs(w.std().item() / _xavier_std(w) - 1) < 0.05


def test_decoder_inits():
    svhn = SvhnDecoder(100, 64)
    w = _convs(svhn, nn.ConvTranspose2d)[1].weight
    assert abs(w.std().item() / _xavier_std(w) - 1) < 0.05
    cifar = Cifar10Decoder(16, ngf=4)  # the joint code keeps PyTorch's default init (kaiming-uniform, a=sqrt(5))
    w = _convs(cifar, nn.ConvTranspose2d)[1].weight
    assert w.abs().max() <= 1 / math.sqrt(nn.init._calculate_fan_in_and_fan_out(w)[0]) + 1e-6


# --------------------------------------------------------------------------------------------------- errors

def test_factories_and_constructors_name_bad_arguments():
    with pytest.raises(ValueError, match=r"dataset must be one of .*'cifar100'"):
        decoder("cifar100", 10)
    with pytest.raises(ValueError, match=r"dataset must be one of .*'SVHN'"):
        encoder("SVHN", 10)
    with pytest.raises(ValueError, match=r"dataset must be one of \('cifar10', 'celeba64', 'digits', 'mnist'\).*svhn"):
        DataEBM("svhn")
    with pytest.raises(ValueError, match="dataset must be one of"):
        ResNetGenerator("svhn", 10)
    with pytest.raises(ValueError, match="dataset must be one of"):
        LadderEncoder("imagenet", [4])
    with pytest.raises(ValueError, match="nz must be an integer >= 1, got 0"):
        decoder("digits", 0)
    with pytest.raises(ValueError, match="init must be one of"):
        decoder("digits", 4, init="kaiming")
    with pytest.raises(ValueError, match="dims must be a non-empty list"):
        LadderEncoder("digits", [])
    with pytest.raises(ValueError, match="depth must be an integer >= 0"):
        MLPEncoder(4, 4, depth=-1)


def test_forward_names_bad_inputs():
    g = decoder("digits", 4, ngf=4)
    with pytest.raises(ValueError, match=r"z must have shape \[B, 4\].*\[2, 5\]"):
        g(torch.randn(2, 5))
    q = encoder("mnist", 4, nif=4)
    with pytest.raises(ValueError, match=r"x must have shape \[B, 1, 28, 28\].*\[2, 1, 32, 32\]"):
        q(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"x must have shape \[B, 3, 32, 32\]"):
        DataEBM("cifar10", ndf=8)(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"h must have shape \[B, 4\]"):
        MLPEncoder(4, 2)(torch.randn(2, 3))
