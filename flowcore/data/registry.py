"""The data-set registry: a name → how to draw its samples, their shape, their kind and their σ.

A data set is one function ``f(n, generator=None, dtype=torch.float32) -> (n, *shape)`` plus one
:func:`register_dataset` call; ``make_source(name, …)`` and ``data.name`` in a training config then
find it. Its *kind* names what evaluation may assume about the samples (docs/design.md): the
metrics that apply, and which ``eval.metrics`` are chosen by default, are declared per kind
(flowcore.eval.metrics). The kinds used here: ``"checkerboard"`` (2-D points of the paper's
checkerboard, whose exact density the KL compares with), ``"points2d"`` (other 2-D points),
``"points"`` (flat vectors), ``"images"`` (samples shaped (C, H, W)); arrays read from a file get
theirs from their sample shape (:func:`array_kind`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .arrays import array_std

Sampler = Callable[..., torch.Tensor]

CHECKERBOARD, POINTS2D, POINTS, IMAGES, ARRAYS = "checkerboard", "points2d", "points", "images", "arrays"
STD_ESTIMATE_SAMPLES = 1 << 20
ARRAY_SUFFIXES = (".npy", ".npz")


@dataclass(frozen=True)
class Dataset:
    """A registered data set; calling it draws ``sampler(n, generator, dtype)`` shaped (n, *shape)."""

    name: str
    sampler: Sampler
    shape: tuple[int, ...]
    kind: str
    std: float | None = None     # σ (docs/math.md §1) when known exactly; None: estimated once (dataset_std)

    def __call__(self, n: int, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.sampler(n, generator, dtype)


DATASETS: dict[str, Dataset] = {}


def register_dataset(name: str, sampler: Sampler, *, shape: tuple[int, ...], kind: str,
                     std: float | None = None) -> Dataset:
    """Make `sampler` available by `name`: it draws samples shaped (n, *`shape`) of data kind
    `kind`; `std` is their σ as :func:`array_std` defines it, when known exactly (otherwise it is
    estimated from 2²⁰ samples drawn with seed 0). Returns the registered :class:`Dataset`."""
    if not isinstance(name, str) or not name.strip() or name.lower().endswith(ARRAY_SUFFIXES):
        raise ValueError(f"a data set's name must be a non-empty string that is not a .npy/.npz path, got {name!r}")
    if name in DATASETS:
        raise ValueError(f"data set {name!r} is already registered (registered: {', '.join(DATASETS)})")
    if not callable(sampler):
        raise TypeError(f"data set {name!r}: the sampler must be callable f(n, generator, dtype), got {sampler!r}")
    shape = tuple(shape)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ValueError(f"data set {name!r}: shape must be the shape of one sample, positive ints, got {shape!r}")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"data set {name!r}: kind must be a non-empty string (e.g. {POINTS2D!r}), got {kind!r}")
    if std is not None and not std > 0:
        raise ValueError(f"data set {name!r}: std must be positive, got {std!r}")
    DATASETS[name] = Dataset(name, sampler, shape, kind, None if std is None else float(std))
    return DATASETS[name]


def get_dataset(name: str) -> Dataset:
    """The data set registered as `name`; a ValueError naming it and the registered ones otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; registered: {', '.join(DATASETS) or 'none'}")
    return DATASETS[name]


def dataset_std(name: str) -> float:
    """σ for a registered data set, as :func:`array_std` defines it: the registered value when
    exact (``checkerboard``: 1/√3; ``eight_gaussians``: √(0.8²/2 + 0.07²)); otherwise estimated
    once from 2²⁰ samples drawn with seed 0 (deterministic; relative error about 1e-3)."""
    dataset = get_dataset(name)
    return dataset.std if dataset.std is not None else _estimated_std(dataset)


@functools.cache
def _estimated_std(dataset: Dataset) -> float:
    return estimate_std(dataset.sampler)


def estimate_std(sampler: Sampler) -> float:
    """σ of a sampler's distribution from 2²⁰ samples drawn with seed 0 in float64."""
    return array_std(sampler(STD_ESTIMATE_SAMPLES, torch.Generator().manual_seed(0), torch.float64))


def array_kind(dims: tuple[int, ...]) -> str:
    """The data kind of samples shaped `dims` that declare none: ``points2d`` for (2,), ``points``
    for other flat vectors, ``images`` for (C, H, W), ``arrays`` otherwise."""
    if dims == (2,):
        return POINTS2D
    return {1: POINTS, 3: IMAGES}.get(len(dims), ARRAYS)
