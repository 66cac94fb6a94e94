"""Samples from ``.npy`` / ``.npz`` files (:func:`load_array`) and the σ of docs/math.md §1 of a set of
samples (:func:`array_std`); arrays of any sample shape, (N, *dims), e.g. images (N, C, H, W).

uint8 arrays are images, (N, H, W, C), (N, C, H, W) or (N, H, W): they are kept as uint8 (a quarter
of float32's memory: CIFAR-10 is 150 MB) in (N, C, H, W) and scaled to [−1, 1] one batch at a
time (:func:`uint8_to_unit`); their σ is that of the scaled values (:func:`uint8_unit_std`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


def array_std(x: torch.Tensor) -> float:
    """σ of docs/math.md §1 for samples `x` (N, *dims): the std of all entries together, about their one
    common mean, ``sqrt(mean((x − mean(x))²))``, computed in float64."""
    x = x.detach().to(torch.float64)
    return float(torch.sqrt(torch.mean((x - x.mean()) ** 2)))


UINT8_LEVELS = 255
IMAGE_CHANNELS = (1, 3)
LAYOUTS = ("NCHW", "NHWC")


def uint8_to_unit(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images (0…255) as `dtype` in [−1, 1]: ``x / 127.5 − 1`` (0 ↦ −1, 255 ↦ 1)."""
    return x.to(dtype) * (2.0 / UINT8_LEVELS) - 1.0


def uint8_unit_std(x: torch.Tensor) -> float:
    """σ (as :func:`array_std`) of the uint8 images `x` once scaled to [−1, 1], exactly, from the
    histogram of the 256 levels in float64 (no float copy of the whole set)."""
    counts = torch.bincount(x.reshape(-1).to(torch.int64), minlength=UINT8_LEVELS + 1).to(torch.float64)
    levels = torch.arange(UINT8_LEVELS + 1, dtype=torch.float64) * (2.0 / UINT8_LEVELS) - 1.0
    mean = (counts * levels).sum() / counts.sum()
    return float(torch.sqrt((counts * (levels - mean) ** 2).sum() / counts.sum()))


def images_to_nchw(array: np.ndarray, where: str, layout: str | None = None) -> np.ndarray:
    """uint8 images (N, H, W), (N, H, W, C) or (N, C, H, W) as (N, C, H, W), C ∈ {1, 3}. Without
    `layout` ("NHWC" or "NCHW") the channel axis is the one of axes 1 and 3 that holds 1 or 3
    entries; when both or neither do, a ValueError naming `where` asks for an explicit layout."""
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"{where}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if array.dtype != np.uint8:
        raise ValueError(f"{where}: expected uint8 images (0…255), got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[0] >= 1 and layout is None:
        return array[:, None]
    if array.ndim != 4 or array.shape[0] < 1:
        raise ValueError(f"{where}: expected uint8 images shaped (N, H, W, C) or (N, C, H, W) with N >= 1 "
                         f"(or (N, H, W) for one channel), got shape {array.shape}")
    if layout is None:
        first, last = array.shape[1] in IMAGE_CHANNELS, array.shape[3] in IMAGE_CHANNELS
        if first == last:
            which = "both axis 1 and axis 3 could be" if first else "neither axis 1 nor axis 3 is"
            raise ValueError(f"{where}: cannot tell the channel axis of shape {array.shape} ({which} the 1 or 3 "
                             "channels); give the layout explicitly: layout='NHWC' or 'NCHW' (data.layout)")
        layout = "NCHW" if first else "NHWC"
    channels = array.shape[1] if layout == "NCHW" else array.shape[3]
    if channels not in IMAGE_CHANNELS:
        raise ValueError(f"{where}: layout {layout} puts {channels} channels on the channel axis of shape "
                         f"{array.shape}; expected 1 or 3")
    return array if layout == "NCHW" else array.transpose(0, 3, 1, 2)


def load_array(path: str | os.PathLike, key: str | None = None, layout: str | None = None) -> torch.Tensor:
    """Samples shaped (N, *dims) from a ``.npy`` file, or from array `key` of a ``.npz`` file (`key`
    may be left out when the archive holds one array). A floating-point array must have N ≥ 1, at
    least 2 dimensions (reshape 1-D data to (N, 1)) and no NaN or infinity; its dtype is kept
    (float16/32/64). A uint8 array is images, returned as uint8 (N, C, H, W) (:func:`images_to_nchw`;
    `layout` settles which axis holds the channels). Raises FileNotFoundError, KeyError (unknown
    npz key) or ValueError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: expected a .npy or .npz file, got suffix {path.suffix!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    if suffix == ".npz":
        _check_magic(path, NPZ_MAGIC, "a NumPy .npz archive", "numpy.savez")
        try:
            archive = np.load(path, allow_pickle=False)
        except Exception as error:  # noqa: BLE001 - a zip file that is not an archive of arrays fails in many ways
            raise ValueError(f"{path}: not a NumPy .npz archive ({_first_line(error)})") from None
        with archive:
            names = list(archive.files)
            if key is None:
                if len(names) != 1:
                    raise ValueError(f"{path}: the archive holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                                     "choose one with key=...")
                key = names[0]
            if key not in names:
                raise KeyError(f"{path}: no array {key!r} in the archive; it holds: {', '.join(names) or 'nothing'}")
            where = f"{path}[{key!r}]"
            array = _read(lambda: archive[key], where, "the archive")
    else:
        if key is not None:
            raise ValueError(f"{path}: key={key!r} only applies to .npz archives")
        where = str(path)
        _check_magic(path, NPY_MAGIC, "a NumPy .npy file", "numpy.save")
        array = _read(lambda: np.load(path, allow_pickle=False), where, "the .npy file")
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images_to_nchw(array, where, layout)))
    if layout is not None:
        raise ValueError(f"{where}: layout={layout!r} only applies to uint8 image arrays, this one is {array.dtype}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{where}: expected a floating-point array or uint8 images, got dtype {array.dtype} "
                         "(convert and scale it first, e.g. images to [−1, 1] float32, or keep them uint8)")
    if array.ndim < 2 or array.shape[0] < 1:
        raise ValueError(f"{where}: expected samples shaped (N, *dims) with N >= 1 and at least 2 dimensions, "
                         f"got shape {array.shape}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).reshape(len(array), -1).any(axis=1).sum())
        raise ValueError(f"{where}: {bad} of {len(array)} samples hold NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(array))


NPY_MAGIC = b"\x93NUMPY"
NPZ_MAGIC = b"PK\x03\x04"


def _check_magic(path: Path, magic: bytes, what: str, writer: str) -> None:
    with open(path, "rb") as handle:
        head = handle.read(len(magic))
    if head != magic:
        begins = f"it begins {head!r}" if head else "the file is empty"
        raise ValueError(f"{path}: not {what} ({begins}, where {what} begins {magic!r}); write it with {writer}")


def _read(load, where: str, what: str) -> np.ndarray:
    """`load()`, with numpy's errors as one line naming `where`. numpy refuses object arrays with
    advice to pass ``allow_pickle``: flowcore never unpickles data files, so the line says what the
    file holds instead."""
    try:
        return load()
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ValueError(f"{where}: holds Python objects (dtype object), which flowcore does not unpickle; "
                             "save numbers instead: a float array, or uint8 images") from None
        raise ValueError(f"{where}: {what} is truncated or corrupt ({_first_line(error)})") from None
    except Exception as error:  # noqa: BLE001 - EOFError, OSError, zlib and zip errors of a damaged file
        raise ValueError(f"{where}: {what} is truncated or corrupt ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and "allow_pickle" not in line]
    return lines[0] if lines else type(error).__name__
