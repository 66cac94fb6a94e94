"""Endless, seeded streams of data batches shaped (batch_size, *dims): :class:`DataSource`, made by
:func:`make_source` from a registered data set's name (a sampler, or a loaded set and its options)
or a ``.npy`` / ``.npz`` path. A stream's
state (``state_dict`` / ``load_state_dict``) restores it bit for bit; it knows ``std`` — the σ of
docs/math.md §1, the data's std as one scalar —, ``dims``, the shape of one sample, and ``kind``, the
data kind that chooses the evaluation metrics (flowcore.data.registry).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import torch

from .arrays import array_std, load_array, uint8_to_unit, uint8_unit_std
from .registry import (
    ARRAY_SUFFIXES,
    DATASETS,
    LOADED_DATASETS,
    Sampler,
    array_kind,
    dataset_names,
    dataset_std,
    estimate_std,
)

SOURCE_OPTIONS = ("flip",)       # options of every stream of images
ARRAY_OPTIONS = ("layout",)      # options of a .npy / .npz path (flowcore.data.arrays.load_array)


class DataSource(Iterator[torch.Tensor]):
    """An endless stream of batches shaped (batch_size, *dims), drawn on the CPU from its own seeded
    ``torch.Generator`` and then moved to `device`.

    Registered sets draw fresh i.i.d. samples each batch. Arrays are read in shuffled epochs (a new
    permutation from the generator at the start of each epoch, without replacement within it; a
    batch may straddle two epochs). :meth:`state_dict` / :meth:`load_state_dict` save and restore
    the stream exactly: the generator state (for arrays, the one at the start of the current epoch,
    from which its permutation is redrawn) and the position in the epoch.

    A uint8 array is images kept as uint8 and scaled to [−1, 1] per batch (flowcore.data.arrays).
    ``flip=True`` (images only; off by default: the paper trains without flips, docs/math.md §5) mirrors each sample
    horizontally with probability 1/2, the coin drawn from the stream's own generator — for arrays
    one coin per position of the epoch, right after its permutation, so the saved state still
    redraws both and a resumed stream flips exactly as the original would have.

    Attributes: ``name``, ``batch_size``, ``dims`` (shape of one sample; a sampler's is checked on
    every batch), ``kind`` (the data kind; by default from ``dims``, see ``array_kind``), ``std``
    (σ, docs/math.md §1, see :func:`array_std`), ``dtype``, ``device``.
    """

    def __init__(self, name: str, batch_size: int, seed: int, *, sampler: Sampler | None = None,
                 array: torch.Tensor | None = None, std: float | None = None, dims: tuple[int, ...] | None = None,
                 kind: str | None = None, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                 flip: bool = False):
        if (sampler is None) == (array is None):
            raise ValueError("give exactly one of sampler= (a data set function) or array= (samples)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.name, self.batch_size, self.dtype = name, batch_size, dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.generator = torch.Generator().manual_seed(int(seed))
        self._sampler = sampler
        self._array = array if array is None or array.dtype == torch.uint8 else array.to(dtype)
        if self._array is not None:
            self.dims: tuple[int, ...] = tuple(self._array.shape[1:])
            if std is None:
                std = uint8_unit_std(self._array) if self._array.dtype == torch.uint8 else array_std(self._array)
            self.std = float(std)
        else:
            self.dims = tuple(dims) if dims is not None else \
                tuple(sampler(1, torch.Generator().manual_seed(0), dtype).shape[1:])
            self.std = float(std) if std is not None else estimate_std(sampler)
        if dims is not None and tuple(dims) != self.dims:
            raise ValueError(f"data {name!r}: dims={tuple(dims)} but the array's samples are shaped {self.dims}")
        self.kind = kind or array_kind(self.dims)
        if flip and len(self.dims) != 3:
            raise ValueError(f"data {name!r}: flip mirrors images shaped (C, H, W); "
                             f"these samples are shaped {self.dims}")
        self.flip = bool(flip)
        self._epoch_state = self.generator.get_state()
        self._perm: torch.Tensor | None = None
        self._flips: torch.Tensor | None = None   # the epoch's coin per position (flip=True)
        self._position = 0

    def __iter__(self) -> DataSource:
        return self

    def __next__(self) -> torch.Tensor:
        if self._sampler is not None:
            batch = self._sampler(self.batch_size, self.generator, self.dtype)
            if batch.shape != (self.batch_size, *self.dims):
                raise ValueError(f"data {self.name!r}: asked for {self.batch_size} samples shaped {self.dims}, "
                                 f"the sampler returned shape {tuple(batch.shape)}")
            flips = self._coins(self.batch_size) if self.flip else None
        else:
            indices, flips = self._next_indices(self.batch_size)
            batch = self._array[indices]
            if batch.dtype == torch.uint8:
                batch = uint8_to_unit(batch, self.dtype)
        if flips is not None:
            batch = torch.where(flips.view(-1, 1, 1, 1), batch.flip(-1), batch)
        return batch.to(self.device)

    def _coins(self, count: int) -> torch.Tensor:
        return torch.randint(2, (count,), generator=self.generator).bool()

    def _draw_epoch(self) -> None:
        self._perm = torch.randperm(len(self._array), generator=self.generator)
        self._flips = self._coins(len(self._array)) if self.flip else None

    def _next_indices(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        parts, flips = [], []
        while count > 0:
            if self._perm is None or self._position == len(self._perm):
                self._epoch_state = self.generator.get_state()
                self._draw_epoch()
                self._position = 0
            take = min(count, len(self._perm) - self._position)
            parts.append(self._perm[self._position:self._position + take])
            if self._flips is not None:
                flips.append(self._flips[self._position:self._position + take])
            self._position += take
            count -= take
        return torch.cat(parts), (torch.cat(flips) if flips else None)

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
            if state["position"] >= 0:  # redraw the epoch's permutation (and coins), leaving the generator where it was
                self._draw_epoch()
                self._position = int(state["position"])

    def __repr__(self) -> str:
        return (f"DataSource({self.name!r}, batch_size={self.batch_size}, dims={self.dims}, kind={self.kind!r}, "
                f"std={self.std:.4g}, dtype={self.dtype}{', flip=True' if self.flip else ''})")


def make_source(data: str | os.PathLike, batch_size: int, seed: int = 0, *, key: str | None = None,
                options: Mapping[str, Any] | None = None, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> DataSource:
    """A :class:`DataSource` for a registered data set's name (see flowcore.data.registry) or a
    ``.npy`` / ``.npz`` path (`key` picks an npz array; see :func:`load_array`).

    `options` (the ``data.<option>`` fields of a training config that are set): ``flip`` for any
    images; ``layout`` for a uint8 array file; a loaded data set's own (e.g. ``digits``:
    ``split``, ``resolution``). An option the data does not take is a ValueError naming it; a
    loaded set's bad input (a missing file, a wrong shape) fails here, before any training step."""
    options = dict(options or {})
    flip = bool(options.pop("flip", False))
    if isinstance(data, str) and data in LOADED_DATASETS:
        dataset = LOADED_DATASETS[data]
        return DataSource(data, batch_size, seed, array=dataset.load(**options), kind=dataset.kind, dtype=dtype,
                          device=device, flip=flip)
    if isinstance(data, str) and data in DATASETS:
        _refuse_options(data, options, ())
        dataset = DATASETS[data]
        return DataSource(data, batch_size, seed, sampler=dataset.sampler, std=dataset_std(data), dims=dataset.shape,
                          kind=dataset.kind, dtype=dtype, device=device, flip=flip)
    if Path(data).suffix.lower() not in ARRAY_SUFFIXES:
        raise ValueError(f"unknown data {str(data)!r}: give a registered data set ({', '.join(dataset_names())}) "
                         "or a path to a .npy / .npz file")
    _refuse_options(str(data), options, ARRAY_OPTIONS)
    array = load_array(data, key, options.get("layout"))
    return DataSource(str(data), batch_size, seed, array=array, dtype=dtype, device=device, flip=flip)


def _refuse_options(name: str, options: Mapping[str, Any], taken: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise ValueError(f"data {name!r} takes no option {', '.join(unknown)} "
                         f"(its options: {', '.join((*SOURCE_OPTIONS, *taken))})")
