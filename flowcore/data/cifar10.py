"""``cifar10``: CIFAR-10 read from a path — the official python-format folder
(``cifar-10-batches-py``: ``data_batch_1`` … ``data_batch_5``, ``test_batch``) or its ``.tar.gz``,
whose members are read in memory, never extracted to disk. Samples are uint8 (3, 32, 32), scaled to
[−1, 1] per batch (flowcore.data.arrays); registered as a loaded data set of kind ``images`` taking
the options ``path`` and ``split`` ("train": the five training batches, 50,000 images; "test":
``test_batch``). The paper's CIFAR-10 runs train on the training batches (docs/math.md §5).

Each batch file is a pickled dict with ``b"data"`` (uint8, (N, 3072): 1,024 red, then green, then
blue values, rows top to bottom) and ``b"labels"`` (N ints). Unpickling runs whatever callables a
file names, so a tampered or mistaken file could execute code: only the batch files are ever
unpickled, and through :class:`BatchUnpickler`, which resolves no global but numpy's array and dtype
reconstruction (and the builtins dict/list/bytes/str/int) — enough for these files and nothing that
acts; anything else is a ValueError naming the file.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from .registry import IMAGES, register_loaded_dataset

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
SPLITS = {"train": TRAIN_BATCHES, "test": TEST_BATCHES}
FOLDER = "cifar-10-batches-py"
SHAPE = (3, 32, 32)

# The globals a CIFAR-10 batch may name: numpy's array reconstruction (numpy 1 and numpy 2 module
# paths) and plain containers. Nothing here runs code beyond building an array or a container.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    *((module, name) for module in ("builtins", "__builtin__") for name in ("dict", "list", "bytes", "str", "int")),
}


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` (see the module docstring for why)."""

    def __init__(self, file, where: str):
        super().__init__(file, encoding="bytes")   # the official files are Python 2 pickles
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise ValueError(f"{self.where}: refusing to unpickle {module}.{name}; a CIFAR-10 batch holds only "
                             "numpy arrays, lists, bytes and ints")
        return super().find_class(module, name)


def read_batch(blob: bytes, where: str) -> np.ndarray:
    """The images of one pickled batch, uint8 (N, 3, 32, 32); a ValueError naming `where` when the
    file is not a CIFAR-10 batch (not a pickle, no b"data"/b"labels", wrong shape or dtype)."""
    try:
        batch = BatchUnpickler(io.BytesIO(blob), where).load()
    except ValueError:
        raise
    except Exception as error:  # truncated or not a pickle at all: say which file
        raise ValueError(f"{where}: not a CIFAR-10 python batch (unpickling failed: {error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{where}: expected a pickled dict with b'data' and b'labels', got {keys}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"dtype {data.dtype}, shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{where}: expected b'data' as uint8 of shape (N, 3072), got {got}")
    if len(batch[b"labels"]) != len(data):
        raise ValueError(f"{where}: {len(data)} images but {len(batch[b'labels'])} labels")
    return data.reshape(len(data), *SHAPE)


def _batch_files(path: Path, names: tuple[str, ...]) -> dict[str, tuple[str, bytes]]:
    """`names` → (where, bytes) from a folder (the batch files, or a folder holding cifar-10-batches-py)."""
    folder = path / FOLDER if not (path / names[0]).exists() and (path / FOLDER).is_dir() else path
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{path}: not a CIFAR-10 python folder: missing {', '.join(missing)} (expected "
                         f"{', '.join(names)} here or in {path / FOLDER})")
    return {name: (str(folder / name), (folder / name).read_bytes()) for name in names}


def _batch_members(path: Path, names: tuple[str, ...]) -> dict[str, tuple[str, bytes]]:
    """`names` → (where, bytes) read from the tarball's members in memory (nothing is extracted)."""
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile() and Path(m.name).name in names}
            missing = [name for name in names if name not in members]
            if missing:
                raise ValueError(f"{path}: not a CIFAR-10 python archive: missing {', '.join(missing)} "
                                 f"(expected members {FOLDER}/{{{', '.join(names)}}})")
            return {name: (f"{path}:{members[name].name}", archive.extractfile(members[name]).read()) for name in names}
    except tarfile.TarError as error:
        raise ValueError(f"{path}: expected the CIFAR-10 python .tar.gz, cannot read it as a tar archive ({error})") \
            from None


def cifar10_images(path: str | os.PathLike = "", split: str = "train") -> torch.Tensor:
    """CIFAR-10's `split` ("train" or "test") from `path` (a folder or the official .tar.gz), uint8
    (N, 3, 32, 32): the loader of the registered ``cifar10`` data set."""
    if not str(path):
        raise ValueError("cifar10: give the path of the CIFAR-10 python folder or .tar.gz (data.path)")
    if split not in SPLITS:
        raise ValueError(f"cifar10: split must be one of {', '.join(SPLITS)} (data.split), got {split!r}")
    path = Path(path)
    if path.is_dir():
        blobs = _batch_files(path, SPLITS[split])
    elif path.is_file():
        blobs = _batch_members(path, SPLITS[split])
    else:
        raise FileNotFoundError(f"{path}: no such CIFAR-10 folder or .tar.gz (data.path)")
    images = [read_batch(blob, where) for where, blob in blobs.values()]
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(images)))


register_loaded_dataset("cifar10", cifar10_images, kind=IMAGES, options=("path", "split"))
