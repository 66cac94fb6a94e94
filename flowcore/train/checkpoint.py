"""Checkpoints: written atomically, read without executing pickled code.

A checkpoint is one ``torch.save`` file of plain containers (dicts, lists, tuples, numbers,
strings, tensors): model, EMA weights, optimizer, step, config, RNG states (torch CPU and CUDA, the
data stream, the batch generator, Python's and NumPy's global generators). It is read with
``torch.load(weights_only=True)``, which refuses anything else — a file that pickles an object is
an error, never code run. :func:`read` is the one way in (train --resume, sample, eval, a
distillation teacher, reproduce): anything that is not such a file, or lacks what a run reads
(``REQUIRED``, and ``FOR_RESUME`` to resume), is a `CheckpointError` of one line naming the file —
never torch's advice to retry without ``weights_only``; :func:`weights_mismatch` and
:func:`shadows_mismatch` name the keys of weights that do not fit a network. Writing goes to a
temporary file in the same directory, is fsync'ed and then ``os.replace``'d over the final name, so
a crash mid-write leaves the previous checkpoints intact; only the last `keep_last` are kept.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import warnings
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


# What sampling and evaluation read of a checkpoint, and what a resumed run reads besides.
REQUIRED = ("step", "config", "sigma", "dims", "model", "ema")
FOR_RESUME = ("skipped", "consecutive", "optimizer", "rng")
ZIP_MAGIC = b"PK\x03\x04"   # torch.save writes a zip archive; flowcore writes nothing else


class Checkpoint(dict):
    """A checkpoint's contents that remember the file they were read from, so that whatever later
    finds them wanting (a network they do not fit) can name the file."""

    def __init__(self, state: dict[str, Any], path: Path):
        super().__init__(state)
        self.path = path


def read(path: str | os.PathLike, *, resume: bool = False) -> Checkpoint:
    """Load a checkpoint on the CPU with ``weights_only=True`` and check that it holds what a run
    reads (`resume`: also what a resumed run reads). Every failure is one line naming the file —
    never torch's advice to retry without ``weights_only``, which would run pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    state = _load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a flowcore checkpoint (format {found!r}, expected {FORMAT!r})")
    missing = [key for key in REQUIRED + (FOR_RESUME if resume else ()) if key not in state]
    if missing:
        why = " (needed to resume)" if set(missing) <= set(FOR_RESUME) else ""
        raise CheckpointError(f"{path} is not a complete flowcore checkpoint: it lacks {', '.join(missing)}{why}")
    return Checkpoint(state, path)


def _load(path: Path) -> Any:
    with open(path, "rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    if not head:
        raise CheckpointError(f"{path} is not a flowcore checkpoint (the file is empty)")
    if head != ZIP_MAGIC:
        raise CheckpointError(f"{path} is not a flowcore checkpoint (not the zip archive torch.save writes, which "
                              f"begins {ZIP_MAGIC!r}: it begins {head!r})")
    try:
        with warnings.catch_warnings():   # torch's notes on pickle protocols are about its loader, not the file
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        what = f": {found.group(1)}" if found else ""
        raise CheckpointError(f"{path} is not a flowcore checkpoint (it holds pickled objects other than tensors "
                              f"and plain containers{what}; flowcore never unpickles code)") from None
    except Exception as error:  # noqa: BLE001 - a truncated or corrupt archive fails in many ways, all of them this one
        raise CheckpointError(f"{path} is not a flowcore checkpoint (it cannot be read, truncated or corrupt?: "
                              f"{first_line(error)})") from None


def first_line(error: BaseException) -> str:
    """The first line of an error's message — its first sentence when long (torch's go on to advise)
    — leaving out torch's advice about weights_only."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and "weights_only" not in line]
    if not lines:
        return type(error).__name__
    return lines[0].split(". ")[0] if len(lines[0]) > 100 else lines[0]


def weights_mismatch(expected: dict[str, torch.Tensor], saved: Any) -> str | None:
    """What keeps `saved` (a state dict read from a checkpoint) from loading into a module whose
    state dict is `expected`: missing and unexpected keys and shapes that differ, in one line; None
    when it fits."""
    if not isinstance(saved, dict):
        return f"a {type(saved).__name__} where a table of tensors belongs"
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    shapes = [f"{key} {tuple(getattr(saved[key], 'shape', ()))} (the network's {tuple(value.shape)})"
              for key, value in expected.items()
              if key in saved and (not isinstance(saved[key], torch.Tensor) or saved[key].shape != value.shape)]
    problems = [f"{label} {_listed(keys)}" for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                                ("shape of", shapes)) if keys]
    return "; ".join(problems) or None


def shadows_mismatch(parameters: list[torch.Tensor], saved: Any) -> str | None:
    """What keeps `saved` (one EMA's tensors, in parameter order) from fitting `parameters`."""
    if not isinstance(saved, (list, tuple)):
        return f"a {type(saved).__name__} where a list of tensors belongs"
    if len(saved) != len(parameters):
        return f"{len(saved)} tensors for the network's {len(parameters)} parameters"
    shapes = [f"#{i} {tuple(getattr(s, 'shape', ()))} (the network's {tuple(p.shape)})"
              for i, (s, p) in enumerate(zip(saved, parameters))
              if not isinstance(s, torch.Tensor) or s.shape != p.shape]
    return f"shape of {_listed(shapes)}" if shapes else None


def _listed(items: list[str], most: int = 4) -> str:
    shown = ", ".join(items[:most])
    return shown if len(items) <= most else f"{shown}, … ({len(items)} in all)"


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
