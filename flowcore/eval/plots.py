"""Figures for flow-map training (docs/math.md §5): samples of the k-step sampler beside the data, and
loss curves. Uses matplotlib's Agg backend (files only, never a window); matplotlib is imported
when a function is called, so ``import flowcore`` does not need it. Each function returns the path
of the PNG it wrote (parent folders are created).
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

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
