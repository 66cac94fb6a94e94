"""The best checkpoint per metric and k of a run (flowcore/train/best.py, docs/math.md §5)."""
import json
import os

import pytest

from flowcore.eval.metrics import register_metric
from flowcore.train.best import BEST_FILE, BestCheckpoints


def checkpoint(out, step: int, content: bytes | None = None):
    path = out / "checkpoints" / f"step-{step:09d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if content is not None else f"weights of step {step}".encode())
    return path


def test_each_k_keeps_its_own_best_value_step_and_checkpoint(tmp_path):
    best = BestCheckpoints(tmp_path)
    assert best.update(100, checkpoint(tmp_path, 100), {1: {"energy": 0.5, "sw2": 0.3}, 2: {"energy": 0.4}}) == [
        ("energy", 1), ("sw2", 1), ("energy", 2)]
    # Step 200: better at k=1 for energy only; worse at k=2; sw2 worse.
    assert best.update(200, checkpoint(tmp_path, 200), {1: {"energy": 0.2, "sw2": 0.9}, 2: {"energy": 0.45}}) == [
        ("energy", 1)]
    assert best.best("energy", 1) == {"value": 0.2, "step": 200, "checkpoint": "best/step-000000200.pt"}
    assert best.best("energy", 2) == {"value": 0.4, "step": 100, "checkpoint": "best/step-000000100.pt"}
    assert best.best("sw2", 1)["step"] == 100 and best.best("sw2", 2) is None
    record = json.loads((tmp_path / BEST_FILE).read_text())
    assert record["metrics"]["energy"]["lower_is_better"] is True
    assert (tmp_path / "best" / "step-000000200.pt").read_bytes() == b"weights of step 200"


def test_a_higher_is_better_metric_keeps_its_largest_value(tmp_path, registries):
    register_metric("accuracy", lambda samples, data: 1.0, lower_is_better=False)
    best = BestCheckpoints(tmp_path)
    best.update(1, None, {4: {"accuracy": 0.7}})
    assert best.update(2, None, {4: {"accuracy": 0.6}}) == []
    assert best.update(3, None, {4: {"accuracy": 0.9}}) == [("accuracy", 4)]
    assert best.best("accuracy", 4) == {"value": 0.9, "step": 3, "checkpoint": None}   # no checkpoint at step 3


def test_kept_checkpoints_outlive_the_rotation_and_unnamed_ones_go(tmp_path):
    best = BestCheckpoints(tmp_path)
    best.update(10, checkpoint(tmp_path, 10), {1: {"energy": 0.5}})
    os.unlink(tmp_path / "checkpoints" / "step-000000010.pt")         # keep_last deleted it
    assert (tmp_path / "best" / "step-000000010.pt").read_bytes() == b"weights of step 10"
    best.update(20, checkpoint(tmp_path, 20), {1: {"energy": 0.1}})
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["step-000000020.pt"]


def test_non_finite_values_never_win(tmp_path):
    best = BestCheckpoints(tmp_path)
    assert best.update(1, None, {1: {"energy": float("nan")}}) == []
    assert not (tmp_path / BEST_FILE).exists()
    best.update(2, None, {1: {"energy": 1.0}})
    assert best.update(3, None, {1: {"energy": float("-inf")}}) == []


def test_a_resumed_run_forgets_records_of_its_discarded_future(tmp_path):
    best = BestCheckpoints(tmp_path)
    best.update(100, checkpoint(tmp_path, 100), {1: {"energy": 0.5}})
    best.update(300, checkpoint(tmp_path, 300), {1: {"energy": 0.1}})
    # Resumed from step 100's checkpoint: step 200 is evaluated again, 300 never happened.
    assert best.update(200, checkpoint(tmp_path, 200), {1: {"energy": 0.3}}) == [("energy", 1)]
    assert best.best("energy", 1)["step"] == 200
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["step-000000200.pt"]


def test_the_record_is_written_atomically_and_a_bad_one_is_named(tmp_path, monkeypatch):
    best = BestCheckpoints(tmp_path)
    best.update(1, None, {1: {"energy": 0.5}})
    before = (tmp_path / BEST_FILE).read_text()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        best.update(2, None, {1: {"energy": 0.1}})
    monkeypatch.undo()
    assert (tmp_path / BEST_FILE).read_text() == before                  # the old record, whole
    assert [p.name for p in tmp_path.iterdir()] == [BEST_FILE]           # and no temporary left
    (tmp_path / BEST_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=f"{BEST_FILE}: not a readable best-checkpoint record.*delete it"):
        best.update(3, None, {1: {"energy": 0.1}})
    (tmp_path / BEST_FILE).write_text('{"metrics": []}')
    with pytest.raises(ValueError, match="not a best-checkpoint record of format 1"):
        best.read()


def test_an_unregistered_metric_is_refused(tmp_path):
    with pytest.raises(ValueError, match="metric 'mystery' is not registered"):
        BestCheckpoints(tmp_path).update(1, None, {1: {"mystery": 0.5}})


def test_forget_removes_the_record_and_the_kept_checkpoints(tmp_path):
    """A run started over in its folder (the quick run) does not inherit the old run's bests."""
    checkpoint = tmp_path / "checkpoints" / "step-000000002.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    best = BestCheckpoints(tmp_path)
    best.update(2, checkpoint, {1: {"kl": 0.5}})
    assert (tmp_path / "best.json").is_file() and any((tmp_path / "best").iterdir())
    best.forget()
    assert not (tmp_path / "best.json").exists() and not (tmp_path / "best").exists()
    assert best.read()["metrics"] == {}
