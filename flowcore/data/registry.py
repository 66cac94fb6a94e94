"""The data-set registry: a name → how to draw its samples, their shape, their kind and their σ.

A data set is one function ``f(n, generator=None, dtype=torch.float32) -> (n, *shape)`` plus one
:func:`register_dataset` call; ``make_source(name, …)`` and ``data.name`` in a training config then
find it. Its *kind* names what evaluation may assume about the samples (docs/design.md): the
metrics that apply, and which ``eval.metrics`` are chosen by default, are declared per kind
(flowcore.eval.metrics). The kinds used here: ``"checkerboard"`` (2-D points of the paper's
checkerboard, whose exact density the KL compares with), ``"points2d"`` (other 2-D points),
``"points"`` (flat vectors), ``"images"`` (samples shaped (C, H, W)), ``"digits"`` (the bundled
digits, images too: a kind of their own so that FD-digits applies to them alone; a metric for every
image lists both kinds, and the image grid comes by shape); arrays read from a file get
theirs from their sample shape (:func:`array_kind`).

A *loaded* data set is a finite set of samples read once — bundled (``digits``) or from files
(``cifar10``, ``image_folder``) — and streamed in shuffled epochs like an array: one function
``loader(**options) -> (N, *dims)`` (float in [−1, 1], or uint8 images scaled to [−1, 1] per batch)
plus one :func:`register_loaded_dataset` call that names the options it takes (``data.<option>``
in a training config, e.g. ``path``, ``split``, ``resolution``).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .arrays import array_std

Sampler = Callable[..., torch.Tensor]
Loader = Callable[..., torch.Tensor]

CHECKERBOARD, POINTS2D, POINTS, IMAGES, ARRAYS = "checkerboard", "points2d", "points", "images", "arrays"
DIGITS = "digits"   # images (1, r, r) of the bundled digits: image metrics list it beside IMAGES
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


def _check_new(name: object, kind: object) -> None:
    """What every registration checks: a free name that is not an array path, and a kind."""
    if not isinstance(name, str) or not name.strip() or name.lower().endswith(ARRAY_SUFFIXES):
        raise ValueError(f"a data set's name must be a non-empty string that is not a .npy/.npz path, got {name!r}")
    if name in DATASETS or name in LOADED_DATASETS:
        raise ValueError(f"data set {name!r} is already registered (registered: {', '.join(dataset_names())})")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"data set {name!r}: kind must be a non-empty string (e.g. {POINTS2D!r} or {IMAGES!r}), "
                         f"got {kind!r}")


def register_dataset(name: str, sampler: Sampler, *, shape: tuple[int, ...], kind: str,
                     std: float | None = None) -> Dataset:
    """Make `sampler` available by `name`: it draws samples shaped (n, *`shape`) of data kind
    `kind`; `std` is their σ as :func:`array_std` defines it, when known exactly (otherwise it is
    estimated from 2²⁰ samples drawn with seed 0). Returns the registered :class:`Dataset`."""
    _check_new(name, kind)
    if not callable(sampler):
        raise TypeError(f"data set {name!r}: the sampler must be callable f(n, generator, dtype), got {sampler!r}")
    shape = tuple(shape)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ValueError(f"data set {name!r}: shape must be the shape of one sample, positive ints, got {shape!r}")
    if std is not None and not std > 0:
        raise ValueError(f"data set {name!r}: std must be positive, got {std!r}")
    DATASETS[name] = Dataset(name, sampler, shape, kind, None if std is None else float(std))
    return DATASETS[name]


@dataclass(frozen=True)
class LoadedDataset:
    """A registered finite data set: ``loader(**options)`` returns all its samples, (N, *dims)."""

    name: str
    loader: Loader
    kind: str
    options: tuple[str, ...] = ()   # the option names `loader` takes (the data.<option> config fields)

    def load(self, **options) -> torch.Tensor:
        """The samples for `options` (only the names in ``self.options``; the rest keep the loader's
        defaults); a ValueError naming an option the set does not take."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"data set {self.name!r} takes no option {', '.join(unknown)} "
                             f"(its options: {', '.join(self.options) or 'none'})")
        return self.loader(**options)


LOADED_DATASETS: dict[str, LoadedDataset] = {}


def register_loaded_dataset(name: str, loader: Loader, *, kind: str, options: tuple[str, ...] = ()) -> LoadedDataset:
    """Make the finite set ``loader(**options) -> (N, *dims)`` available by `name` (``make_source``,
    ``data.name``), of data kind `kind`, taking the keyword options named in `options`. Returns the
    registered :class:`LoadedDataset`."""
    _check_new(name, kind)
    if not callable(loader):
        raise TypeError(f"data set {name!r}: the loader must be callable f(**options), got {loader!r}")
    LOADED_DATASETS[name] = LoadedDataset(name, loader, kind, tuple(options))
    return LOADED_DATASETS[name]


def dataset_names() -> list[str]:
    """Every registered data set's name: the samplers', then the loaded sets'."""
    return [*DATASETS, *LOADED_DATASETS]


def get_dataset(name: str) -> Dataset | LoadedDataset:
    """The data set registered as `name`; a ValueError naming it and the registered ones otherwise."""
    if name in LOADED_DATASETS:
        return LOADED_DATASETS[name]
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; registered: {', '.join(dataset_names()) or 'none'}")
    return DATASETS[name]


def dataset_std(name: str) -> float:
    """σ for a registered data set, as :func:`array_std` defines it: the registered value when
    exact (``checkerboard``: 1/√3; ``eight_gaussians``: √(0.8²/2 + 0.07²)); otherwise estimated
    once from 2²⁰ samples drawn with seed 0 (deterministic; relative error about 1e-3)."""
    dataset = get_dataset(name)
    if isinstance(dataset, LoadedDataset):
        raise ValueError(f"data set {name!r} is loaded from its options; its σ is make_source({name!r}, ...).std")
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
