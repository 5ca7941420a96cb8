"""Image output with Pillow (no matplotlib needed): heat maps and sample grids, written atomically."""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

# A perceptually ordered colour ramp (dark blue -> teal -> yellow), interpolated.
_RAMP = np.array([[13, 8, 135], [84, 2, 163], [139, 10, 165], [185, 50, 137], [219, 92, 104], [244, 136, 73],
                  [254, 188, 43], [240, 249, 33]], dtype=np.float64) / 255.0


def colormap(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB uint8."""
    x = np.clip(v, 0, 1) * (len(_RAMP) - 1)
    i = np.minimum(x.astype(int), len(_RAMP) - 2)
    f = (x - i)[..., None]
    return ((_RAMP[i] * (1 - f) + _RAMP[i + 1] * f) * 255).astype(np.uint8)


def heatmap(values: np.ndarray, size: int = 256) -> Image.Image:
    """A 2-D array of non-negative values (row = first coordinate) as a colour image, scaled to its max."""
    v = np.asarray(values, dtype=np.float64)
    v = v / v.max() if v.max() > 0 else v
    img = Image.fromarray(colormap(v.T[::-1]))  # x to the right, y up
    return img.resize((size, size), Image.NEAREST)


def save_image(img: Image.Image, path: str) -> str:
    """Write through a temporary file and rename, so a crash never leaves a half-written PNG."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def side_by_side(images, pad: int = 8, background=(255, 255, 255)) -> Image.Image:
    w = sum(i.width for i in images) + pad * (len(images) + 1)
    h = max(i.height for i in images) + 2 * pad
    out = Image.new("RGB", (w, h), background)
    x = pad
    for i in images:
        out.paste(i, (x, pad))
        x += i.width + pad
    return out


def image_grid(x: torch.Tensor, nrow: int = 8, pad: int = 2, scale: int = 1) -> Image.Image:
    """Images [N, C, H, W] in [-1, 1] (C = 1 or 3) as one grid image."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    ncol = min(nrow, n)
    rows = (n + ncol - 1) // ncol
    grid = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, ncol)
        tile = x[k].permute(1, 2, 0).numpy()
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = \
            tile if c == 3 else np.repeat(tile, 3, axis=2)
    img = Image.fromarray(grid)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img
