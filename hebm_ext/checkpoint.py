"""Checkpoints: written atomically (temporary file, fsync, rename), so a crash or a SIGKILL leaves either the old
file or the new one, never half of one; with every random-number state needed to resume exactly."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

FORMAT = 1


def rng_state() -> dict:
    s = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def atomic_save(obj, path: str) -> str:
    """torch.save to ``path`` through a temporary file in the same directory, flushed and renamed."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable
            fd = os.open(directory, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        except OSError:
            pass
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load(path: str, map_location="cpu") -> dict:
    """Read a checkpoint written by the trainer; a missing or damaged file raises an error naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
        raise ValueError(f"checkpoint {path!r} could not be read ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "method" not in ckpt:
        raise ValueError(f"{path!r} is not a hebm_ext checkpoint (format {FORMAT})")
    return ckpt


def method_from_checkpoint(ckpt: dict, device="cpu"):
    """Rebuild the Method stored in a checkpoint (its resolved config) and load its state."""
    from . import methods

    state = ckpt["method"]
    cfg = dict(state["config"])
    preset = cfg.pop("preset", "") or "digits"
    m = methods.create(state["method"], preset, **cfg).to(device)
    m.load_state_dict(state)
    return m
