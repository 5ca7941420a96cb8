"""Dataset readers without torchvision, in torchvision's on-disk layouts. They never download anything.

Every reader is a ``torch.utils.data.Dataset`` built as ``Reader(root, split=..., transform=None)`` whose items are
``(image, label)``: image a float32 tensor [C, H, W] in [-1, 1] (uint8 ``x / 127.5 - 1``, the papers'
``Normalize((0.5,), (0.5,))``), label an int. A missing file raises FileNotFoundError naming the expected path and
layout; a damaged file raises ValueError naming the file; a bad ``split`` raises ValueError listing the choices.

``Digits`` is the embedded default (scikit-learn's 8x8 digits, no files needed).
"""
from .celeba import CelebA64, celeba_crop
from .cifar import CIFAR10
from .digits import Digits
from .folder import ImageFolder
from .mnist import MNIST, read_idx
from .svhn import SVHN
from .transforms import Compose, RandomHorizontalFlip

__all__ = ["CIFAR10", "CelebA64", "CelebAHQ256", "Compose", "Digits", "ImageFolder", "MNIST", "RandomHorizontalFlip",
           "SVHN",
           "celeba_crop", "read_idx"]

def CelebAHQ256(root, split: str = "train", transform=None):
    """CelebA-HQ at 256x256 from image folders (the diffusion prior's 6.5 / 6.7 data): ROOT/<split>/<class>/*.png
    (any class folder name, e.g. ROOT/train/faces/00000.png), RGB, resized to 256x256 (PIL BILINEAR)."""
    return ImageFolder(root, split=split, transform=transform, size=256, channels=3)


READERS = {"digits": Digits, "mnist": MNIST, "svhn": SVHN, "cifar10": CIFAR10, "celeba64": CelebA64,
           "celebahq256": CelebAHQ256}
TEST_SPLIT = {"digits": "test", "mnist": "test", "svhn": "test", "cifar10": "test", "celeba64": "test",
              "celebahq256": "test"}


def open_dataset(name: str, root=None, split: str = "train", transform=None, crop: str = "lebm"):
    """The reader for dataset ``name`` (digits, mnist, svhn, cifar10, celeba64); ``root`` is ignored for digits
    and required for the others (a missing root or file raises FileNotFoundError saying what is expected).
    ``crop``: CelebA-64's face crop ("lebm" or "dual-mcmc"; see CelebA64), ignored for the other datasets."""
    if name not in READERS:
        raise ValueError(f"dataset must be one of {sorted(READERS)}, got {name!r}")
    if name == "digits":
        return Digits(split=split, transform=transform)
    if root is None:
        raise FileNotFoundError(f"dataset {name!r} needs --data-root: the directory that holds its files "
                                f"(see hebm_ext.data.{READERS[name].__name__} for the expected layout)")
    if name == "celeba64":
        return CelebA64(root, split=split, crop=crop, transform=transform)
    return READERS[name](root, split=split, transform=transform)


def open_for(config, root=None, split: str = "train"):
    """The dataset of a method ``config`` (its ``dataset``, ``crop`` and, for the train split, ``hflip``:
    hebm_ext.methods.base.DataOptions)."""
    flip = RandomHorizontalFlip() if split == "train" and getattr(config, "hflip", False) else None
    return open_dataset(config.dataset, root, split, transform=flip, crop=getattr(config, "crop", "lebm"))


__all__ += ["READERS", "TEST_SPLIT", "open_dataset", "open_for"]
