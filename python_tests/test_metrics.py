"""Metrics: FID statistics and distance, the FID Inception network, digits FID, reconstruction MSE, AUPRC/AUROC."""
import os
import socket
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from hebm_ext.data import Digits
from hebm_ext.metrics import (FeatureStats, FIDInceptionV3, auprc, auroc, digits_fid, feature_stats, fid_from_stats,
                              heldout_digit_split, load_stats, reconstruction_mse, save_stats)
from hebm_ext.metrics import digits as digits_module
from hebm_ext.metrics import inception


# ------------------------------------------------------------------------------------------------ fid_from_stats
def test_fid_of_identical_features_is_zero():
    x = np.random.RandomState(0).randn(300, 24) * np.linspace(0.1, 3, 24)
    s = FeatureStats.from_features(x)
    assert abs(fid_from_stats(s.mu, s.sigma, s.mu, s.sigma)) < 1e-6


def test_fid_gaussian_closed_form_diagonal_and_commuting():
    rng = np.random.RandomState(1)
    d = 6
    mu1, mu2 = rng.randn(d), rng.randn(d)
    a, b = rng.uniform(0.2, 3, d), rng.uniform(0.2, 3, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert fid_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10, abs=1e-10)
    # commuting, non-diagonal: S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T => tr sqrt(S1 S2) = sum sqrt(a b)
    q, _ = np.linalg.qr(rng.randn(d, d))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # a known number: 1-d, mu 0 vs 3, var 1 vs 4: 9 + 1 + 4 - 2*2 = 10
    assert fid_from_stats([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0, abs=1e-12)


def test_fid_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="sigma2"):
        fid_from_stats(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="mu2"):
        fid_from_stats(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        fid_from_stats(np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="imaginary"):
        fid_from_stats(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def test_fid_singular_fallback_warns_and_offsets(monkeypatch):
    from scipy import linalg

    calls = []
    real = linalg.sqrtm

    def fake_sqrtm(a):
        calls.append(a.copy())
        return np.full_like(a, np.inf) if len(calls) == 1 else real(a)

    monkeypatch.setattr(linalg, "sqrtm", fake_sqrtm)
    s = np.diag([1.0, 0.0])
    with pytest.warns(RuntimeWarning, match="singular"):
        value = fid_from_stats(np.zeros(2), s, np.zeros(2), s, eps=1e-6)
    assert len(calls) == 2
    assert np.allclose(calls[1], (s + 1e-6 * np.eye(2)) @ (s + 1e-6 * np.eye(2)))
    assert value == pytest.approx(0.0, abs=1e-5)


# --------------------------------------------------------------------------------------------- .npz and stats
def test_npz_round_trip(tmp_path):
    rng = np.random.RandomState(2)
    mu, sigma = rng.randn(5), np.cov(rng.randn(50, 5), rowvar=False)
    path = str(tmp_path / "stats.npz")
    save_stats(path, mu, sigma)
    with np.load(path) as f:
        assert sorted(f.files) == ["mu", "sigma"]
        assert f["mu"].dtype == np.float64 and f["sigma"].dtype == np.float64
    mu2, sigma2 = load_stats(path)
    assert np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    s = FeatureStats.from_features(rng.randn(20, 5))
    s.save(str(tmp_path / "s.npz"))
    assert np.array_equal(load_stats(str(tmp_path / "s.npz"))[1], s.sigma)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_stats(str(tmp_path / "nope.npz"))
    np.savez(str(tmp_path / "bad.npz"), m=mu)
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        load_stats(str(tmp_path / "bad.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.npz"):
        load_stats(str(tmp_path / "junk.npz"))


def test_streaming_stats_equal_batch_stats():
    rng = np.random.RandomState(3)
    x = rng.randn(257, 12) * rng.uniform(0.5, 2, 12) + rng.randn(12)
    s = FeatureStats(12)
    for lo, hi in ((0, 1), (1, 100), (100, 101), (101, 257)):
        s.update(torch.from_numpy(x[lo:hi]).float() if lo == 1 else x[lo:hi])  # float32 batches are welcome too
    x[1:100] = x[1:100].astype(np.float32)  # the same rounding as the float32 batch
    assert s.n == 257
    assert np.abs(s.mu - x.mean(0)).max() < 1e-10
    assert np.abs(s.sigma - np.cov(x, rowvar=False)).max() < 1e-10
    a, b = FeatureStats.from_features(x[:70]), FeatureStats.from_features(x[70:])
    a.merge(b)
    assert a.n == 257
    assert np.abs(a.mu - x.mean(0)).max() < 1e-10 and np.abs(a.sigma - np.cov(x, rowvar=False)).max() < 1e-10


def test_stats_bad_inputs():
    s = FeatureStats(4)
    with pytest.raises(ValueError, match="features"):
        s.update(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        s.update(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="no features"):
        s.mu
    s.update(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        s.sigma
    with pytest.raises(ValueError, match="other"):
        s.merge(FeatureStats(3))
    with pytest.raises(RuntimeError, match="init_process_group"):
        s.all_reduce()


def test_feature_stats_over_a_loader():
    x = torch.randn(30, 1, 8, 8)
    extractor = torch.nn.Flatten()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(30)), batch_size=7)
    s = feature_stats(extractor, loader)
    assert s.n == 30
    assert np.abs(s.sigma - np.cov(x.flatten(1).double().numpy(), rowvar=False)).max() < 1e-10
    with pytest.raises(ValueError, match="no batch"):
        feature_stats(extractor, [])


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_reduce_worker(rank, world, port, shards_path, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        with np.load(shards_path) as f:
            shard = f[f"shard{rank}"]
        stats = FeatureStats.from_features(shard).all_reduce()
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), n=stats.n, mu=stats.mu, sigma=stats.sigma)
    finally:
        dist.destroy_process_group()


def test_all_reduce_two_processes_equals_single_process(tmp_path):
    rng = np.random.RandomState(4)
    x = rng.randn(101, 9) * 2 + 1
    shards_path = str(tmp_path / "shards.npz")
    np.savez(shards_path, shard0=x[:40], shard1=x[40:])  # uneven shards
    ctx = mp.start_processes(_all_reduce_worker, args=(2, _free_port(), shards_path, str(tmp_path)), nprocs=2,
                             join=False, start_method="spawn")
    deadline = time.time() + 120
    while not ctx.join(timeout=2):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-process all_reduce did not finish within 120 s")
    single = FeatureStats.from_features(x)
    for rank in (0, 1):
        with np.load(str(tmp_path / f"rank{rank}.npz")) as f:
            assert int(f["n"]) == 101
            assert np.abs(f["mu"] - single.mu).max() < 1e-12
            assert np.abs(f["sigma"] - single.sigma).max() < 1e-12


# --------------------------------------------------------------------------------------------- FID Inception
# Names derived from torchvision's Inception3 as pytorch-fid's fid_inception_v3() builds it (1008 classes, no
# AuxLogits), i.e. the names in pt_inception-2015-12-05-6726825d.pth.
EXPECTED_KEYS = [
    "Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.weight", "Conv2d_1a_3x3.bn.bias",
    "Conv2d_1a_3x3.bn.running_mean", "Conv2d_1a_3x3.bn.running_var", "Conv2d_1a_3x3.bn.num_batches_tracked",
    "Conv2d_2a_3x3.conv.weight", "Conv2d_2b_3x3.bn.running_var", "Conv2d_3b_1x1.conv.weight",
    "Conv2d_4a_3x3.bn.bias",
    "Mixed_5b.branch1x1.conv.weight", "Mixed_5b.branch5x5_1.conv.weight", "Mixed_5b.branch5x5_2.bn.running_mean",
    "Mixed_5c.branch3x3dbl_3.conv.weight", "Mixed_5d.branch_pool.conv.weight",
    "Mixed_6a.branch3x3.conv.weight", "Mixed_6a.branch3x3dbl_3.bn.weight",
    "Mixed_6b.branch7x7_1.conv.weight", "Mixed_6c.branch7x7dbl_5.bn.running_var",
    "Mixed_6d.branch7x7_3.bn.bias", "Mixed_6e.branch_pool.conv.weight",
    "Mixed_7a.branch3x3_2.conv.weight", "Mixed_7a.branch7x7x3_4.bn.bias",
    "Mixed_7b.branch3x3_2a.conv.weight", "Mixed_7b.branch3x3dbl_3b.bn.running_mean",
    "Mixed_7c.branch1x1.conv.weight", "Mixed_7c.branch_pool.bn.weight",
    "fc.weight", "fc.bias",
]
EXPECTED_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_2.conv.weight": (192, 192, 7, 1),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7b.branch1x1.conv.weight": (320, 1280, 1, 1),
    "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1),
    "Mixed_7c.branch_pool.bn.running_mean": (192,),
    "fc.weight": (1008, 2048),
}
# 94 BasicConv2d (5 stem + 3x7 A + 4 B + 4x10 C + 6 D + 2x9 E), 6 tensors each, + fc weight and bias
N_TENSORS = 94 * 6 + 2


@pytest.fixture(scope="module")
def inception_model():
    torch.manual_seed(0)
    return FIDInceptionV3()


def test_inception_state_dict_names_match_pytorch_fid(inception_model):
    sd = inception_model.state_dict()
    assert len(sd) == N_TENSORS
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 94
    assert len(list(inception_model.parameters())) == 94 * 3 + 2
    missing = [k for k in EXPECTED_KEYS if k not in sd]
    assert not missing, missing
    for k, shape in EXPECTED_SHAPES.items():
        assert tuple(sd[k].shape) == shape, k
    tops = {k.split(".")[0] for k in sd}
    assert tops == {"Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                    "Mixed_7a", "Mixed_7b", "Mixed_7c", "fc"}
    assert all(m.eps == 0.001 for m in inception_model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # the FID variant's pools: 7b average (padding excluded), 7c max
    assert inception_model.Mixed_7b.pool == "avg" and inception_model.Mixed_7c.pool == "max"
    # a state dict with these names loads strictly into a fresh network
    FIDInceptionV3().load_state_dict(sd, strict=True)


def test_inception_forward_shapes(inception_model):
    assert not inception_model.training
    out = inception_model(torch.rand(2, 3, 40, 40) * 2 - 1)
    assert out.shape == (2, 2048) and torch.isfinite(out).all() and (out >= 0).all()
    grey = torch.rand(1, 1, 20, 20)
    assert torch.equal(inception_model.preprocess(grey), inception_model.preprocess(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        inception_model(torch.rand(2, 4, 32, 32))


def test_inception_preprocess_matches_pytorch_fid():
    x01 = torch.rand(2, 3, 32, 32)
    m01, m11 = FIDInceptionV3(input_range=(0, 1)), FIDInceptionV3()
    ref = 2 * torch.nn.functional.interpolate(x01, size=(299, 299), mode="bilinear", align_corners=False) - 1
    assert torch.allclose(m01.preprocess(x01), ref, atol=1e-6)
    assert torch.allclose(m11.preprocess(2 * x01 - 1), ref, atol=1e-6)
    x = torch.rand(1, 3, 299, 299) * 2 - 1
    assert torch.equal(m11.preprocess(x), x)
    ones = torch.ones(1, 1, 5, 5)
    assert torch.equal(inception._avg_pool_same(ones), ones)  # TF pooling: padded zeros not averaged


def test_inception_missing_weights_error(monkeypatch, tmp_path):
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as e:
        FIDInceptionV3.from_pretrained()
    assert inception.WEIGHTS_ENV in str(e.value) and inception.WEIGHTS_URL in str(e.value)
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        FIDInceptionV3.from_pretrained()


@pytest.mark.skipif(not os.path.isfile(os.environ.get("HEBM_FID_WEIGHTS", "")),
                    reason="set HEBM_FID_WEIGHTS to pt_inception-2015-12-05-6726825d.pth to run")
def test_inception_real_weights():
    path = os.environ["HEBM_FID_WEIGHTS"]
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = FIDInceptionV3()
    ours = set(model.state_dict())
    assert set(state) <= ours
    assert all(k.endswith("num_batches_tracked") for k in ours - set(state))
    model = FIDInceptionV3.from_pretrained(path)
    out = model(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert out.shape == (2, 2048) and torch.isfinite(out).all() and (out >= 0).all() and out.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ digits FID
@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hebm_cache"))


def test_digits_fid_properties(digits_cache):
    test_images, train_images = Digits(split="test").images, Digits(split="train").images
    noise = torch.rand(359, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    same = digits_fid(test_images, "test", cache=digits_cache)
    assert abs(same) < 1e-6
    f_train = digits_fid(train_images, "test", cache=digits_cache)
    f_noise = digits_fid(noise, "test", cache=digits_cache)
    assert f_train > 1e-3
    assert f_noise > 5 * f_train
    assert digits_fid(train_images, "test", cache=digits_cache) == f_train  # deterministic
    assert digits_fid(test_images, reference=test_images, cache=digits_cache) == same
    assert os.listdir(digits_cache) == [f"digits_features_v{digits_module.VERSION}.pt"]
    with pytest.raises(ValueError, match=r"\[N, 1, 8, 8\]"):
        digits_fid(torch.zeros(10, 64), cache=digits_cache)


def test_digits_classifier_is_trained_deterministically(digits_cache):
    cached = digits_module.digits_feature_extractor(digits_cache)
    torch.manual_seed(98765)  # the training must not depend on torch's global RNG state
    fresh = digits_module.train_digits_classifier()
    for (k, a), (_, b) in zip(cached.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    test = Digits(split="test")
    assert (fresh(test.images).argmax(1) == test.labels).double().mean() > 0.9


def test_digits_cache_is_retrained_on_mismatch(tmp_path, monkeypatch):
    calls = []

    def fake_train():
        calls.append(1)
        return digits_module.DigitsFeatureNet().eval()

    monkeypatch.setattr(digits_module, "train_digits_classifier", fake_train)
    monkeypatch.setenv(digits_module.CACHE_ENV, str(tmp_path))
    path = tmp_path / f"digits_features_v{digits_module.VERSION}.pt"
    digits_module.digits_feature_extractor()
    assert len(calls) == 1 and path.is_file()
    digits_module.digits_feature_extractor()
    assert len(calls) == 1  # cache hit
    saved = torch.load(str(path), weights_only=True)
    saved["hash"] = "stale"
    torch.save(saved, str(path))
    digits_module.digits_feature_extractor()
    assert len(calls) == 2
    assert torch.load(str(path), weights_only=True)["hash"] == digits_module.config_hash()
    path.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        digits_module.digits_feature_extractor()
    assert len(calls) == 3
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary files left behind


# ------------------------------------------------------------------------------------------ reconstruction MSE
def test_reconstruction_mse():
    x = torch.zeros(2, 1, 2, 2)
    x_hat = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])
    assert reconstruction_mse(x, x_hat).item() == pytest.approx((1 + 1 + 4) / 8)
    assert torch.allclose(reconstruction_mse(x, x_hat, reduction="none"), torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_mse(x, x_hat[:1])
    with pytest.raises(ValueError, match="reduction"):
        reconstruction_mse(x, x_hat, reduction="sum")


# ---------------------------------------------------------------------------------------------- AUPRC / AUROC
def test_auprc_auroc_hand_checked():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    # ranking: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-); AP = 0.5 * 1 + 0.5 * 2/3; AUROC = 3 of 4 pairs ordered
    assert auprc(scores, labels) == pytest.approx(5 / 6)
    assert auroc(scores, labels) == pytest.approx(0.75)
    # trapezoid over (recall, precision) = (0,1),(.5,1),(.5,.5)... as sklearn's precision_recall_curve gives
    assert auprc(scores, labels, method="trapezoid") == pytest.approx(0.5 * 1 + 0.5 * (1 / 2 + 2 / 3) / 2)
    perfect = torch.tensor([0.0, 0.1, 0.9, 1.0])
    assert auprc(perfect, torch.tensor([0, 0, 1, 1])) == 1.0 and auroc(perfect, np.array([0, 0, 1, 1])) == 1.0
    assert auroc(-perfect, [0, 0, 1, 1]) == 0.0


def test_auprc_auroc_bad_inputs():
    with pytest.raises(ValueError, match="labels"):
        auprc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="labels"):
        auroc([0.1, 0.2, 0.3], [0, 1, 2])
    with pytest.raises(ValueError, match="both classes"):
        auprc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="scores"):
        auroc([[0.1, 0.2]], [[0, 1]])
    with pytest.raises(ValueError, match="scores"):
        auprc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="method"):
        auprc([0.1, 0.2], [0, 1], method="roc")


class _FakeDigits(Dataset):
    def __init__(self, labels, offset, with_attr=True):
        self._labels = list(labels)
        self.offset = offset
        if with_attr:
            self.labels = torch.tensor(self._labels)

    def __len__(self):
        return len(self._labels)

    def __getitem__(self, i):
        return torch.full((1, 2, 2), float(self.offset + i)), self._labels[i]


def test_heldout_digit_split():
    rng = np.random.RandomState(5)
    a, b = _FakeDigits(rng.randint(0, 10, 120), 0), _FakeDigits(rng.randint(0, 10, 50), 1000, with_attr=False)
    digits = np.concatenate([a._labels, b._labels])
    train, test = heldout_digit_split([a, b], heldout_digit=4)
    n_normal, n_held = int((digits != 4).sum()), int((digits == 4).sum())
    assert len(train) == int(0.8 * n_normal) and len(test) == n_normal - len(train) + n_held
    assert (digits[train.indices.numpy()] != 4).all() and (train.labels == 0).all()
    assert torch.equal(test.labels, torch.from_numpy((digits[test.indices.numpy()] == 4).astype(np.int64)))
    assert int(test.labels.sum()) == n_held
    assert sorted(train.indices.tolist() + test.indices.tolist()) == list(range(170))
    # the reference code's RNG use: RandomState(42), permute the normal pool, then permute the test pool
    r = np.random.RandomState(42)
    normal = np.flatnonzero(digits != 4)[r.permutation(n_normal)]
    assert train.indices.tolist() == normal[:len(train)].tolist()
    pool = np.concatenate([normal[len(train):], np.flatnonzero(digits == 4)])
    assert test.indices.tolist() == pool[r.permutation(pool.shape[0])].tolist()
    # items come from the right part of the concatenation, with the anomaly label
    for i in range(len(test)):
        g = int(test.indices[i])
        x, y = test[i]
        assert x[0, 0, 0].item() == (g if g < 120 else 1000 + g - 120) and y == int(test.labels[i])
    assert train[0][1] == 0
    with pytest.raises(ValueError, match="heldout_digit"):
        heldout_digit_split(a, heldout_digit=11)
    with pytest.raises(ValueError, match="train_fraction"):
        heldout_digit_split(a, heldout_digit=3, train_fraction=1.5)
