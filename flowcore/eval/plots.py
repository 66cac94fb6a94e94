"""Figures for flow-map training (docs/math.md §5): samples of the k-step sampler beside the data, and
loss curves. Uses matplotlib's Agg backend (files only, never a window); matplotlib is imported
when a function is called, so ``import flowcore`` does not need it. Each function returns the path
of the PNG it wrote (parent folders are created).

Which sample figure a data set gets is chosen by its data kind (flowcore.data.registry) through
:func:`sample_figure`: a scatter of points (:func:`plot_samples`) for 2-D points, a grid of images
(:func:`plot_image_grid`) for images; a new kind is one :func:`register_sample_figure` call.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.registry import CHECKERBOARD, IMAGES, POINTS2D, array_kind

STEP_COLUMNS = ("step", "iteration", "iter", "k")


def _figure(ncols: int, width: float, height: float):
    # A bare Figure on an Agg canvas: no pyplot, no global backend switch, no window.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _points(x: torch.Tensor, what: str, limit: int) -> torch.Tensor:
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{what}: plot_samples draws 2-D points shaped (N, 2), got {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float64)
    return x[:limit]


def plot_samples(samples_by_k: Mapping[int, torch.Tensor], data: torch.Tensor, path: str | os.PathLike, *,
                 max_points: int = 20000, title: str | None = None) -> Path:
    """One row of square scatter panels: the data first, then the samples of each k-step sampler
    (in increasing k), all on the same limits — the data's bounding box, widened by 10% and made
    square (about [−1.1, 1.1]² for the checkerboard). At most `max_points` points per panel (the
    first ones). Returns the PNG's path."""
    if not samples_by_k:
        raise ValueError("samples_by_k is empty: nothing to plot")
    panels = [("data", _points(data, "data", max_points))]
    panels += [(f"{k} step{'s' if k != 1 else ''}", _points(x, f"samples for k={k}", max_points))
               for k, x in sorted(samples_by_k.items())]
    low, high = panels[0][1].min(dim=0).values, panels[0][1].max(dim=0).values
    centre, half = (low + high) / 2, float((high - low).max()) / 2 * 1.1 or 1.0
    fig = _figure(len(panels), 2.6, 2.9)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, x) in zip(axes, panels):
        finite = x[torch.isfinite(x).all(dim=1)]
        ax.scatter(finite[:, 0].numpy(), finite[:, 1].numpy(), s=0.3, alpha=0.5, linewidths=0,
                   color="black" if label == "data" else "tab:blue", rasterized=True)
        ax.set_xlim(float(centre[0]) - half, float(centre[0]) + half)
        ax.set_ylim(float(centre[1]) - half, float(centre[1]) + half)
        ax.set_aspect("equal")
        ax.set_title(label, fontsize=10)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def read_loss_csv(path: str | os.PathLike) -> dict[str, list[float]]:
    """The numeric columns of a CSV with a header row, as ``{column: values}``; an empty or
    non-numeric cell becomes NaN, a column with no number at all is left out."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[float]] = {}
    for name in rows[0].keys() if rows else []:
        values = []
        for row in rows:
            try:
                values.append(float(row[name]))
            except (TypeError, ValueError):
                values.append(math.nan)
        if any(not math.isnan(v) for v in values):
            columns[name] = values
    return columns


def plot_losses(series: str | os.PathLike | Mapping[str, Sequence[float]], path: str | os.PathLike, *,
                title: str | None = None) -> Path:
    """Loss curves, one line per term: `series` is a CSV path (see :func:`read_loss_csv`) or a
    ``{name: values}`` mapping. A column named ``step`` (or ``iteration``, ``iter``, ``k``) is the
    x axis; otherwise the row index is. The y axis is logarithmic, or symmetric-log when a series
    has a value ≤ 0 (a learned loss weight can make a loss negative). NaNs leave gaps."""
    columns = read_loss_csv(series) if isinstance(series, (str, os.PathLike)) else {
        name: [float(v) for v in values] for name, values in series.items()}
    step_name = next((name for name in STEP_COLUMNS if name in columns), None)
    curves = {name: values for name, values in columns.items() if name != step_name}
    if not curves:
        raise ValueError("no loss series to plot")
    fig = _figure(1, 6.0, 3.8)
    ax = fig.subplots()
    finite = [v for values in curves.values() for v in values if math.isfinite(v)]
    for name, values in curves.items():
        x = columns[step_name][:len(values)] if step_name else list(range(len(values)))
        ax.plot(x, values, label=name, linewidth=1.0)
    if finite and min(finite) <= 0:
        # linear within 1e-3 of the largest magnitude, logarithmic beyond
        ax.set_yscale("symlog", linthresh=max(1e-12, 1e-3 * max(abs(v) for v in finite)))
    else:
        ax.set_yscale("log")
    ax.set_xlabel(step_name or "row")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _image_rows(x: torch.Tensor, what: str, channels: int | None, per_row: int) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{what}: plot_image_grid draws images shaped (N, C, H, W) with 1 or 3 channels, "
                         f"got {tuple(x.shape)}")
    if channels is not None and x.shape[1:] != channels:
        raise ValueError(f"{what}: images of shape {tuple(x.shape[1:])} in a grid of {tuple(channels)}")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: no images to draw")
    # [−1, 1] → 0..255; NaN (a diverged sample) draws as mid grey rather than failing the figure
    x = torch.nan_to_num(x[:per_row].detach().to("cpu", torch.float64), nan=0.0).clamp(-1, 1)
    return ((x + 1) * 127.5).round().to(torch.uint8)


def plot_image_grid(samples_by_k: Mapping[int, torch.Tensor], data: torch.Tensor, path: str | os.PathLike, *,
                    per_row: int = 16, scale: int | None = None, pad: int = 2, title: str | None = None,
                    save_npz: bool = False) -> Path:
    """A PNG grid of images: one row per k (increasing), then a row of data; each row the first
    `per_row` images (N, C, H, W), values in [−1, 1] clipped, 1 (grey) or 3 (RGB) channels; each
    image upscaled `scale`× (nearest neighbour, so 8×8 digits stay crisp; default ``max(1, 32 // H)``,
    about 32 pixels an image) with `pad` white pixels
    between images and around the grid. The picture is exactly
    ``(rows·H·scale + (rows+1)·pad) × (per_row·W·scale + (per_row+1)·pad)`` pixels (height × width),
    a row with fewer images left white; `title` goes into the PNG's metadata. With `save_npz`,
    the samples drawn (all of them) and the data shown go beside it in ``path`` with the suffix
    ``.npz`` (arrays ``k1``, ``k2``, …, ``data``). Returns the PNG's path."""
    from PIL import Image, PngImagePlugin

    if not samples_by_k:
        raise ValueError("samples_by_k is empty: nothing to plot")
    if not (isinstance(per_row, int) and per_row >= 1 and (scale is None or isinstance(scale, int) and scale >= 1)
            and isinstance(pad, int) and pad >= 0):
        raise ValueError(f"plot_image_grid: per_row and scale must be ints >= 1 and pad an int >= 0, "
                         f"got per_row={per_row!r}, scale={scale!r}, pad={pad!r}")
    ordered = sorted(samples_by_k.items())
    shape = tuple(data.shape[1:]) if isinstance(data, torch.Tensor) else None
    rows = [_image_rows(x, f"samples for k={k}", shape, per_row) for k, x in ordered]
    rows.append(_image_rows(data, "data", None, per_row))
    channels, height, width = rows[-1].shape[1:]
    scale = scale or max(1, 32 // height)
    cell_h, cell_w = height * scale + pad, width * scale + pad
    canvas = torch.full((len(rows) * cell_h + pad, per_row * cell_w + pad, channels), 255, dtype=torch.uint8)
    for r, row in enumerate(rows):
        big = row.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3).permute(0, 2, 3, 1)
        for c, image in enumerate(big):
            top, left = pad + r * cell_h, pad + c * cell_w
            canvas[top:top + height * scale, left:left + width * scale] = image
    picture = Image.fromarray(canvas.numpy()[..., 0] if channels == 1 else canvas.numpy(),
                              mode="L" if channels == 1 else "RGB")
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", title or "")
    info.add_text("Description", "rows: " + ", ".join(f"{k} step{'s' if k != 1 else ''}" for k, _ in ordered)
                  + ", data")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, pnginfo=info)
    if save_npz:
        import numpy as np

        arrays = {f"k{k}": x.detach().cpu().numpy() for k, x in ordered}
        np.savez(path.with_suffix(".npz"), **arrays, data=data[:per_row].detach().cpu().numpy())
    return path


@dataclass(frozen=True)
class SampleFigure:
    """How samples of a data kind are drawn: ``plot(samples_by_k, data, path, *, title=None) -> Path``
    and how many samples (per k, and of data) it needs — the caller draws no more than that."""

    plot: Callable[..., Path]
    samples: int


SAMPLE_FIGURES: dict[str, SampleFigure] = {}


def register_sample_figure(kind: str, plot: Callable[..., Path], *, samples: int) -> SampleFigure:
    """Draw samples of data kind `kind` with `plot` (signature as :class:`SampleFigure`), from at
    most `samples` samples per k."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"a sample figure's data kind must be a non-empty string, got {kind!r}")
    if kind in SAMPLE_FIGURES:
        raise ValueError(f"data kind {kind!r} already has a sample figure ({SAMPLE_FIGURES[kind].plot.__name__})")
    if not callable(plot) or not (isinstance(samples, int) and samples >= 1):
        raise ValueError(f"sample figure for {kind!r}: expected a callable and a positive number of samples, "
                         f"got {plot!r}, {samples!r}")
    SAMPLE_FIGURES[kind] = SampleFigure(plot, samples)
    return SAMPLE_FIGURES[kind]


def sample_figure(kind: str, dims: Sequence[int]) -> SampleFigure | None:
    """The sample figure for data of `kind`, or — for a kind without one — for the kind its sample
    shape `dims` implies (a data set of its own kind shaped (2,) is still drawn as 2-D points);
    None when neither has a figure (flat vectors, say)."""
    return SAMPLE_FIGURES.get(kind) or SAMPLE_FIGURES.get(array_kind(tuple(dims)))


register_sample_figure(CHECKERBOARD, plot_samples, samples=20000)
register_sample_figure(POINTS2D, plot_samples, samples=20000)
register_sample_figure(IMAGES, plot_image_grid, samples=16)
