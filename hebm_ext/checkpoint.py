"""Checkpoints that cannot run code, written so that nothing is ever half-written.

Format 2 (this version): a dict of tensors and plain data only (dicts, lists, tuples, str, int, float, bool, None):
the method's state_dict, the trainer position, and every random-number state as tensors or lists of ints (numpy's
MT19937 state as an int64 tensor). It is read with ``torch.load(weights_only=True)``, whose unpickler builds tensors
and plain containers and refuses every other global: a crafted file (a ``__reduce__`` that runs a command) is
refused with a message naming the file, and nothing in it runs. Format 1 (the first trainer) pickled numpy's RNG
state as an ndarray; it is read with numpy's array reconstructor allowed as the only extra global.

Writes go to a temporary file in the same directory, named after the writer (``.NAME.tmp.HOST.PID``), flushed,
fsync'ed and renamed over the target: a crash or SIGKILL leaves the old file or the new one, never half of one. A
writer killed mid-write leaves its temporary file; ``remove_stale_tmp`` deletes those of dead writers when a run
starts or resumes. A full disk raises ``OSError(ENOSPC)`` naming the path (the previous file stays).
"""
from __future__ import annotations

import errno
import os
import pickle
import random
import re
import shutil
import socket

import numpy as np
import torch

FORMAT = 2
READABLE_FORMATS = (1, 2)


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, foreign, or holds more than tensors and plain data."""


# ---------------------------------------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """Every RNG state a training step draws from, as tensors and plain data (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    s = {"torch": torch.get_rng_state(),
         "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
         "python": {"version": int(version), "state": [int(v) for v in py_state], "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    else:  # format 1: numpy's own tuple
        np.random.set_state(n)
    p = s["python"]
    if isinstance(p, dict):
        random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    else:
        random.setstate(tuple(tuple(v) if isinstance(v, list) else v for v in p))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


# ---------------------------------------------------------------------------------------------------- writing
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_TMP = re.compile(r"^\.(?P<name>.+)\.tmp(?:\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)|(?P<oldpid>\d+))$")


def tmp_path(path: str) -> str:
    """The temporary file a writer of ``path`` uses: hidden, beside it, named after this host and process."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.tmp.{_HOST}.{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers (a write interrupted by an exception) are stale too
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(directory: str) -> list:
    """Delete the temporary files (of atomic_save / write_text_atomic) whose writer is dead: a process of this host
    that no longer runs. Files of other hosts are kept (their writer may still run). Returns the removed paths."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for entry in os.listdir(directory):
        m = _TMP.match(entry)
        if not m:
            continue
        host, pid = (m["host"], int(m["pid"])) if m["pid"] else (_HOST, int(m["oldpid"]))
        if host != _HOST or _pid_alive(pid):
            continue
        p = os.path.join(directory, entry)
        try:
            os.unlink(p)
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def _fsync(fd: int) -> None:
    os.fsync(fd)


def _open_tmp(tmp: str):
    return open(tmp, "wb")


class _Recorder:
    """A file wrapper that remembers the first OSError of a write: torch.save reports a failed write as a
    RuntimeError ("unexpected pos ...") that has lost the errno."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, b):
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self):
        self.f.flush()

    def tell(self):
        return self.f.tell()

    def seek(self, *a):
        return self.f.seek(*a)


def _write_error(e: BaseException, path: str) -> OSError:
    err = getattr(e, "errno", None)
    if err is None:
        err = errno.ENOSPC if "No space left" in str(e) else errno.EIO
    if err in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f"; {shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2 ** 20:.0f} MiB free"
        except OSError:
            free = ""
        return OSError(errno.ENOSPC, f"No space left on device: could not write {path}{free} (a previous version "
                                     "of it, if any, is unchanged)", path)
    return OSError(err, f"could not write {path}: {os.strerror(err)} ({e}); a previous version of it, if any, is "
                        "unchanged", path)


def _atomic_write(path: str, write) -> str:
    """write(f) into the temporary file of path, flush, fsync, rename over path, fsync the directory."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = tmp_path(path)
    rec = None
    try:
        with _open_tmp(tmp) as f:
            rec = _Recorder(f)
            write(rec)
            f.flush()
            _fsync(f.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable
            fd = os.open(directory, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        except OSError:
            pass
    except (OSError, RuntimeError) as e:
        cause = rec.error if rec is not None and rec.error is not None else e
        if isinstance(e, RuntimeError) and cause is e and "pos" not in str(e) and "No space" not in str(e):
            raise  # a serialisation problem, not a write failure
        raise _write_error(cause, path) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_save(obj, path: str) -> str:
    """torch.save(obj) to ``path`` through a temporary file in the same directory, flushed and renamed."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def write_text_atomic(path: str, text: str) -> str:
    """A text file written like a checkpoint (temporary file, fsync, rename)."""
    return _atomic_write(path, lambda f: f.write(text.encode()))


# ---------------------------------------------------------------------------------------------------- reading
def _format1_globals():
    """What numpy's pickled MT19937 state needs: numpy's array reconstructor, ndarray, dtype (and numpy >= 1.25's
    dtype classes). None of them runs code: they build an array from bytes."""
    g = [np.ndarray, np.dtype]
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    g.append(_reconstruct)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        g += [getattr(dtypes, n) for n in ("UInt32DType", "Int64DType", "Float64DType") if hasattr(dtypes, n)]
    return g


def load(path: str, map_location="cpu") -> dict:
    """Read a checkpoint written by the trainer with ``torch.load(weights_only=True)``. A missing, damaged or
    foreign file, or one that holds anything but tensors and plain data, raises CheckpointError naming it."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with torch.serialization.safe_globals(_format1_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = str(e).strip().splitlines()
        why = next((ln.strip() for ln in lines if "global" in ln.lower()), None)
        if why is None:  # not a refused global: a damaged or foreign file
            raise CheckpointError(f"checkpoint {path!r} could not be read (UnpicklingError: "
                                  f"{lines[0] if lines else ''})") from e
        raise CheckpointError(f"checkpoint {path!r} holds objects other than tensors and plain data ({why}): "
                              "refused, and nothing in it was run (hebm_ext reads checkpoints with "
                              "torch.load(weights_only=True); only load files you trust with anything else)") from e
    except Exception as e:  # noqa: BLE001 - any other failure means a damaged or foreign file
        raise CheckpointError(f"checkpoint {path!r} could not be read ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") not in READABLE_FORMATS or "method" not in ckpt:
        raise CheckpointError(f"{path!r} is not a hebm_ext checkpoint (formats {READABLE_FORMATS}: a dict with "
                              "'format' and 'method')")
    return ckpt


def step_of(path: str):
    """The step a checkpoint was written at, or None when there is no readable checkpoint at path."""
    try:
        return int(load(path)["method"]["step"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def method_from_checkpoint(ckpt: dict, device="cpu"):
    """Rebuild the Method stored in a checkpoint (its resolved config, validated) and load its state."""
    from . import methods

    state = ckpt["method"]
    cfg = dict(state["config"])
    preset = cfg.pop("preset", "") or "digits"
    m = methods.create(state["method"], preset, **cfg).to(device)
    m.load_state_dict(state)
    return m
