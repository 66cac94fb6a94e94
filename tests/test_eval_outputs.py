"""The machine-readable outputs of an evaluation carry the metrics' noise floors: the trainer's
eval.jsonl (flowcore/train/progress.py) and `flowcore eval --json` (flowcore/cli/train.py),
as EvaluationResults.floors holds them (flowcore/eval/evaluate.py, docs/design.md)."""
import json

from flowcore.cli import main
from flowcore.eval.evaluate import EvaluationResults
from flowcore.eval.metrics import register_metric
from flowcore.train import Trainer, load_config
from flowcore.train.progress import Progress

TINY = ["steps=2", "network.width=16", "network.depth=2", "data.batch=64", "eval.samples=256", "eval.steps=1,2",
        "eval.ema=0.999", "log.tensorboard=false", "log.figures=false", "log.progress=off", "checkpoint.every=0"]


def mean_gap(samples, data):
    return float((samples.mean() - data.mean()).abs())


def data_floor(data):
    """A floor that depends on the data, so the test sees it was computed from them."""
    return float(data.shape[0]) / 1000


def test_eval_jsonl_lines_carry_the_floors_and_an_empty_map_without_any(tmp_path):
    progress = Progress(tmp_path, ["fm"], 10, 0, enabled=True, bar="off", tensorboard=False)
    progress.evaluation(5, "EMA 0.999", EvaluationResults({1: {"fd": 3.0}}, {"fd": 0.25}), "table")
    progress.evaluation(10, "EMA 0.999", {1: {"energy": 0.5}}, "table")       # a plain dict: no floors
    progress.close()
    first, second = (json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines())
    assert first == {"step": 5, "weights": "EMA 0.999", "results": {"1": {"fd": 3.0}}, "floors": {"fd": 0.25}}
    assert second["floors"] == {}


def test_a_training_run_and_flowcore_eval_write_the_floors(tmp_path, registries, capsys):
    register_metric("floored_gap", mean_gap, floor=data_floor)
    Trainer(load_config(None, TINY + ["eval.metrics=floored_gap,energy", f"out={tmp_path}"])).train()
    (line,) = (tmp_path / "eval.jsonl").read_text().splitlines()
    written = json.loads(line)
    assert written["floors"] == {"floored_gap": 0.256}                       # energy declares none
    assert set(written["results"]) == {"1", "2"} and set(written["results"]["1"]) == {"floored_gap", "energy"}
    assert main(["eval", str(tmp_path), "--steps", "1", "--n", "128", "--json", str(tmp_path / "eval.json")]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["floors"] == {"floored_gap": 0.128} and set(report["results"]["1"]) == {"floored_gap", "energy"}
