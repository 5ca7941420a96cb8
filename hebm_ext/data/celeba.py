"""CelebA at 64x64 from the aligned JPEGs and the official partition file, in torchvision's layout.

Two crops are used in this line of work (both end with a 64x64 bilinear resize, PIL's antialiased BILINEAR as
torchvision's ``Resize`` on PIL images):

- ``"dual-mcmc"``: the box (left, upper, right, lower) = (15, 40, 163, 188), a 148x148 face crop, then resize.
  [CODE jcui1224/dual-MCMC:dataset.py ``CropCelebA64``, "a simplified implementation of" the crop of
  andersbll/autoencoding_beyond_pixels; the same crop is in jcui1224/hierarchical-representation-ebm, the ICCV-23
  relative.] ALGORITHMS.md section 5.4.
- ``"lebm"``: a centre crop of 140x140 (torchvision ``CenterCrop(140)``: offsets ``round((W-140)/2)``,
  ``round((H-140)/2)``, i.e. box (19, 39, 159, 179) on the 178x218 aligned images), then resize. This is the
  RAE protocol (Ghosh et al. 2020) that the CelebA-64 comparison tables of LEBM and its relatives follow.
  [INFERENCE] LEBM's own script (bpucla/latent-space-EBM-prior:train_celeba_128.py) trains CelebA-64 from
  pre-built pickles whose preprocessing is not in the code; its torchvision paths use ``Resize(64) +
  CenterCrop(64)`` ("celeba") or the box (25, 45, 153, 173) ("celeba_crop"), so this crop is the closest
  documented protocol, not a verified copy.

Random horizontal flips (dual-MCMC's training augmentation) are a transform: ``hebm_ext.data.RandomHorizontalFlip``.
"""
import os
from typing import Callable, Optional

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ._common import NEVER_DOWNLOADS, check_split, find_file, pil_to_unit

SPLITS = {"train": 0, "valid": 1, "test": 2}
CROPS = ("lebm", "dual-mcmc")
DUAL_MCMC_BOX = (15, 40, 178 - 15, 218 - 30)
LEBM_CENTER = 140
SIZE = 64
LAYOUT = """  <root>/celeba/img_align_celeba/000001.jpg ...   (torchvision's layout; or <root>/img_align_celeba/...)
  <root>/celeba/list_eval_partition.txt           (next to img_align_celeba; lines "000001.jpg 0",
                                                   0 = train, 1 = valid, 2 = test)"""


def crop_box(width: int, height: int, crop: str):
    """The (left, upper, right, lower) box of ``crop`` ("lebm" or "dual-mcmc") on a ``width`` x ``height`` image."""
    if crop == "dual-mcmc":
        box = DUAL_MCMC_BOX
    elif crop == "lebm":
        left, top = int(round((width - LEBM_CENTER) / 2)), int(round((height - LEBM_CENTER) / 2))
        box = (left, top, left + LEBM_CENTER, top + LEBM_CENTER)
    else:
        raise ValueError(f"CelebA64: argument `crop` must be one of {list(CROPS)}, got {crop!r}")
    if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
        raise ValueError(f"CelebA64: crop {crop!r} needs the box {box}, which does not fit a {width}x{height} image "
                         "(expected the 178x218 aligned CelebA images)")
    return box


def celeba_crop(img: Image.Image, crop: str) -> Image.Image:
    """Crop a PIL image with ``crop`` ("lebm" or "dual-mcmc", see the module docstring) and resize to 64x64."""
    return img.crop(crop_box(img.width, img.height, crop)).resize((SIZE, SIZE), Image.BILINEAR)


def read_partition(path: str):
    """``[(filename, split_id), ...]`` from ``list_eval_partition.txt``; ValueError naming the file and line."""
    entries = []
    with open(path, "r") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ValueError(f"CelebA64: {path} line {lineno}: expected '<image>.jpg <0|1|2>', "
                                 f"got {line.strip()!r}")
            entries.append((fields[0], int(fields[1])))
    return entries


class CelebA64(Dataset):
    """CelebA aligned faces, cropped and resized to 3x64x64; label always 0.

    Args:
        root: folder with ``celeba/img_align_celeba/`` (or ``img_align_celeba/``) and, next to it,
            ``list_eval_partition.txt``.
        split: "train" (162,770 images with the real files), "valid" (19,867) or "test" (19,962), from the
            official partition file.
        crop: "lebm" (centre 140x140) or "dual-mcmc" (box (15, 40, 163, 188)); see the module docstring.
        transform: optional callable applied to each image tensor.

    Items: ``(image float32 [3, 64, 64] in [-1, 1], 0)``; images are decoded lazily. ``.files`` lists the split's
    image paths.
    """

    def __init__(self, root: str, split: str = "train", crop: str = "lebm", transform: Optional[Callable] = None):
        check_split("CelebA64", split, tuple(SPLITS))
        crop_box(178, 218, crop)  # validates `crop` now rather than at the first item
        base = next((b for b in (os.path.join(root, "celeba"), root)
                     if os.path.isdir(os.path.join(b, "img_align_celeba"))), None)
        if base is None:
            raise FileNotFoundError(
                f"CelebA64: no img_align_celeba folder in {os.path.join(root, 'celeba')} or {root}. "
                f"Expected layout:\n{LAYOUT}\n{NEVER_DOWNLOADS}")
        partition = find_file("CelebA64", "list_eval_partition.txt",
                              [os.path.join(base, "list_eval_partition.txt")], LAYOUT)
        folder = os.path.join(base, "img_align_celeba")
        self.files = [os.path.join(folder, name) for name, s in read_partition(partition) if s == SPLITS[split]]
        self.split, self.crop, self.transform = split, crop, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"CelebA64: {path} is listed in list_eval_partition.txt but missing. "
                                    f"Expected layout:\n{LAYOUT}")
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"CelebA64: {path} is not a readable image ({e})") from e
        x = pil_to_unit(celeba_crop(img, self.crop))
        if self.transform is not None:
            x = self.transform(x)
        return x, 0
