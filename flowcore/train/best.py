"""The best checkpoint per metric and per k of a run: ``<out>/best.json`` (docs/math.md §5: the
paper reports FID at each k for the best checkpoint of that k).

After each evaluation the trainer (rank 0) calls :meth:`BestCheckpoints.update` with the step, the
checkpoint of that step (or None when the step has none) and the results ``{k: {metric: value}}``.
For every metric and k whose value beats the record — lower or higher as the metric registry says
(``Metric.lower_is_better``, flowcore.eval.metrics) — the record becomes ``{value, step,
checkpoint}``. The file::

    {"format": 1,
     "metrics": {"fid": {"lower_is_better": true,
                         "k": {"1": {"value": 8.1, "step": 10000, "checkpoint": "best/step-000010000.pt"}, ...}},
                 ...}}

* The checkpoint is kept: the run's checkpoint folder deletes all but its last few files, so a
  best checkpoint is hard-linked (copied where links are impossible) to ``<out>/best/`` and the
  record names that file, relative to ``<out>`` (a run folder stays movable); files there that no
  record names any more are removed. Linking costs no space and no time.
* Written atomically: a temporary file in ``<out>`` moved over ``best.json`` with ``os.replace``, so
  a run killed mid-write leaves the previous record whole.
* A resumed run: records of steps at or after the step being recorded come from a run that was
  later resumed from an earlier checkpoint (their future was discarded), so they are dropped
  first, as progress.py drops their eval.jsonl lines.
* A value that is not finite (a diverged sampler) never becomes a record.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from ..eval.metrics import METRICS
from ..native.files import write_atomically

BEST_FILE = "best.json"
KEPT_FOLDER = "best"
FORMAT = 1


class BestCheckpoints:
    """``<out>/best.json`` and the checkpoints it names under ``<out>/best/`` (module docstring)."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.path = self.out / BEST_FILE

    def read(self) -> dict:
        """The record, ``{"format": 1, "metrics": {...}}`` (empty metrics when there is no file yet)."""
        if not self.path.is_file():
            return {"format": FORMAT, "metrics": {}}
        try:
            record = json.loads(self.path.read_text())
            valid = isinstance(record, dict) and record.get("format") == FORMAT and isinstance(record.get("metrics"),
                                                                                                 dict)
        except (OSError, ValueError) as error:
            raise ValueError(f"{self.path}: not a readable best-checkpoint record ({error}); delete it to start "
                             f"the record over") from None
        if not valid:
            raise ValueError(f"{self.path}: not a best-checkpoint record of format {FORMAT} (expected "
                             f"{{'format': {FORMAT}, 'metrics': {{...}}}}); delete it to start the record over")
        return record

    def forget(self) -> None:
        """Remove the record and the checkpoints it kept (a run started over in the same folder)."""
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.out / KEPT_FOLDER, ignore_errors=True)

    def best(self, metric: str, k: int) -> dict | None:
        """``{value, step, checkpoint}`` of the best `metric` at `k` so far, or None."""
        return self.read()["metrics"].get(metric, {}).get("k", {}).get(str(int(k)))

    def update(self, step: int, checkpoint: str | os.PathLike | None,
               results: Mapping[int, Mapping[str, float]]) -> list[tuple[str, int]]:
        """Record the evaluation `results` ``{k: {metric: value}}`` of `step`, whose weights are in
        `checkpoint` (None: not saved at this step; the record then names no checkpoint). Returns
        the (metric, k) pairs whose best changed, and rewrites best.json when any did."""
        record = self.read()
        metrics: dict = record["metrics"]
        dropped = _drop_records_from(metrics, step)
        improved: list[tuple[str, int]] = []
        for k, row in sorted(results.items()):
            for name, value in row.items():
                value = float(value)
                if not math.isfinite(value):
                    continue
                entry = metrics.setdefault(name, {"lower_is_better": _lower_is_better(name), "k": {}})
                current = entry["k"].get(str(int(k)))
                better = current is None or (value < current["value"] if entry["lower_is_better"]
                                             else value > current["value"])
                if better:
                    entry["k"][str(int(k))] = {"value": value, "step": int(step), "checkpoint": None}
                    improved.append((name, int(k)))
        if improved:
            kept = self._keep(step, checkpoint)
            for name, k in improved:
                metrics[name]["k"][str(k)]["checkpoint"] = kept
        if improved or dropped:
            self._prune(metrics)
            _write_atomically(self.path, record)
        return improved

    def _keep(self, step: int, checkpoint: str | os.PathLike | None) -> str | None:
        """Link (or copy) `checkpoint` to ``best/``; its path relative to ``out``, or None without one."""
        if checkpoint is None or not Path(checkpoint).is_file():
            return None
        source = Path(checkpoint)
        folder = self.out / KEPT_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"step-{int(step):09d}{source.suffix}"
        temporary = folder / f".{target.name}.tmp-{os.getpid()}"
        temporary.unlink(missing_ok=True)
        try:
            os.link(source, temporary)
        except OSError:   # another file system, or one without hard links
            shutil.copyfile(source, temporary)
        os.replace(temporary, target)
        return target.relative_to(self.out).as_posix()

    def _prune(self, metrics: Mapping) -> None:
        """Remove kept checkpoints that no record names any more."""
        folder = self.out / KEPT_FOLDER
        if not folder.is_dir():
            return
        named = {entry["checkpoint"] for metric in metrics.values() for entry in metric["k"].values()}
        for file in folder.iterdir():
            if file.is_file() and f"{KEPT_FOLDER}/{file.name}" not in named:
                file.unlink(missing_ok=True)


def _lower_is_better(name: str) -> bool:
    if name not in METRICS:
        raise ValueError(f"best checkpoint: metric {name!r} is not registered, so which way is better is unknown "
                         f"(registered: {', '.join(METRICS)})")
    return METRICS[name].lower_is_better


def _drop_records_from(metrics: dict, step: int) -> bool:
    """Drop records of steps >= `step` (a run resumed from before them); whether any was dropped."""
    dropped = False
    for entry in metrics.values():
        for k in [k for k, best in entry["k"].items() if best["step"] >= step]:
            del entry["k"][k]
            dropped = True
    return dropped


def _write_atomically(path: Path, record: dict) -> None:
    def dump(file) -> None:
        json.dump(record, file, indent=2)
        file.write("\n")

    write_atomically(path, dump, binary=False)
