"""Retraining one of the paper's tables: a :class:`Target`, trained objective by objective, then reported.

A target is a record: its default objectives in table order, their labels, its recipe (overrides
of TrainConfig's defaults shared by every budget), its budgets (further overrides per budget), an
optional ``finish`` that evaluates a trained run beyond the trainer's own evaluation, and the
report writer. :func:`run` trains each objective in ``<out>/<objective>/`` with the target's
config and writes the report beside them.

Resumable: each finished objective leaves ``<out>/<objective>/result.json`` (written atomically:
complete or absent), read back on the next call when its config is the one asked for; a partial
run resumes from its latest checkpoint. A config that differs (another budget, another ``--set``)
trains again.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...native.files import write_atomically
from ..build import build_objective
from ..config import TrainConfig, from_dict
from ..trainer import Summary, Trainer

# finish(objective, label, config, summary) -> more entries of the run's result.json
Finish = Callable[[str, str, TrainConfig, Summary], dict]
# write_report(out, budget, runs, echo) -> the report's contents (also written under `out`)
WriteReport = Callable[[Path, str, dict, Callable[[str], None]], dict]


@dataclass(frozen=True)
class Target:
    """One table to retrain (the checkerboard KL, the FD-digits table): see the module docstring."""

    name: str
    objectives: tuple[str, ...]
    labels: Mapping[str, str]
    recipe: Mapping[str, object]
    budgets: Mapping[str, Mapping[str, object]]
    write_report: WriteReport
    finish: Finish | None = None
    describe: str = ""                       # one line for --help

    def label(self, objective: str) -> str:
        return self.labels.get(objective, objective)

    def config(self, budget: str, objective: str, out: Path, overrides: Sequence[str] = ()) -> TrainConfig:
        """The training config of `objective` under `budget`, its output in ``out/<objective>``."""
        if budget not in self.budgets:
            raise ValueError(f"unknown budget {budget!r} for {self.name}; choose one of {', '.join(self.budgets)}")
        values = {"objective.name": objective, **self.recipe, "out": str(out / objective), **self.budgets[budget]}
        return from_dict(TrainConfig().to_dict(), values).with_overrides(list(overrides))


def run(target: Target, budget: str, out: Path, objectives: Sequence[str], overrides: Sequence[str] = (),
        echo: Callable[[str], None] = print) -> dict:
    """Train (or read back) every objective of `objectives` with `target`'s `budget`, then write the report."""
    # Every config and objective first: a bad budget, --set or objective name fails before any training.
    configs = {name: target.config(budget, name, out, overrides) for name in objectives}
    for config in configs.values():
        build_objective(config.objective, 1.0)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name, config in configs.items():
        result_path = out / name / "result.json"
        saved = _read_result(result_path, name, echo)
        if saved is not None and saved.get("config") == config.to_dict():
            echo(f"{target.label(name)}: already trained ({result_path}); reusing its evaluation")
            runs[name] = saved
            continue
        echo(f"{target.label(name)}: training ({budget} budget, {config.steps} steps) in {out / name}")
        started = time.perf_counter()
        summary = Trainer(config, resume=True).train()
        if summary.interrupted:
            raise KeyboardInterrupt(f"{summary.interrupted} during {name}; run the same command again to continue")
        runs[name] = {"config": config.to_dict(), "step": summary.step, "seconds": time.perf_counter() - started,
                      "results": {str(k): v for k, v in summary.results.items()},
                      "samples": str(summary.samples) if summary.samples else None}
        if target.finish is not None:
            runs[name].update(target.finish(name, target.label(name), config, summary))
        record = json.dumps(runs[name], indent=2)
        write_atomically(result_path, lambda file: file.write(record), binary=False)  # complete or absent
    return target.write_report(out, budget, runs, echo)


def _read_result(path: Path, name: str, echo: Callable[[str], None]) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        echo(f"{path}: unreadable ({error}); evaluating {name} again from its checkpoints")
        return None
