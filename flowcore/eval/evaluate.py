"""Evaluating and sampling a trained flow map (docs/math.md §5), for the trainer and the CLI.

:func:`evaluate_sampler` scores the k-step flow-map sampler (or the ODE of its diagonal) with the
metrics of the registry (flowcore.eval.metrics) chosen for the data's kind; :func:`evaluate` and
:func:`draw` are the trainer's and the CLI's entry points; the paper's checkerboard KL table is kept
here for comparison.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..data import make_source
from .metrics import select_metrics
from .sample import DEFAULT_CHUNK, METHODS, Net, flow_map_sample, ode_sample, time_grid

# docs/math.md §5: checkerboard KL at 1, 2, 4, 8, 16 steps (paper: batch 100k, 150k steps, one A100).
PAPER_CHECKERBOARD_KL = {
    "lsd": {1: 0.0864, 2: 0.0765, 4: 0.0708, 8: 0.0699, 16: 0.0710},
    "esd": {1: 0.0983, 2: 0.0921, 4: 0.0834, 8: 0.0816, 16: 0.0751},
    "psd_m": {1: 0.1456, 2: 0.0891, 4: 0.0812, 8: 0.0717, 16: 0.0689},
    "psd_u": {1: 0.1113, 2: 0.1067, 4: 0.0747, 8: 0.0727, 16: 0.0679},
}


class EvaluationResults(dict):
    """``{k: {metric: value}}`` (a plain dict to every reader) and ``floors``: ``{metric: floor}``
    for the computed metrics that declare a noise floor (flowcore.eval.metrics.Metric.floor), which
    :func:`format_table` prints as a last column."""

    def __init__(self, rows: Mapping[int, dict[str, float]] = (), floors: Mapping[str, float] | None = None) -> None:
        super().__init__(rows)
        self.floors: dict[str, float] = dict(floors or {})


def evaluate_sampler(net: Net, steps_list: Sequence[int] = (1, 2, 4, 8, 16), n: int = 65536,
                     sigma: float | None = None, generator: torch.Generator | None = None,
                     dataset: str | os.PathLike = "checkerboard", *, key: str | None = None,
                     metrics: Sequence[str] | None = None, options: Mapping[str, Mapping[str, Any]] | None = None,
                     chunk_size: int = DEFAULT_CHUNK, method: str = "flow_map",
                     data_options: Mapping[str, Any] | None = None,
                     progress: Callable[[str], None] | None = None) -> EvaluationResults:
    """Metrics of the k-step flow-map sampler for each k in `steps_list` (docs/math.md §5):
    ``{k: {metric: value}}``, one entry per metric of `metrics` (names in flowcore.eval.metrics;
    default: those registered as defaults for the data's kind — for the checkerboard ``"kl"``, 50
    bins, ``"energy"`` on a 4096-point subsample and ``"sw2"`` with 128 projections; for other data
    ``"energy"`` and ``"sw2"``), each scored against `n` fresh samples of `dataset` (a registered
    name or a .npy / .npz path, `key` for npz, `data_options` its options as make_source's; from an
    array, a shuffled pass over its samples, repeating them only when `n` exceeds their number).
    `options` gives a metric's keyword options by its name, e.g. ``{"energy": {"max_points": 512},
    "sw2": {"projections": 16}}``.

    One noise batch ``x0 = σ · randn(n, *dims)`` from `generator` (default seeded 0) serves every k;
    σ defaults to the data's std (``make_source(dataset).std``). Samples are drawn with the net's
    parameter dtype and device (CPU float32 for a net without parameters); put it in eval mode first.
    ``method``: ``"flow_map"`` (k composed flow-map steps) or ``"euler"`` / ``"heun"`` (k steps of
    the ODE of the diagonal velocity, a check on what the flow map learned). The result is an
    :class:`EvaluationResults`: its ``floors`` hold the noise floor of each computed metric that
    declares one (flowcore.eval.metrics.Metric.floor), for this data. `progress`, when given, receives
    one line per k as it is done (``"k=16: sampled in 20.1 s, scored (kl, energy, sw2) in 1.2 s"``): a Heun
    evaluation of 65,536 samples takes most of a minute, and the command line says where it is.
    """
    if method not in METHODS:
        raise ValueError(f"unknown sampling method {method!r}; choose {', '.join(METHODS)}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    seed = int(torch.randint(2 ** 62, (), generator=generator))
    source = make_source(dataset, n, seed, key=key, options=data_options)
    options = dict(options or {})
    chosen = select_metrics(source.kind, metrics, options)
    stray = sorted(set(options) - {metric.name for metric in chosen})
    if stray:
        raise ValueError(f"options for metrics that are not computed: {', '.join(stray)} "
                         f"(computed: {', '.join(metric.name for metric in chosen)})")
    sigma = source.std if sigma is None else float(sigma)
    parameter = next(iter(getattr(net, "parameters", lambda: iter(()))()), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else torch.device("cpu")
    data = next(source).to(device)
    x0 = (sigma * torch.randn(n, *source.dims, generator=generator, dtype=torch.float64)).to(device, dtype)
    results: dict[int, dict[str, float]] = {}
    for k in steps_list:
        start = time.perf_counter()
        samples = (flow_map_sample(net, x0, steps=int(k), chunk_size=chunk_size) if method == "flow_map"
                   else ode_sample(net, x0, int(k), method, chunk_size=chunk_size)).to(torch.float64)
        sampled = time.perf_counter()
        results[int(k)] = {metric.name: metric(samples, data, **options.get(metric.name, {})) for metric in chosen}
        if progress is not None:
            progress(f"k={int(k)}: sampled in {sampled - start:.1f} s, scored ({', '.join(m.name for m in chosen)}) "
                     f"in {time.perf_counter() - sampled:.1f} s")
    with_floor = [metric for metric in chosen if metric.floor is not None]
    if progress is not None and with_floor:
        progress(f"the noise floor of {', '.join(metric.name for metric in with_floor)}")
    floors = {metric.name: float(metric.floor(data)) for metric in with_floor}
    return EvaluationResults(results, floors)


def format_table(results: dict[int, dict[str, float]], floors: Mapping[str, float] | None = None) -> str:
    """The table of :func:`evaluate_sampler`'s results, one row per metric, one column per k, and a
    last column ``floor`` when any metric has a noise floor (`floors`, by default the results'
    own ``floors``; "—" for a metric without one)."""
    floors = dict(getattr(results, "floors", {}) if floors is None else floors)
    steps = sorted(results)
    names = list(dict.fromkeys(name for k in steps for name in results[k]))
    width = max([8, *(len(name) + 1 for name in names)])
    lines = ["metric".ljust(width) + "".join(f"{f'k={k}':>10}" for k in steps) + (f"{'floor':>10}" if floors else "")]
    for name in names:
        floor = (f"{floors[name]:>10.4f}" if name in floors else f"{'—':>10}") if floors else ""
        lines.append(name.ljust(width) + "".join(f"{results[k].get(name, float('nan')):>10.4f}" for k in steps) + floor)
    return "\n".join(lines)


def evaluate(net: nn.Module, steps: Sequence[int], samples: int, sigma: float, seed: int, dataset: str,
             key: str = "", method: str = "flow_map", metrics: Sequence[str] = (),
             data_options: Mapping[str, Any] | None = None,
             options: Mapping[str, Mapping[str, Any]] | None = None,
             progress: Callable[[str], None] | None = None) -> EvaluationResults:
    """``{k: {metric: value}}`` (an :class:`EvaluationResults`, with ``floors``) for the k-step
    sampler of `net` (in eval mode): the flow map, or (`method` euler / heun) the ODE of its
    diagonal as a check; `metrics` as ``eval.metrics`` (empty: the data kind's defaults);
    `data_options` the data's (``data.source_options()``); `options` metric options by metric name
    (e.g. ``{"fid": {"weights": path}}``); `progress` a line per k as :func:`evaluate_sampler` says."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return evaluate_sampler(net, list(steps), samples, sigma, generator, dataset, key=key or None,
                                metrics=list(metrics) or None, method=method, data_options=data_options,
                                options=options, progress=progress)


def draw(net: nn.Module, steps: Sequence[int], samples: int, sigma: float, dims: tuple[int, ...], seed: int,
         device: torch.device, method: str = "flow_map", grid: Sequence[float] | None = None,
         progress: Callable[[str], None] | None = None) -> dict[int, torch.Tensor]:
    """Samples (samples, *dims) of the k-step sampler for each k, all from one noise batch
    ``σ·N(0, I)`` seeded by `seed`: the flow map on ``t_i = i/k`` (or, given a `grid`, on that grid
    alone, keyed by its number of steps), or the ODE of the diagonal velocity (`method` euler / heun).
    `progress`, when given, receives a line per sampler drawn (``"k=4: 1.2 s"``, ``"grid 0, 0.5, 1: 0.6 s"``)."""
    generator = torch.Generator().manual_seed(seed)
    x0 = (sigma * torch.randn(samples, *dims, generator=generator)).to(device)
    grids = {f"grid {', '.join(f'{t:g}' for t in grid)}": time_grid(grid=grid)} if grid is not None else \
        {f"k={int(k)}": time_grid(int(k)) for k in steps}
    drawn = {}
    with torch.no_grad():
        for label, times in grids.items():
            start = time.perf_counter()
            x = flow_map_sample(net, x0, grid=times) if method == "flow_map" else \
                ode_sample(net, x0, None, method, grid=times)
            drawn[len(times) - 1] = x.cpu()
            if progress is not None:
                progress(f"{label}: {time.perf_counter() - start:.1f} s")
    return drawn


def kl_markdown(rows: dict[str, dict[int, float]], steps: Sequence[int], paper: bool = True) -> str:
    """A markdown table of KL by objective and k, each row followed by the paper's where it has one."""
    lines = ["| checkerboard KL ↓ | " + " | ".join(str(k) for k in steps) + " |",
             "| --- | " + " | ".join("---" for _ in steps) + " |"]
    for name, row in rows.items():
        lines.append(f"| {name} (flowcore) | " + " | ".join(_cell(row.get(k)) for k in steps) + " |")
        reference = PAPER_CHECKERBOARD_KL.get(name.lower().replace("-", "_")) if paper else None
        if reference:
            lines.append(f"| {name} (paper) | " + " | ".join(_cell(reference.get(k)) for k in steps) + " |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"
