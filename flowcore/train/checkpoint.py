"""Checkpoints: written atomically, read without executing pickled code.

A checkpoint is one ``torch.save`` file of plain containers (dicts, lists, tuples, numbers,
strings, tensors): model, EMA weights, optimizer, step, config, RNG states (torch CPU and CUDA, the
data stream, the batch generator, Python's and NumPy's global generators). It is read with
``torch.load(weights_only=True)``, which refuses anything else — a file that pickles an object is
an error, never code run. Writing goes to a temporary file in the same directory, is fsync'ed and
then ``os.replace``'d over the final name, so a crash mid-write leaves the previous checkpoints
intact; only the last `keep_last` are kept.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "flowcore-train-checkpoint/1"
PATTERN = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, truncated, corrupt, unsafe or of another format."""


def write_atomic(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save(state)`` to `path` so that `path` is either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:  # some file systems cannot fsync a directory
        pass
    return path


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True``; every failure names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: refused to load: it holds pickled objects other than tensors and plain "
                              f"containers, and flowcore never runs pickled code ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a flowcore training checkpoint (format {found!r}, expected {FORMAT!r})")
    return state


class CheckpointDir:
    """``<out>/checkpoints/step-000001000.pt``, …: the last `keep_last` of them."""

    def __init__(self, directory: str | os.PathLike, keep_last: int = 3):
        self.directory = Path(directory)
        self.keep_last = keep_last

    def path_for(self, step: int) -> Path:
        return self.directory / f"step-{step:09d}.pt"

    def steps(self) -> list[tuple[int, Path]]:
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := PATTERN.match(p.name))]
        return sorted(found)

    def latest(self) -> Path | None:
        found = self.steps()
        return found[-1][1] if found else None

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = write_atomic(state, self.path_for(step))
        for _, old in self.steps()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def remove_temporaries(self) -> None:
        """Leftovers of writes that crashed (never a complete checkpoint)."""
        if self.directory.is_dir():
            for leftover in self.directory.glob(".step-*.pt.tmp-*"):
                leftover.unlink(missing_ok=True)


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the latest checkpoint of a run directory (or of its checkpoints/)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for directory in (path / "checkpoints", path):
            latest = CheckpointDir(directory).latest()
            if latest is not None:
                return latest
        raise CheckpointError(f"{path}: a directory without checkpoints (expected checkpoints/step-*.pt)")
    raise CheckpointError(f"{path}: no such checkpoint file or run directory")


# --------------------------------------------------------------------------- RNG states


def global_rng_state() -> dict[str, Any]:
    """torch (CPU, every CUDA device once CUDA is initialized), Python and NumPy global generators."""
    version, keys, gauss = random.getstate()
    kind, np_keys, position, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": version, "keys": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
             "numpy": {"kind": kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(k) for k in py["keys"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["position"], npy["has_gauss"],
                         npy["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)
