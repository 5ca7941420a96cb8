"""A folder of images in torchvision's ``ImageFolder`` layout: ``root/<class>/<image>``."""
import os
from typing import Callable, Optional, Tuple, Union

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ._common import pil_to_unit, require_dir

EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
LAYOUT = """  <root>/<class_a>/xxx.png
  <root>/<class_b>/yyy.jpg   (with split="name": <root>/<name>/<class>/...)"""


class ImageFolder(Dataset):
    """Images in ``root/<class>/<image>`` (torchvision's layout); label = index of the class in sorted order.

    Args:
        root: the folder of class folders.
        split: None reads ``root``; a string reads ``root/<split>`` (e.g. "train"/"test" subfolders).
        transform: optional callable applied to each image tensor.
        size: None keeps each file's size; an int gives size x size, a pair (H, W); resized with PIL BILINEAR.
        channels: None keeps the file's colour: greyscale files (PIL modes 1, L, LA, I, I;16, F) give C = 1,
            everything else is converted to RGB, C = 3 (alpha dropped). 1 or 3 forces that count (use it when a
            folder mixes grey and colour files and the images must stack into batches).

    Items: ``(image float32 [C, H, W] in [-1, 1], label int)``. ``.classes`` the sorted class names,
    ``.samples`` the ``(path, label)`` pairs in order (classes sorted, files sorted within a class).
    """

    def __init__(self, root: str, split: Optional[str] = None, transform: Optional[Callable] = None,
                 size: Union[None, int, Tuple[int, int]] = None, channels: Optional[int] = None):
        folder = root if split is None else os.path.join(root, split)
        require_dir("ImageFolder", folder, LAYOUT)
        if channels not in (None, 1, 3):
            raise ValueError(f"ImageFolder: argument `channels` must be None, 1 or 3, got {channels!r}")
        if isinstance(size, int):
            size = (size, size)
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"ImageFolder: argument `size` must be None, a positive int or (H, W), got {size!r}")
        self.classes = sorted(d.name for d in os.scandir(folder) if d.is_dir())
        self.samples = [
            (os.path.join(folder, c, f), label)
            for label, c in enumerate(self.classes)
            for f in sorted(os.listdir(os.path.join(folder, c)))
            if f.lower().endswith(EXTENSIONS) and os.path.isfile(os.path.join(folder, c, f))
        ]
        if not self.samples:
            raise FileNotFoundError(f"ImageFolder: no image files ({', '.join(EXTENSIONS)}) in class folders of "
                                    f"{folder}. Expected layout:\n{LAYOUT}")
        self.split, self.transform, self.size, self.channels = split, transform, size, channels

    def __len__(self) -> int:
        return len(self.samples)

    def _mode(self, img: Image.Image) -> str:
        if self.channels is not None:
            return "L" if self.channels == 1 else "RGB"
        return "L" if img.mode in _GREY_MODES else "RGB"

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                img = im.convert(self._mode(im))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"ImageFolder: {path} is not a readable image ({e})") from e
        if self.size is not None:
            img = img.resize((self.size[1], self.size[0]), Image.BILINEAR)
        x = pil_to_unit(img)
        if self.transform is not None:
            x = self.transform(x)
        return x, label
