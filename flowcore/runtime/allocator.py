"""Keeping freed CPU memory in the process, so that a training step's buffers are reused, not
page-faulted in again (glibc malloc).

A CPU training step allocates the same large activations every step (a 768 × 256 float32 block is
768 KiB). glibc's malloc serves blocks above its mmap threshold with fresh ``mmap`` pages and gives
the top of its heap back to the kernel above its trim threshold, so each step faults every page of
them in again (≈ 400–900 minor faults per step of the small benchmark net, against ≈ 20 with the
memory kept). `retain_freed_memory` raises both thresholds — the effect of PyTorch's advice to
preload jemalloc or tcmalloc for CPU training, without a second allocator. The process then keeps
its peak heap (a training loop returns to it every step anyway).

Process-wide and for the rest of the process: the CLI's ``train``, ``reproduce`` and ``bench``
call it (bench applies it to every variant alike); a library import never does.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["retain_freed_memory", "retained"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed mmap threshold on 64-bit: larger blocks still get mmap
TRIM_THRESHOLD = 1 << 30
_state: dict = {}


def retain_freed_memory() -> bool:
    """Raise glibc malloc's mmap threshold to 32 MiB and its trim threshold to 1 GiB (once);
    True if applied, False where the C library is not glibc."""
    if "applied" not in _state:
        _state["applied"] = _apply()
    return _state["applied"]


def retained() -> dict | None:
    """What `retain_freed_memory` set, for a benchmark's record (None if not applied)."""
    if not _state.get("applied"):
        return None
    return {"allocator": "glibc malloc", "mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}


def _apply() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
