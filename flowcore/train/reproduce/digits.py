"""``flowcore reproduce digits``: the FD-digits table of LSD, PSD-M, PSD-U and FM on the digits (docs/math.md §5).

Each objective trains the `digits` UNet with the recipe of configs/digits-*.toml
(``presets.DIGITS_RECIPE``) for the budget's steps (``presets.DIGITS_BUDGETS``: "small" fits two
CPU cores in about 45 minutes, evaluation included; "tiny" is for tests), in ``<out>/<objective>/``.
Each table row is one sampler of one trained network (its EMA ``eval.ema``), scored by the
``fd_digits`` metric (flowcore.eval.fd_digits) on ``eval.samples`` samples per k, all samplers from
one noise batch (``eval.seed``):

* a flow-map objective (LSD, PSD): its k-step flow-map sampler — the trainer's own evaluation;
* FM, which trains the diagonal ``v̂_{t,t}`` alone (its map at s < t is never trained, so its
  flow-map sampler is not what FM learns): k Euler steps of the diagonal's ODE, and one 64-step
  Heun integration of it, the multi-step anchor a distilled sampler is compared with.

Beside the runs it writes ``fd.md`` (the table and the noise floor: held-out real digits against the
training split), ``fd.json`` (every metric of every row, the budget, the timings), a grid per row
``<objective>/grid_<method>.png`` (one row of images per k, then the data) and ``samples.png``,
all grids in table order.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ...data import make_source
from ...eval import evaluate as evaluation
from ...eval.plots import sample_figure
from ..build import network_from_checkpoint
from ..checkpoint import read
from ..config import TrainConfig
from ..presets import DIGITS_BUDGETS, DIGITS_RECIPE
from ..trainer import Summary
from .runner import Target

OBJECTIVES = ("lsd", "psd_m", "psd_u", "fm")
LABELS = {"lsd": "LSD", "psd_m": "PSD-M", "psd_u": "PSD-U", "fm": "FM"}
METRIC = "fd_digits"
# Objectives that train the diagonal alone: sampled by the ODE of v̂_{t,t}, never by the flow map.
DIAGONAL_ONLY = ("fm",)
ANCHOR_STEPS = 64          # the multi-step anchor: Heun on the diagonal, 2 × 64 network calls


@dataclass(frozen=True)
class Row:
    """One table row: `method` ("flow_map", "euler", "heun"; flowcore.eval.sample) at each of `steps`."""

    label: str
    method: str
    steps: tuple[int, ...]


def rows_for(objective: str, label: str, steps: list[int]) -> list[Row]:
    """The samplers of `objective` the table scores (module docstring)."""
    if objective in DIAGONAL_ONLY:
        return [Row(f"{label} (k-step Euler)", "euler", tuple(steps)),
                Row(f"{label}, {ANCHOR_STEPS}-step Heun (diagonal ODE)", "heun", (ANCHOR_STEPS,))]
    return [Row(f"{label} (flow map)", "flow_map", tuple(steps))]


def finish(objective: str, label: str, config: TrainConfig, summary: Summary) -> dict:
    """Score and draw each row's sampler of a trained run: the ``rows`` and ``eval_seconds`` of its result.json.

    The flow-map row is the trainer's final evaluation (the same network, samples and noise); the
    others are evaluated here from the final checkpoint's ``eval.ema`` weights."""
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)   # as the trainer runs (`threads`): the same speed, the same numbers
    try:
        return _score_rows(objective, label, config, summary)
    finally:
        torch.set_num_threads(threads)


def _score_rows(objective: str, label: str, config: TrainConfig, summary: Summary) -> dict:
    started = time.perf_counter()
    e, d = config.eval, config.data
    net, _, sigma = network_from_checkpoint(read(summary.checkpoint), "eval")
    probe = make_source(d.name, 1, key=d.key or None, options=d.source_options())
    dims, figure = tuple(probe.dims), sample_figure(probe.kind, probe.dims)
    shown = min(e.samples, figure.samples)
    # the data row of the trainer's samples.png: the same draw
    reference = next(make_source(d.name, shown, seed=e.seed + 1, key=d.key or None, options=d.source_options()))
    weights = f"EMA {e.ema}" if e.ema else "raw weights"
    rows = []
    for row in rows_for(objective, label, e.steps):
        if row.method == "flow_map" and list(row.steps) == list(e.steps) and summary.results:
            results, floors = summary.results, getattr(summary.results, "floors", {})
        else:
            results = evaluation.evaluate(net, row.steps, e.samples, sigma, e.seed, d.name, d.key, row.method,
                                          e.metrics, data_options=d.source_options(), options=e.metric_options())
            floors = results.floors
        drawn = evaluation.draw(net, row.steps, shown, sigma, dims, e.seed, "cpu", row.method)
        grid = figure.plot(drawn, reference, Path(config.out) / f"grid_{row.method}.png",
                           title=f"{row.label}, step {summary.step}, {weights}")
        rows.append({"label": row.label, "method": row.method, "steps": list(row.steps),
                     "results": {str(k): dict(v) for k, v in results.items()}, "floors": dict(floors),
                     "grid": str(grid)})
    return {"rows": rows, "eval_seconds": time.perf_counter() - started}


def write_report(out: Path, budget: str, runs: dict, echo=print) -> dict:
    rows = [row for run in runs.values() for row in run["rows"]]
    table = {row["label"]: {int(k): values[METRIC] for k, values in row["results"].items() if METRIC in values}
             for row in rows}
    steps = sorted({k for values in table.values() for k in values})
    floor = next((row["floors"][METRIC] for row in rows if METRIC in row["floors"]), None)
    first = next(iter(runs.values()))["config"] if runs else {}
    network = first.get("network", {})
    unet = f"the `{network['preset']}` UNet" if network.get("preset") else \
        f"a UNet of {network.get('model_channels')} channels"
    timings = {LABELS.get(name, name): {"train_seconds": run["seconds"], "eval_seconds": run["eval_seconds"]}
               for name, run in runs.items()}
    total = sum(t["train_seconds"] + t["eval_seconds"] for t in timings.values())
    heading = (f"FD-digits ↓ (Fréchet distance in a small digits classifier's features, docs/math.md §5) — "
               f"flowcore, budget `{budget}`: {unet}, {first.get('steps')} steps of batch "
               f"{first.get('data', {}).get('batch')} per objective, EMA {first.get('eval', {}).get('ema')}, "
               f"{first.get('eval', {}).get('samples')} samples per k")
    floor_line = ("" if floor is None else
                  f"Noise floor {floor:.2f}: the held-out real digits scored against the training split — what a "
                  "perfect sampler scores (with as many images as the held-out set).\n\n")
    grids = ", ".join(Path(row["grid"]).relative_to(out).as_posix() if Path(row["grid"]).is_relative_to(out)
                      else row["grid"] for row in rows)
    markdown = (heading + "\n\n" + _markdown(table, steps) + "\n\n" + floor_line
                + "Timings (s, training with the trainer's evaluation + the table's evaluation): "
                + "; ".join(f"{name} {t['train_seconds']:.0f} + {t['eval_seconds']:.0f}" for name, t in timings.items())
                + f"; {total:.0f} in all.\n\nGrids (a row per k, then the data): {grids}.\n")
    (out / "fd.md").write_text(markdown)
    figure = _combine([(row["label"], Path(row["grid"])) for row in rows], out / "samples.png")
    report = {"budget": budget, "settings": DIGITS_BUDGETS.get(budget), "metric": METRIC, "steps": steps,
              "fd": {label: {str(k): v for k, v in values.items()} for label, values in table.items()},
              "floor": floor, "timings": timings, "total_seconds": total, "runs": runs}
    (out / "fd.json").write_text(json.dumps(report, indent=2))
    echo(markdown)
    echo(f"wrote {out / 'fd.md'}, {out / 'fd.json'}" + (f", {figure}" if figure else ""))
    return report


def _markdown(table: dict[str, dict[int, float]], steps: list[int]) -> str:
    lines = ["| FD-digits ↓ (k steps) | " + " | ".join(str(k) for k in steps) + " |",
             "| --- | " + " | ".join("---" for _ in steps) + " |"]
    lines += [f"| {label} | " + " | ".join("—" if k not in values else f"{values[k]:.2f}" for k in steps) + " |"
              for label, values in table.items()]
    return "\n".join(lines)


def _combine(grids: list[tuple[str, Path]], target: Path) -> Path | None:
    """Every row's grid in one figure, top to bottom, each under its row's label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    pictures = [(label, Image.open(path).convert("L")) for label, path in grids if path.is_file()]
    if not pictures:
        return None
    width = max(p.width for _, p in pictures) / 100
    heights = [p.height / 100 + 0.3 for _, p in pictures]   # inches at 100 dpi, plus the title's line
    fig = Figure(figsize=(width, sum(heights)), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (label, picture) in zip(fig.subplots(len(pictures), 1, squeeze=False, height_ratios=heights)[:, 0],
                                    pictures):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    fig.savefig(target, dpi=100)
    return target


DIGITS = Target(
    name="digits", objectives=OBJECTIVES, labels=LABELS, recipe=DIGITS_RECIPE, budgets=DIGITS_BUDGETS,
    write_report=write_report, finish=finish,
    describe="the FD-digits table (LSD, PSD-M, PSD-U; FM by Euler and a 64-step Heun anchor)")
