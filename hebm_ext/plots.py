"""A loss-curve PNG with Pillow alone (matplotlib is an optional extra)."""
from __future__ import annotations

import math

from PIL import Image, ImageDraw

from .images import save_image

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _smooth(ys, k):
    out, acc = [], []
    for y in ys:
        acc.append(y)
        if len(acc) > k:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def loss_curves(history: list, path: str, keys=None, width: int = 900, height_each: int = 180) -> str:
    """One panel per key: the logged value against the step (a light line) and its running mean (dark).
    history: list of dicts with "step" and the values."""
    keys = keys or sorted({k for h in history for k in h if k != "step" and isinstance(h[k], (int, float))})
    keys = [k for k in keys if any(math.isfinite(h.get(k, float("nan"))) for h in history)]
    n = max(1, len(keys))
    img = Image.new("RGB", (width, n * height_each), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for i, k in enumerate(keys):
        pts = [(h["step"], h[k]) for h in history if k in h and math.isfinite(h[k])]
        top, left, right, bottom = i * height_each + 18, 70, width - 10, (i + 1) * height_each - 20
        d.rectangle([left, top, right, bottom], outline=(180, 180, 180))
        d.text((left, top - 15), k, fill=(0, 0, 0))
        if len(pts) < 2:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1 = min(xs), max(xs)
        lo, hi = min(ys), max(ys)
        if hi == lo:
            hi, lo = hi + 1, lo - 1
        d.text((4, top), f"{hi:.3g}", fill=(90, 90, 90))
        d.text((4, bottom - 10), f"{lo:.3g}", fill=(90, 90, 90))
        d.text((right - 60, bottom + 4), f"step {x1}", fill=(90, 90, 90))

        def xy(x, y):
            return (left + (x - x0) / max(1, x1 - x0) * (right - left), bottom - (y - lo) / (hi - lo) * (bottom - top))

        c = _COLOURS[i % len(_COLOURS)]
        light = tuple(int(v + (255 - v) * 0.7) for v in c)
        d.line([xy(x, y) for x, y in pts], fill=light, width=1)
        d.line([xy(x, y) for x, y in zip(xs, _smooth(ys, max(1, len(ys) // 50)))], fill=c, width=2)
    return save_image(img, path)
