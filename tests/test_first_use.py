"""First use as a new user meets it (issue 15): the training progress' first ETA comes from measured
steps, not from start-up (a first step that built flowcore's extension took ~50 s and made a 2-minute
run look like 7 minutes); the bar starts after that first step, so the build's lines are not torn
into it; the run names its logs (metrics.csv, the TensorBoard folder) and says why it waits after
its last step (the final evaluation). flowcore/train/progress.py; README "Quickstart"."""
from __future__ import annotations

import re

import pytest

from flowcore.train.progress import Progress


class Clock:
    """A settable stand-in for time.perf_counter."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_first_eta_comes_from_measured_steps_not_from_start_up(tmp_path, capsys):
    clock = Clock()
    progress = Progress(tmp_path, ["fm"], total_steps=100, start_step=0, enabled=True, bar="auto",
                        tensorboard=False, clock=clock)
    clock.now = 60.0  # the first step built the extension
    progress.step(1, 1.0, 1e-3)
    for step in range(2, 11):
        clock.now += 0.1  # then 10 steps/s
        progress.step(step, 1.0, 1e-3)
    progress.close()
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("step 10/100"))
    assert "10.0 steps/s" in line and "ETA 0m09s" in line, line  # 90 steps left at 10 steps/s
    assert "elapsed 1m01s" in line, line  # the elapsed time is the whole run's


def test_a_resumed_run_measures_from_its_own_first_step(tmp_path, capsys):
    clock = Clock()
    progress = Progress(tmp_path, ["fm"], total_steps=1000, start_step=500, enabled=True, bar="auto",
                        tensorboard=False, clock=clock)
    clock.now = 5.0
    progress.step(501, 1.0, 1e-3)
    for step in range(502, 551):
        clock.now += 0.5
        progress.step(step, 1.0, 1e-3)
    progress.close()
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("step 550/1000"))
    assert "2.0 steps/s" in line and "ETA 3m45s" in line, line


def test_the_bar_starts_after_the_first_step(tmp_path):
    pytest.importorskip("tqdm")
    progress = Progress(tmp_path, ["fm"], total_steps=50, start_step=10, enabled=True, bar="on", tensorboard=False)
    try:
        assert progress.bar is None  # nothing drawn while the first step (maybe a build) runs
        progress.step(11, 1.0, 1e-3)
        assert progress.bar is not None and progress.bar.n == 11 and progress.bar.initial == 11
        progress.step(12, 1.0, 1e-3)
        assert progress.bar.n == 12
    finally:
        progress.close()


def test_the_run_names_its_logs(tmp_path, capsys):
    pytest.importorskip("torch.utils.tensorboard")
    progress = Progress(tmp_path, ["fm"], total_steps=2, start_step=0, enabled=True, bar="auto", tensorboard=True)
    progress.step(1, 1.0, 1e-3)
    progress.close()
    out = capsys.readouterr().out
    assert f"logs: {tmp_path / 'metrics.csv'}" in out, out
    assert f"TensorBoard: {tmp_path / 'tensorboard'}" in out, out


def test_the_last_step_says_that_the_final_evaluation_follows(tmp_path, capsys):
    progress = Progress(tmp_path, ["fm"], total_steps=3, start_step=0, enabled=True, bar="auto", tensorboard=False)
    for step in (1, 2, 3):
        progress.step(step, 1.0, 1e-3)
    progress.close()
    lines = capsys.readouterr().out.splitlines()
    assert any(re.search(r"step 3/3: .*evaluating", line) for line in lines), lines


def test_the_quick_run_prints_its_log_paths(tmp_path, capsys):
    """`flowcore train` (the Quickstart), shortened: the paths of its logs are printed, as the README says."""
    pytest.importorskip("torch.utils.tensorboard")
    from flowcore.cli import main

    out = tmp_path / "quick"
    code = main(["train", "--set", "steps=3", "--set", "eval.samples=512", "--set", "log.figures=false",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert str(out / "metrics.csv") in printed and str(out / "tensorboard") in printed, printed
