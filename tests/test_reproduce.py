"""`flowcore reproduce`: the targets' configs, the digits target end to end on its tiny budget, resuming.

The checkerboard target's table is covered by tests/test_train.py (test_reproduce_writes_the_table_
beside_the_paper); here its configs are pinned to what they were before targets existed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from flowcore.cli import main
from flowcore.train import TrainConfig, from_dict, load_config
from flowcore.train.presets import BUDGETS
from flowcore.train.reproduce import TARGETS, reproduce
from flowcore.train.reproduce.digits import ANCHOR_STEPS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = {"lsd": "lsd", "psd_m": "psd-m", "psd_u": "psd-u", "fm": "fm"}


@pytest.mark.parametrize("budget", ["small", "paper"])
def test_checkerboard_configs_are_unchanged(tmp_path, budget):
    made = TARGETS["checkerboard"].config(budget, "esd", tmp_path, ["seed=3"])
    before = from_dict(TrainConfig().to_dict(), {"objective.name": "esd", "data.name": "checkerboard",
                                                 "out": str(tmp_path / "esd"), **BUDGETS[budget]})
    assert made.to_dict() == before.with_overrides(["seed=3"]).to_dict()


@pytest.mark.parametrize("objective", sorted(SHIPPED))
def test_digits_small_budget_trains_the_shipped_recipe(tmp_path, objective):
    """Same network, data, batch, optimiser, EMA and evaluation as configs/digits-*.toml; only the
    length (and the decay start, a third of it as in the configs) is the budget's."""
    shipped = load_config(CONFIGS / f"digits-{SHIPPED[objective]}.toml")
    made = TARGETS["digits"].config("small", objective, tmp_path)
    for section in ("network", "data", "objective", "eval"):
        assert getattr(made, section) == getattr(shipped, section), section
    assert (made.seed, made.backend, made.ema, made.optim.lr, made.optim.clip, made.optim.schedule, made.optim.name) \
        == (shipped.seed, shipped.backend, shipped.ema, shipped.optim.lr, shipped.optim.clip, shipped.optim.schedule,
            shipped.optim.name)
    assert made.optim.decay_start * 3 == made.steps and shipped.optim.decay_start * 3 == shipped.steps
    assert made.out == str(tmp_path / objective)


def _table(markdown: str) -> tuple[list[str], dict[str, list[str]]]:
    """The FD table's k columns and its rows {label: cells}."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    return header[1:], rows


def _grid_rows(path: Path) -> int:
    """Rows of images in a plot_image_grid PNG of 8×8 digits (scale 4, pad 2: 34 pixels a row, 2 more)."""
    height = Image.open(path).height
    assert (height - 2) % 34 == 0, height
    return (height - 2) // 34


def test_digits_tiny_end_to_end_and_resume(tmp_path, capsys):
    args = ["reproduce", "digits", "--budget", "tiny", "--out", str(tmp_path), "--objectives", "lsd,fm"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.count("training (tiny budget, 2 steps)") == 2

    columns, rows = _table((tmp_path / "fd.md").read_text())
    assert columns == ["1", "2", "4", "8", "16", str(ANCHOR_STEPS)]
    assert list(rows) == ["LSD (flow map)", "FM (k-step Euler)", f"FM, {ANCHOR_STEPS}-step Heun (diagonal ODE)"]
    number = re.compile(r"^\d+\.\d\d$")
    for label in ("LSD (flow map)", "FM (k-step Euler)"):   # k = 1 … 16; the anchor's column is not theirs
        assert all(number.match(cell) for cell in rows[label][:5]) and rows[label][5] == "—", rows[label]
    anchor = rows[f"FM, {ANCHOR_STEPS}-step Heun (diagonal ODE)"]
    assert anchor[:5] == ["—"] * 5 and number.match(anchor[5])
    assert re.search(r"Noise floor \d+\.\d\d", (tmp_path / "fd.md").read_text())

    report = json.loads((tmp_path / "fd.json").read_text())
    assert report["budget"] == "tiny" and report["metric"] == "fd_digits" and report["steps"] == [1, 2, 4, 8, 16, 64]
    assert set(report["fd"]) == set(rows) and report["floor"] > 0
    assert set(report["timings"]) == {"LSD", "FM"} and report["total_seconds"] > 0
    for label, cells in rows.items():   # the markdown shows the JSON's numbers
        numbers = report["fd"][label]
        assert [f"{numbers[k]:.2f}" if k in numbers else "—" for k in map(str, report["steps"])] == cells
    lsd, fm = report["runs"]["lsd"], report["runs"]["fm"]
    # the flow-map row is the trainer's own evaluation; FM's rows are scored apart from it
    assert lsd["rows"][0]["results"] == lsd["results"] and lsd["rows"][0]["method"] == "flow_map"
    assert [(row["method"], row["steps"]) for row in fm["rows"]] == [("euler", [1, 2, 4, 8, 16]),
                                                                     ("heun", [ANCHOR_STEPS])]
    assert fm["rows"][0]["results"]["1"]["fd_digits"] != fm["results"]["1"]["fd_digits"]  # not the flow map

    # one grid per row: a row of images per k, then the data; all of them in samples.png
    assert _grid_rows(tmp_path / "lsd" / "grid_flow_map.png") == 6
    assert _grid_rows(tmp_path / "fm" / "grid_euler.png") == 6
    assert _grid_rows(tmp_path / "fm" / "grid_heun.png") == 2
    assert Image.open(tmp_path / "samples.png").height > 0

    # Again: both read back, nothing trained or evaluated, the same table.
    table = (tmp_path / "fd.md").read_text()
    checkpoints = sorted(p.name for p in (tmp_path / "lsd" / "checkpoints").iterdir())
    assert reproduce("digits", "tiny", tmp_path, ["lsd", "fm"], echo=print)["fd"] == report["fd"]
    again = capsys.readouterr().out
    assert again.count("already trained") == 2 and "training (" not in again
    assert (tmp_path / "fd.md").read_text().split("Timings")[0] == table.split("Timings")[0]
    assert sorted(p.name for p in (tmp_path / "lsd" / "checkpoints").iterdir()) == checkpoints

    # FM stopped after its first step (its result and last checkpoint gone): it resumes from step 1,
    # and its numbers come out the same (a resumed run is exact, the evaluation seeded).
    (tmp_path / "fm" / "result.json").unlink()
    *_, last = sorted((tmp_path / "fm" / "checkpoints").glob("*.pt"))
    last.unlink()
    resumed = reproduce("digits", "tiny", tmp_path, ["lsd", "fm"])
    out = capsys.readouterr().out
    assert out.count("already trained") == 1 and "resumed from" in out and "at step 1" in out
    assert resumed["fd"] == report["fd"]
    assert json.loads((tmp_path / "fm" / "result.json").read_text())["step"] == 2


def test_bad_budget_or_objective_fails_before_training(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "digits", "--budget", "paper", "--out", str(out)]) == 2
    assert "unknown budget 'paper' for digits; choose one of small, tiny" in capsys.readouterr().err
    assert main(["reproduce", "digits", "--budget", "tiny", "--out", str(out), "--objectives", "lsd,lsdd"]) == 2
    assert "unknown objective 'lsdd'" in capsys.readouterr().err
    assert main(["reproduce", "digits", "--budget", "tiny", "--out", str(out), "--set", "optim.lrr=1"]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert not out.exists()
