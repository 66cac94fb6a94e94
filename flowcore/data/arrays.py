"""Samples from ``.npy`` / ``.npz`` files (:func:`load_array`) and the σ of docs/math.md §1 of a set of
samples (:func:`array_std`); arrays of any sample shape, (N, *dims), e.g. images (N, C, H, W)."""
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


def load_array(path: str | os.PathLike, key: str | None = None) -> torch.Tensor:
    """Samples shaped (N, *dims) from a ``.npy`` file, or from array `key` of a ``.npz`` file (`key`
    may be left out when the archive holds one array). The array must be floating point, with
    N ≥ 1, at least 2 dimensions (reshape 1-D data to (N, 1)) and no NaN or infinity. The
    dtype is kept (float16/32/64). Raises FileNotFoundError, KeyError (unknown npz key) or ValueError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: expected a .npy or .npz file, got suffix {path.suffix!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if key is None:
                if len(names) != 1:
                    raise ValueError(f"{path}: the archive holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                                     "choose one with key=...")
                key = names[0]
            if key not in names:
                raise KeyError(f"{path}: no array {key!r} in the archive; it holds: {', '.join(names) or 'nothing'}")
            array = archive[key]
        where = f"{path}[{key!r}]"
    else:
        if key is not None:
            raise ValueError(f"{path}: key={key!r} only applies to .npz archives")
        array = np.load(path, allow_pickle=False)
        where = str(path)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{where}: expected a floating-point array, got dtype {array.dtype} "
                         "(convert and scale it first, e.g. images to [−1, 1] float32)")
    if array.ndim < 2 or array.shape[0] < 1:
        raise ValueError(f"{where}: expected samples shaped (N, *dims) with N >= 1 and at least 2 dimensions, "
                         f"got shape {array.shape}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).reshape(len(array), -1).any(axis=1).sum())
        raise ValueError(f"{where}: {bad} of {len(array)} samples hold NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(array))
