"""Data for training and evaluating flow maps (MATH.md §1, §5).

* 2-D sets made in code (nothing is downloaded), each a function ``f(n, generator=None,
  dtype=torch.float32) -> (n, 2)`` in :data:`DATASETS`: the paper's ``checkerboard`` (MATH.md §5),
  ``eight_gaussians``, ``two_moons`` and ``spirals``, all scaled to lie (essentially) in [−1, 1]².
* Arrays from ``.npy`` / ``.npz`` files: :func:`load_array`.
* :class:`DataSource`, made by :func:`make_source`: an endless, seeded stream of batches whose state
  (``state_dict`` / ``load_state_dict``) restores the stream bit for bit, with ``std`` — the σ of
  MATH.md §1, the data's std as one scalar — and ``dims``, the shape of one sample.
"""
from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

Sampler = Callable[..., torch.Tensor]

# The 4×4 board on [−1, 1]²: cells of side 1/2, the filled ones have (i + j) even; i indexes the
# first coordinate, j the second.
BOARD_CELLS = 4
FILLED = [(i, j) for i in range(BOARD_CELLS) for j in range(BOARD_CELLS) if (i + j) % 2 == 0]


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of samples must be an int >= 0, got {n!r}")


def checkerboard(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`n` points uniform on the filled squares of the 4×4 checkerboard on [−1, 1]², shape (n, 2)."""
    _check_n(n)
    cells = torch.tensor(FILLED, dtype=torch.float64)
    pick = torch.randint(len(FILLED), (n,), generator=generator)
    offset = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    side = 2.0 / BOARD_CELLS
    return (-1.0 + side * (cells[pick] + offset)).to(dtype)


# Per-coordinate std of the checkerboard (exactly 1/√3: each coordinate is uniform on [−1, 1]),
# the σ of MATH.md §1 for this data set.
CHECKERBOARD_STD = 3 ** -0.5

EIGHT_GAUSSIANS_RADIUS, EIGHT_GAUSSIANS_SCALE = 0.8, 0.07


def eight_gaussians(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A mixture of 8 equal isotropic Gaussians (std 0.07) centred on the circle of radius 0.8, (n, 2)."""
    _check_n(n)
    angle = torch.randint(8, (n,), generator=generator).to(torch.float64) * (math.pi / 4)
    centres = EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (centres + EIGHT_GAUSSIANS_SCALE * noise).to(dtype)


# Exact: the centres' angles are multiples of π/4, so E[cos²] = E[sin²] = 1/2 and the mean is 0.
EIGHT_GAUSSIANS_STD = math.sqrt(EIGHT_GAUSSIANS_RADIUS ** 2 / 2 + EIGHT_GAUSSIANS_SCALE ** 2)


def two_moons(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Two interleaved half circles (the classic "moons", each point's moon drawn at random),
    centred and scaled by 2/3 to x ∈ [−1, 1], y ∈ [−½, ½], plus Gaussian noise of std 0.04; (n, 2)."""
    _check_n(n)
    theta = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    inner = torch.randint(2, (n,), generator=generator).to(torch.bool)
    x = torch.where(inner, 1.0 - torch.cos(theta), torch.cos(theta))
    y = torch.where(inner, 0.5 - torch.sin(theta), torch.sin(theta))
    points = (torch.stack([x, y], dim=1) - torch.tensor([0.5, 0.25], dtype=torch.float64)) / 1.5
    return (points + 0.04 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).to(dtype)


def spirals(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Two interleaved spiral arms of 1.5 turns, radius ``θ / 3π`` ∈ [0, 1] (the second arm is the
    first turned by π), points spread evenly in area along the arms, noise std 0.02; (n, 2)."""
    _check_n(n)
    theta = 3 * math.pi * torch.sqrt(torch.rand(n, generator=generator, dtype=torch.float64))
    arm = torch.randint(2, (n,), generator=generator).to(torch.float64) * math.pi
    radius = theta / (3 * math.pi)
    points = radius[:, None] * torch.stack([torch.cos(theta + arm), torch.sin(theta + arm)], dim=1)
    return (points + 0.02 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).to(dtype)


DATASETS: dict[str, Sampler] = {"checkerboard": checkerboard, "eight_gaussians": eight_gaussians,
                                "two_moons": two_moons, "spirals": spirals}
_EXACT_STD = {"checkerboard": CHECKERBOARD_STD, "eight_gaussians": EIGHT_GAUSSIANS_STD}
STD_ESTIMATE_SAMPLES = 1 << 20


def array_std(x: torch.Tensor) -> float:
    """σ of MATH.md §1 for samples `x` (N, *dims): the std of all entries together, about their one
    common mean, ``sqrt(mean((x − mean(x))²))``, computed in float64."""
    x = x.detach().to(torch.float64)
    return float(torch.sqrt(torch.mean((x - x.mean()) ** 2)))


@functools.cache
def dataset_std(name: str) -> float:
    """σ for a built-in data set, as :func:`array_std` defines it: exact for ``checkerboard``
    (1/√3) and ``eight_gaussians`` (√(0.8²/2 + 0.07²)); for the others estimated once from 2²⁰
    samples drawn with seed 0 (deterministic; relative error about 1e-3)."""
    if name in _EXACT_STD:
        return _EXACT_STD[name]
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; built-in: {', '.join(DATASETS)}")
    sample = DATASETS[name](STD_ESTIMATE_SAMPLES, torch.Generator().manual_seed(0), torch.float64)
    return array_std(sample)


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


class DataSource(Iterator[torch.Tensor]):
    """An endless stream of batches shaped (batch_size, *dims), drawn on the CPU from its own seeded
    ``torch.Generator`` and then moved to `device`.

    Built-in sets draw fresh i.i.d. samples each batch. Arrays are read in shuffled epochs (a new
    permutation from the generator at the start of each epoch, without replacement within it; a
    batch may straddle two epochs). :meth:`state_dict` / :meth:`load_state_dict` save and restore
    the stream exactly: the generator state (for arrays, the one at the start of the current epoch,
    from which its permutation is redrawn) and the position in the epoch.

    Attributes: ``name``, ``batch_size``, ``dims`` (shape of one sample), ``std`` (σ, MATH.md §1,
    see :func:`array_std`), ``dtype``, ``device``.
    """

    def __init__(self, name: str, batch_size: int, seed: int, *, sampler: Sampler | None = None,
                 array: torch.Tensor | None = None, std: float | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None):
        if (sampler is None) == (array is None):
            raise ValueError("give exactly one of sampler= (a data set function) or array= (samples)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.name, self.batch_size, self.dtype = name, batch_size, dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.generator = torch.Generator().manual_seed(int(seed))
        self._sampler = sampler
        self._array = array.to(dtype) if array is not None else None
        if self._array is not None:
            self.dims: tuple[int, ...] = tuple(self._array.shape[1:])
            self.std = float(std) if std is not None else array_std(self._array)
        else:
            self.dims = tuple(sampler(1, torch.Generator().manual_seed(0), dtype).shape[1:])
            if std is None:  # estimated like dataset_std: 2²⁰ samples drawn with seed 0
                std = array_std(sampler(STD_ESTIMATE_SAMPLES, torch.Generator().manual_seed(0), torch.float64))
            self.std = float(std)
        self._epoch_state = self.generator.get_state()
        self._perm: torch.Tensor | None = None
        self._position = 0

    def __iter__(self) -> DataSource:
        return self

    def __next__(self) -> torch.Tensor:
        if self._sampler is not None:
            batch = self._sampler(self.batch_size, self.generator, self.dtype)
        else:
            batch = self._array[self._next_indices(self.batch_size)]
        return batch.to(self.device)

    def _next_indices(self, count: int) -> torch.Tensor:
        parts = []
        while count > 0:
            if self._perm is None or self._position == len(self._perm):
                self._epoch_state = self.generator.get_state()
                self._perm = torch.randperm(len(self._array), generator=self.generator)
                self._position = 0
            take = min(count, len(self._perm) - self._position)
            parts.append(self._perm[self._position:self._position + take])
            self._position += take
            count -= take
        return torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        """What restores the stream exactly (tensors and ints only, fit for ``torch.save``)."""
        if self._sampler is not None:
            return {"name": self.name, "generator": self.generator.get_state()}
        return {"name": self.name, "generator": self._epoch_state.clone(),
                "position": self._position if self._perm is not None else -1}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"this state is for data {state.get('name')!r}, not {self.name!r}")
        self.generator.set_state(state["generator"])
        if self._array is not None:
            self._epoch_state = state["generator"].clone()
            self._perm, self._position = None, 0
            if state["position"] >= 0:  # redraw the epoch's permutation, leaving the generator where it was
                self._perm = torch.randperm(len(self._array), generator=self.generator)
                self._position = int(state["position"])

    def __repr__(self) -> str:
        return (f"DataSource({self.name!r}, batch_size={self.batch_size}, dims={self.dims}, std={self.std:.4g}, "
                f"dtype={self.dtype})")


def make_source(data: str | os.PathLike, batch_size: int, seed: int = 0, *, key: str | None = None,
                dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> DataSource:
    """A :class:`DataSource` for a built-in set's name (see :data:`DATASETS`) or a ``.npy`` / ``.npz``
    path (`key` picks an npz array; see :func:`load_array`)."""
    if isinstance(data, str) and data in DATASETS:
        return DataSource(data, batch_size, seed, sampler=DATASETS[data], std=dataset_std(data), dtype=dtype,
                          device=device)
    if Path(data).suffix.lower() not in (".npy", ".npz"):
        raise ValueError(f"unknown data {str(data)!r}: give a built-in set ({', '.join(DATASETS)}) "
                         "or a path to a .npy / .npz file")
    array = load_array(data, key)
    return DataSource(str(data), batch_size, seed, array=array, dtype=dtype, device=device)
