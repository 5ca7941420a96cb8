"""Dataset readers on small files written here in the real on-disk formats (nothing is downloaded)."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from hebm_ext.data import (CIFAR10, MNIST, SVHN, CelebA64, Compose, Digits, ImageFolder, RandomHorizontalFlip,
                           celeba_crop, read_idx)


def _unit(u8):
    return torch.from_numpy(np.asarray(u8, dtype=np.float32)) / 127.5 - 1.0


def _check_range(x):
    assert x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0


# ----------------------------------------------------------------------------------------------------- MNIST
def write_idx(path, arr, gz=False):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)


def make_mnist(folder, n_train=6, n_test=4, gz_test=True, seed=0):
    rng = np.random.RandomState(seed)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for prefix, n, gz in (("train", n_train, False), ("t10k", n_test, gz_test)):
        imgs = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        imgs[0, 0, 0], imgs[0, 0, 1] = 0, 255
        lbls = rng.randint(0, 10, size=n).astype(np.uint8)
        ext = ".gz" if gz else ""
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{ext}"), imgs, gz)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{ext}"), lbls, gz)
        out[prefix] = (imgs, lbls)
    return out


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_reads_plain_and_gz(tmp_path, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    ref = make_mnist(str(folder))
    train, test = MNIST(str(tmp_path), split="train"), MNIST(str(tmp_path), split="test")  # test files are .gz
    for ds, (imgs, lbls) in ((train, ref["train"]), (test, ref["t10k"])):
        assert len(ds) == imgs.shape[0]
        x, y = ds[1]
        assert x.shape == (1, 28, 28)
        _check_range(x)
        assert torch.allclose(x[0], _unit(imgs[1]))
        assert y == int(lbls[1]) and isinstance(y, int)
        assert ds[0][0][0, 0, 0] == -1.0 and ds[0][0][0, 0, 1] == 1.0
        assert ds.data.shape == (imgs.shape[0], 1, 28, 28) and ds.labels.tolist() == lbls.tolist()


def test_mnist_missing_file_names_the_path(tmp_path):
    make_mnist(str(tmp_path))
    os.remove(tmp_path / "train-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError) as e:
        MNIST(str(tmp_path), split="train")
    msg = str(e.value)
    assert str(tmp_path / "train-labels-idx1-ubyte") in msg
    assert os.path.join(str(tmp_path), "MNIST", "raw", "train-labels-idx1-ubyte.gz") in msg


def test_mnist_truncated_and_bad_magic(tmp_path):
    make_mnist(str(tmp_path))
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="truncated") as e:
        MNIST(str(tmp_path), split="train")
    assert str(path) in str(e.value)
    path.write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(ValueError, match="magic") as e:
        read_idx(str(path))
    assert str(path) in str(e.value)
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:20])  # a cut gzip stream
    with pytest.raises(ValueError, match="t10k-images"):
        MNIST(str(tmp_path), split="test")


def test_mnist_label_count_mismatch(tmp_path):
    make_mnist(str(tmp_path))
    write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="6 images but"):
        MNIST(str(tmp_path), split="train")


@pytest.mark.parametrize("reader", [MNIST, SVHN, CIFAR10, CelebA64])
def test_bad_split_names_argument_and_choices(tmp_path, reader):
    with pytest.raises(ValueError, match=r"`split` must be one of \[.*'train'.*'bogus'"):
        reader(str(tmp_path), split="bogus")


# ------------------------------------------------------------------------------------------------------ SVHN
def test_svhn_mat(tmp_path):
    import scipy.io

    rng = np.random.RandomState(1)
    X = rng.randint(0, 256, size=(32, 32, 3, 5)).astype(np.uint8)
    y = np.array([[10], [1], [5], [10], [9]], dtype=np.uint8)
    scipy.io.savemat(str(tmp_path / "test_32x32.mat"), {"X": X, "y": y})
    ds = SVHN(str(tmp_path), split="test")
    assert len(ds) == 5
    assert [ds[i][1] for i in range(5)] == [0, 1, 5, 0, 9]
    x, _ = ds[2]
    assert x.shape == (3, 32, 32)
    _check_range(x)
    # image[c, h, w] == X[h, w, c, n]
    assert torch.allclose(x, _unit(X[:, :, :, 2].transpose(2, 0, 1)))
    with pytest.raises(FileNotFoundError, match="train_32x32.mat"):
        SVHN(str(tmp_path), split="train")


def test_svhn_corrupt_mat(tmp_path):
    (tmp_path / "extra_32x32.mat").write_bytes(b"MATLAB 5.0 garbage" + bytes(100))
    with pytest.raises(ValueError, match="extra_32x32.mat"):
        SVHN(str(tmp_path), split="extra")


# -------------------------------------------------------------------------------------------------- CIFAR-10
def make_cifar(root, kind, n=3, seed=2):
    rng = np.random.RandomState(seed)
    folder = os.path.join(root, "cifar-10-batches-py" if kind == "py" else "cifar-10-batches-bin")
    os.makedirs(folder)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        labels = rng.randint(0, 10, size=n)
        batches[name] = (data, labels)
        if kind == "py":
            # The real files are Python 2 pickles (str keys after latin1 decoding); also try bytes keys.
            key = (lambda k: k.encode()) if name == "data_batch_2" else (lambda k: k)
            with open(os.path.join(folder, name), "wb") as f:
                pickle.dump({key("batch_label"): name, key("data"): data, key("labels"): labels.tolist()}, f,
                            protocol=2)
        else:
            records = np.concatenate([labels.astype(np.uint8)[:, None], data], axis=1)
            with open(os.path.join(folder, name + ".bin"), "wb") as f:
                f.write(records.tobytes())
    return folder, batches


@pytest.mark.parametrize("kind", ["py", "bin"])
def test_cifar10_batches(tmp_path, kind):
    _, batches = make_cifar(str(tmp_path), kind)
    train, test = CIFAR10(str(tmp_path), split="train"), CIFAR10(str(tmp_path), split="test")
    assert len(train) == 15 and len(test) == 3
    # train = data_batch_1..5 in order; row layout: R plane, G plane, B plane, each 32x32 row-major
    data4, labels4 = batches["data_batch_4"]
    x, y = train[3 * 3 + 1]
    assert x.shape == (3, 32, 32)
    _check_range(x)
    assert torch.allclose(x, _unit(data4[1].reshape(3, 32, 32)))
    assert x[1, 2, 5] == _unit(data4[1][1024 + 2 * 32 + 5])
    assert y == int(labels4[1])
    assert test.labels.tolist() == batches["test_batch"][1].tolist()


def test_cifar10_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        CIFAR10(str(tmp_path), split="train")
    folder, _ = make_cifar(str(tmp_path), "py")
    os.remove(os.path.join(folder, "data_batch_3"))
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        CIFAR10(str(tmp_path), split="train")
    with open(os.path.join(folder, "test_batch"), "wb") as f:
        f.write(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="test_batch"):
        CIFAR10(str(tmp_path), split="test")


def test_cifar10_pickle_cannot_run_code(tmp_path):
    folder, _ = make_cifar(str(tmp_path), "py")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(os.path.join(folder, "test_batch"), "wb") as f:
        pickle.dump({"data": Evil(), "labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match="refusing to load"):
        CIFAR10(str(tmp_path), split="test")


def test_cifar10_truncated_binary(tmp_path):
    folder, _ = make_cifar(str(tmp_path), "bin")
    path = os.path.join(folder, "test_batch.bin")
    with open(path, "r+b") as f:
        f.truncate(3073 * 2 + 100)
    with pytest.raises(ValueError, match="truncated") as e:
        CIFAR10(str(tmp_path), split="test")
    assert "test_batch.bin" in str(e.value)


# ---------------------------------------------------------------------------------------------------- CelebA
def make_celeba(root, nested=True):
    base = os.path.join(root, "celeba") if nested else root
    folder = os.path.join(base, "img_align_celeba")
    os.makedirs(folder)
    rng = np.random.RandomState(3)
    parts = [0, 0, 1, 2, 0]
    for i in range(len(parts)):
        Image.fromarray(rng.randint(0, 256, size=(218, 178, 3)).astype(np.uint8)).save(
            os.path.join(folder, f"{i + 1:06d}.jpg"))
    with open(os.path.join(base, "list_eval_partition.txt"), "w") as f:
        f.writelines(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(parts))
    return base


@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("crop", ["lebm", "dual-mcmc"])
def test_celeba64_reads_splits(tmp_path, nested, crop):
    make_celeba(str(tmp_path), nested)
    sizes = {s: len(CelebA64(str(tmp_path), split=s, crop=crop)) for s in ("train", "valid", "test")}
    assert sizes == {"train": 3, "valid": 1, "test": 1}
    ds = CelebA64(str(tmp_path), split="train", crop=crop)
    assert [os.path.basename(p) for p in ds.files] == ["000001.jpg", "000002.jpg", "000005.jpg"]
    x, y = ds[2]
    assert x.shape == (3, 64, 64) and y == 0
    _check_range(x)


def test_celeba_crop_boxes():
    from hebm_ext.data.celeba import crop_box

    assert crop_box(178, 218, "dual-mcmc") == (15, 40, 163, 188)  # ALGORITHMS.md 5.4
    assert crop_box(178, 218, "lebm") == (19, 39, 159, 179)  # torchvision CenterCrop(140) offsets
    rnd = np.random.RandomState(6).randint(0, 256, size=(218, 178, 3)).astype(np.uint8)
    expected = Image.fromarray(rnd[40:188, 15:163]).resize((64, 64), Image.BILINEAR)
    assert np.array_equal(np.asarray(celeba_crop(Image.fromarray(rnd), "dual-mcmc")), np.asarray(expected))
    # Mark the two boxes on a 178x218 image: inside each crop the result must be the marked colour only.
    img = np.zeros((218, 178, 3), np.uint8)
    img[40:188, 15:163] = (200, 10, 10)  # dual-MCMC box (15, 40, 163, 188)
    lebm = img.copy()
    lebm[:, :] = (0, 0, 0)
    lebm[39:179, 19:159] = (10, 200, 10)  # centre 140x140 box (19, 39, 159, 179)
    for arr, crop, colour in ((img, "dual-mcmc", (200, 10, 10)), (lebm, "lebm", (10, 200, 10))):
        out = celeba_crop(Image.fromarray(arr), crop)
        assert out.size == (64, 64)
        assert (np.asarray(out) == np.array(colour, np.uint8)).all()
    # one pixel more on each side shows up in the resized border
    wider = np.zeros_like(img)
    wider[39:189, 14:164] = (200, 10, 10)
    wider[40:188, 15:163] = (0, 0, 250)
    assert (np.asarray(celeba_crop(Image.fromarray(wider), "dual-mcmc")) == (0, 0, 250)).all()
    with pytest.raises(ValueError, match="`crop`"):
        celeba_crop(Image.fromarray(img), "center")
    with pytest.raises(ValueError, match="does not fit"):
        celeba_crop(Image.new("RGB", (100, 100)), "lebm")


def test_celeba_missing_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="img_align_celeba"):
        CelebA64(str(tmp_path))
    base = make_celeba(str(tmp_path))
    part = os.path.join(base, "list_eval_partition.txt")
    with open(part, "a") as f:
        f.write("000006.jpg 7\n")
    with pytest.raises(ValueError, match="line 6"):
        CelebA64(str(tmp_path))
    with open(part, "w") as f:
        f.write("000001.jpg 0\n000009.jpg 0\n")
    ds = CelebA64(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="000009.jpg"):
        ds[1]
    with open(os.path.join(base, "img_align_celeba", "000001.jpg"), "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(ValueError, match="000001.jpg"):
        ds[0]
    os.remove(part)
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt"):
        CelebA64(str(tmp_path))


# ----------------------------------------------------------------------------------------------- ImageFolder
def test_image_folder(tmp_path):
    root = tmp_path / "train"
    (root / "dog").mkdir(parents=True)
    (root / "cat").mkdir()
    rgb = np.random.RandomState(4).randint(0, 256, size=(10, 12, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(root / "dog" / "b.png")
    Image.fromarray(rgb).save(root / "dog" / "a.png")
    Image.fromarray(rgb[:, :, 0]).save(root / "cat" / "z.png")  # greyscale
    (root / "cat" / "notes.txt").write_text("not an image")
    ds = ImageFolder(str(tmp_path), split="train")
    assert ds.classes == ["cat", "dog"]
    assert [(os.path.basename(p), y) for p, y in ds.samples] == [("z.png", 0), ("a.png", 1), ("b.png", 1)]
    grey, y0 = ds[0]
    colour, y1 = ds[1]
    assert (y0, y1) == (0, 1)
    assert grey.shape == (1, 10, 12) and colour.shape == (3, 10, 12)
    assert torch.allclose(colour, _unit(rgb.transpose(2, 0, 1)))
    _check_range(grey)
    resized = ImageFolder(str(root), size=(6, 8), channels=3)
    assert resized[0][0].shape == (3, 6, 8) and resized[2][0].shape == (3, 6, 8)
    assert ImageFolder(str(root), size=5, channels=1)[1][0].shape == (1, 5, 5)
    with pytest.raises(FileNotFoundError, match="test"):
        ImageFolder(str(tmp_path), split="test")
    with pytest.raises(ValueError, match="`channels`"):
        ImageFolder(str(root), channels=2)
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageFolder(str(tmp_path / "empty"))


# ---------------------------------------------------------------------------------------------------- Digits
def test_digits_shapes_range_and_split():
    train, test = Digits(split="train"), Digits(split="test")
    assert train.images.shape == (1438, 1, 8, 8) and test.images.shape == (359, 1, 8, 8)
    assert train.labels.dtype == torch.long and train.labels.shape == (1438,)
    for ds in (train, test):
        _check_range(ds.images)
        assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
    x, y = test[5]
    assert x.shape == (1, 8, 8) and torch.equal(x, test.images[5]) and y == int(test.labels[5])
    # disjoint and complete; pixel values 0..16 mapped by x / 8 - 1
    assert set(train.indices.tolist()).isdisjoint(test.indices.tolist())
    assert sorted(train.indices.tolist() + test.indices.tolist()) == list(range(1797))
    # pinned: the split must never change between versions (RandomState(0) permutation of load_digits rows)
    assert test.indices[:8].tolist() == [4, 5, 6, 9, 14, 17, 18, 19]
    from sklearn.datasets import load_digits

    raw = load_digits().images
    assert torch.allclose(test.images[:, 0].double(), torch.from_numpy(raw[test.indices] / 8.0 - 1.0))


def test_digits_deterministic_and_root_ignored():
    a, b = Digits(split="test"), Digits(root="/nonexistent", split="test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    with pytest.raises(ValueError, match="split="):
        Digits("test")
    with pytest.raises(ValueError, match="`split`"):
        Digits(split="valid")


def test_transforms_and_transform_argument():
    x = torch.arange(6.0).reshape(1, 2, 3)
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(x), x)
    flip = RandomHorizontalFlip(p=0.5, generator=torch.Generator().manual_seed(0))
    flips = [not torch.equal(flip(x), x) for _ in range(200)]
    assert 60 < sum(flips) < 140
    ds = Digits(split="test", transform=Compose([RandomHorizontalFlip(1.0), lambda t: t * 0.5]))
    assert torch.equal(ds[0][0], ds.images[0].flip(-1) * 0.5)
    with pytest.raises(ValueError, match="`p`"):
        RandomHorizontalFlip(p=2.0)


def test_method_configs_read_celeba_with_the_papers_crop_and_flip(tmp_path):
    """dual-MCMC's celeba64 preset: its dataset.py crop box and random flips in training (none at test time);
    the LEBM-protocol presets: the centre crop, no flips. open_for reads what the config says."""
    from hebm_ext import data
    from hebm_ext.methods import dual_mcmc, lebm as lebm_method
    from hebm_ext.methods.base import make_config

    make_celeba(str(tmp_path))
    dual = make_config(dual_mcmc.DualMCMCConfig, dual_mcmc.PRESETS, "celeba64", {})
    lebm = make_config(lebm_method.LEBMConfig, lebm_method.PRESETS, "celeba64", {})
    assert (dual.crop, dual.hflip) == ("dual-mcmc", True) and (lebm.crop, lebm.hflip) == ("lebm", False)
    train, test = data.open_for(dual, str(tmp_path), "train"), data.open_for(dual, str(tmp_path), "test")
    assert train.crop == "dual-mcmc" and isinstance(train.transform, data.RandomHorizontalFlip)
    assert test.transform is None
    plain = CelebA64(str(tmp_path), split="train", crop="dual-mcmc")
    torch.manual_seed(0)
    flipped = [bool(torch.equal(train[0][0], plain[0][0].flip(-1))) for _ in range(40)]
    assert 5 < sum(flipped) < 35  # about half of the reads are flipped
    assert data.open_for(lebm, str(tmp_path), "train").crop == "lebm"


def test_celebahq256_reads_image_folders(tmp_path):
    """The diffusion prior's CelebA-HQ-256 presets read ROOT/<split>/<class>/*.png at 256x256 (hebm train can)."""
    from hebm_ext import data

    for split, n in (("train", 2), ("test", 1)):
        os.makedirs(tmp_path / split / "faces")
        for i in range(n):
            Image.fromarray(np.full((300, 280, 3), 40 * i, np.uint8)).save(tmp_path / split / "faces" / f"{i}.png")
    tr, te = data.open_dataset("celebahq256", str(tmp_path), "train"), data.open_dataset("celebahq256", str(tmp_path), "test")
    assert (len(tr), len(te)) == (2, 1) and tr[1][0].shape == (3, 256, 256)
    with pytest.raises(FileNotFoundError, match="--data-root"):
        data.open_dataset("celebahq256", None, "train")
