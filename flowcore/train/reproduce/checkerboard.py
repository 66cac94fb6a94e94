"""``flowcore reproduce checkerboard``: the paper's checkerboard table (docs/math.md §5), retrained.

Trains LSD, ESD, PSD-U and PSD-M one after another with one budget (``presets.BUDGETS``: "small"
fits two CPU cores in well under 40 minutes; "paper" is the paper's recipe at its batch of 100k
and 150k steps, a GPU job), each in ``<out>/<objective>/``, and writes beside them:

* ``kl.md``: the KL at 1/2/4/8/16 steps, each objective's row followed by the paper's;
* ``kl.json``: the same numbers, with energy distance and sliced W2, the budget and the timings;
* ``samples.png``: one row of samples per objective (the data, then k = 1, 2, 4, 8, 16).

An interrupted reproduction continues where it stopped (flowcore.train.reproduce.runner).
"""
from __future__ import annotations

import json
from pathlib import Path

from ...eval import evaluate as evaluation
from ..presets import BUDGETS
from .runner import Target

OBJECTIVES = ("lsd", "esd", "psd_u", "psd_m")
LABELS = {"lsd": "LSD", "esd": "ESD", "psd_u": "PSD-U", "psd_m": "PSD-M"}


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


CHECKERBOARD = Target(
    name="checkerboard", objectives=OBJECTIVES, labels=LABELS, recipe={"data.name": "checkerboard"},
    budgets=BUDGETS, write_report=write_report,
    describe="the paper's checkerboard KL table (LSD, ESD, PSD-U, PSD-M)")
