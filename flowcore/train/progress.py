"""What a run reports while it trains, on rank 0 only.

* a tqdm bar (loss, steps/s, ETA) on a terminal — or, when stderr is not a terminal, one plain line
  every tenth of the run. Rates and ETAs are measured from the end of the process's first step: that
  step includes start-up work (the one-time build of flowcore's extension, about a minute, which
  announces itself) and would make a 2-minute run look like a 7-minute one; the bar starts then too;
* after the last step, a line saying that the final checkpoint and evaluation follow, and at the
  end, the paths of the logs;
* ``metrics.csv``: step, loss, each term's mean loss, gradient norm, learning rate, step time,
  skipped steps — one row every `log.every` steps (rows past a resumed step are dropped);
* TensorBoard scalars under ``tensorboard/`` (the same, plus evaluation metrics), when the
  tensorboard package is installed;
* ``eval.jsonl``: one line per evaluation — step, weights, ``results`` ``{k: {metric: value}}``
  and ``floors`` ``{metric: noise floor}`` of the metrics that declare one (flowcore.eval.evaluate,
  EvaluationResults; ``{}`` when none does), so a reader can tell a gap from noise.
"""
from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _keep_rows_up_to(path: Path, step: int) -> None:
    """Drop rows logged after `step` by a run that was then resumed from `step`."""
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= step]
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(kept)


def _keep_evaluations_up_to(path: Path, step: int) -> None:
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= step))


class Progress:
    def __init__(self, out: Path, terms: list[str], total_steps: int, start_step: int, *, enabled: bool,
                 bar: str = "auto", tensorboard: bool = True, clock: Callable[[], float] = time.perf_counter):
        self.enabled, self.total, self.start = enabled, total_steps, start_step
        self.terms = list(terms)
        self.columns = ["step", "loss"] + [f"loss_{t}" for t in self.terms] + ["grad_norm", "lr", "step_time",
                                                                              "skipped"]
        self.csv_path = out / "metrics.csv"
        self.eval_path = out / "eval.jsonl"
        self.clock = clock
        self.started = clock()
        self.measured_from: tuple[int, float] | None = None  # (step, time) when this process's first step ended
        self.bar = None
        self._make_bar = None  # tqdm, set up after the first step
        self.writer = None
        self.print_every = max(1, (total_steps - start_step) // 10) if bar != "off" else None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        if start_step == 0:  # a run starting over (the quick run) keeps nothing of the last one's logs
            self.csv_path.unlink(missing_ok=True)
            self.eval_path.unlink(missing_ok=True)
        _keep_rows_up_to(self.csv_path, start_step)
        _keep_evaluations_up_to(self.eval_path, start_step)
        new = not self.csv_path.is_file() or self.csv_path.stat().st_size == 0
        self.csv_file = open(self.csv_path, "a", newline="")  # noqa: SIM115 - open for the run, closed in close()
        self.csv = csv.writer(self.csv_file)
        if new:
            self.csv.writerow(self.columns)
        show_bar = bar == "on" or (bar == "auto" and sys.stderr.isatty())
        if show_bar:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self.message("note: tqdm is not installed; progress is printed as lines (pip install tqdm)")
            else:
                self._make_bar = lambda step: tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True,
                                                   smoothing=0.05)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.message("note: tensorboard is not installed; no TensorBoard logs (pip install tensorboard)")
            else:
                self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def step(self, step: int, loss: float, lr: float) -> None:
        """After every step: move the bar (made after the first one), or print a line every tenth of the
        run, its rate and ETA measured from the end of the first step."""
        if not self.enabled:
            return
        now = self.clock()
        first = self.measured_from is None
        if first:
            self.measured_from = (step, now)
        if self._make_bar is not None:
            if self.bar is None:
                self.bar = self._make_bar(step)
            else:
                self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.2g}", refresh=False)
        elif self.print_every and ((step - self.start) % self.print_every == 0 or step == self.total):
            elapsed = now - self.started
            if first:
                speed = f"first step {_format_seconds(elapsed)} (start-up included)"
            else:
                measured_step, measured_at = self.measured_from
                rate = (step - measured_step) / (now - measured_at) if now > measured_at else float("nan")
                eta = (self.total - step) / rate if rate > 0 else float("nan")
                speed = f"{rate:.1f} steps/s  elapsed {_format_seconds(elapsed)}  ETA {_format_seconds(eta)}"
            self.message(f"step {step}/{self.total}  loss {loss:.4g}  lr {lr:.2g}  {speed}")
        if step == self.total:  # the trainer then writes a checkpoint and evaluates: say why it waits
            self.message(f"step {step}/{self.total}: training done; writing the last checkpoint and evaluating the "
                         "final weights…")

    def log(self, step: int, loss: float, terms: dict[str, float], grad_norm: float, lr: float, step_time: float,
            skipped: int) -> None:
        if not self.enabled:
            return
        self.csv.writerow([step, f"{loss:.7g}"] + [f"{terms[t]:.7g}" for t in self.terms]
                          + [f"{grad_norm:.7g}", f"{lr:.7g}", f"{step_time:.5f}", skipped])
        self.csv_file.flush()
        if self.writer is not None:
            self.writer.add_scalar("loss/total", loss, step)
            for name, value in terms.items():
                self.writer.add_scalar(f"loss/{name}", value, step)
            self.writer.add_scalar("grad_norm", grad_norm, step)
            self.writer.add_scalar("lr", lr, step)
            self.writer.add_scalar("step_time", step_time, step)
            self.writer.add_scalar("skipped", skipped, step)

    def evaluation(self, step: int, weights: str, results: dict[int, dict[str, float]], table: str) -> None:
        """One evaluation: the table printed, a line of eval.jsonl (with the results' noise floors,
        when `results` is an EvaluationResults) and TensorBoard scalars."""
        if not self.enabled:
            return
        self.message(f"evaluation at step {step} ({weights}):\n{table}")
        floors = dict(getattr(results, "floors", {}))
        with open(self.eval_path, "a") as handle:
            handle.write(json.dumps({"step": step, "weights": weights,
                                     "results": {str(k): v for k, v in results.items()},
                                     "floors": floors}) + "\n")
        if self.writer is not None:
            for k, row in results.items():
                for metric, value in row.items():
                    self.writer.add_scalar(f"eval/{metric}_{k}step", value, step)
            for metric, value in floors.items():
                self.writer.add_scalar(f"eval/{metric}_floor", value, step)
            self.writer.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.csv_file.close()
        logs = f"logs: {self.csv_path}"
        if self.writer is not None:
            self.writer.close()
            logs += f"; TensorBoard: {self.writer.log_dir} (tensorboard --logdir {self.writer.log_dir})"
        self.message(logs)

    def loss_series(self) -> dict[str, list[float]]:
        """The loss columns of metrics.csv, for the loss figure."""
        from ..eval.plots import read_loss_csv

        columns = read_loss_csv(self.csv_path)
        keep = ["step", "loss"] + [f"loss_{t}" for t in self.terms]
        return {name.removeprefix("loss_") if name != "loss" else "total": columns[name]
                for name in keep if name in columns}
