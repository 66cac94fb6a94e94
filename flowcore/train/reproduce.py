"""``flowcore reproduce checkerboard``: the paper's checkerboard table (docs/math.md §5), retrained.

Trains LSD, ESD, PSD-U and PSD-M one after another with one budget (``presets.BUDGETS``: "small"
fits two CPU cores in well under 40 minutes; "paper" is the paper's recipe at its batch of 100k
and 150k steps, a GPU job), each in ``<out>/<objective>/``, and writes beside them:

* ``kl.md``: the KL at 1/2/4/8/16 steps, each objective's row followed by the paper's;
* ``kl.json``: the same numbers, with energy distance and sliced W2, the budget and the timings;
* ``samples.png``: one row of samples per objective (the data, then k = 1, 2, 4, 8, 16).

An interrupted reproduction continues where it stopped: finished objectives are read back from
their ``result.json``, a partial one resumes from its latest checkpoint.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..eval import evaluate as evaluation
from .config import TrainConfig, from_dict
from .presets import BUDGETS
from .trainer import Trainer

OBJECTIVES = ("lsd", "esd", "psd_u", "psd_m")
LABELS = {"lsd": "LSD", "esd": "ESD", "psd_u": "PSD-U", "psd_m": "PSD-M"}


def budget_config(budget: str, objective: str, out: Path, overrides: list[str] = ()) -> TrainConfig:
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    values = {"objective.name": objective, "data.name": "checkerboard", "out": str(out / objective),
              **BUDGETS[budget]}
    return from_dict(TrainConfig().to_dict(), values).with_overrides(list(overrides))


def reproduce(budget: str = "small", out: str | Path | None = None, objectives=OBJECTIVES,
              overrides: list[str] = (), echo=print) -> dict:
    out = Path(out if out is not None else f"runs/reproduce-checkerboard-{budget}")
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name in objectives:
        config = budget_config(budget, name, out, overrides)
        result_path = out / name / "result.json"
        if result_path.is_file():
            try:
                saved = json.loads(result_path.read_text())
            except json.JSONDecodeError as error:
                echo(f"{result_path}: unreadable ({error}); evaluating {name} again from its checkpoints")
                saved = {}
            if saved.get("config") == config.to_dict():
                echo(f"{LABELS.get(name, name)}: already trained ({result_path}); reusing its evaluation")
                runs[name] = saved
                continue
        echo(f"{LABELS.get(name, name)}: training ({budget} budget, {config.steps} steps) in {out / name}")
        started = time.perf_counter()
        summary = Trainer(config, resume=True).train()
        if summary.interrupted:
            raise KeyboardInterrupt(f"{summary.interrupted} during {name}; run the same command again to continue")
        runs[name] = {"config": config.to_dict(), "step": summary.step, "seconds": time.perf_counter() - started,
                      "results": {str(k): v for k, v in summary.results.items()},
                      "samples": str(summary.samples) if summary.samples else None}
        temporary = result_path.with_name(result_path.name + ".tmp")
        temporary.write_text(json.dumps(runs[name], indent=2))
        temporary.replace(result_path)  # a result.json is complete or absent
    return write_report(out, budget, runs, echo)


def write_report(out: Path, budget: str, runs: dict, echo=print) -> dict:
    steps = sorted({int(k) for run in runs.values() for k in run["results"]})
    kl = {LABELS.get(name, name): {int(k): row["kl"] for k, row in run["results"].items() if "kl" in row}
          for name, run in runs.items()}
    markdown = (f"Checkerboard KL (nats, 50×50 histogram, docs/math.md §5) — flowcore, budget `{budget}` "
                f"(the paper: batch 100k, 150k steps, one A100)\n\n" + evaluation.kl_markdown(kl, steps) + "\n")
    (out / "kl.md").write_text(markdown)
    report = {"budget": budget, "steps": steps, "kl": {n: {str(k): v for k, v in r.items()} for n, r in kl.items()},
              "paper": {LABELS[n]: {str(k): v for k, v in r.items()}
                        for n, r in evaluation.PAPER_CHECKERBOARD_KL.items()},
              "runs": runs}
    (out / "kl.json").write_text(json.dumps(report, indent=2))
    figure = _stack_rows([Path(run["samples"]) for run in runs.values() if run.get("samples")], out / "samples.png")
    echo(markdown)
    echo(f"wrote {out / 'kl.md'}, {out / 'kl.json'}" + (f", {figure}" if figure else ""))
    return report


def _stack_rows(paths: list[Path], target: Path) -> Path | None:
    """One figure from each objective's samples.png (one row each), stacked top to bottom."""
    import numpy as np
    from matplotlib import image

    rows = [image.imread(p) for p in paths if p.is_file()]
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=1.0) for r in rows]
    image.imsave(target, np.concatenate(padded, axis=0))
    return target
