"""The trainer: configs, tiny runs of every shipped config, exact resume, checkpoints that are
atomic and never run pickled code, the NaN guard, SIGINT, and the train/eval/sample commands."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import torch

from flowcore.terms import Evaluation
from flowcore.cli import main
from flowcore.train import CheckpointError, ConfigError, TrainConfig, Trainer, TrainingStopped, from_dict, load_config
from flowcore.train import checkpoint as ckpt
from flowcore.train.batch_stream import BatchStream, check_split
from flowcore.train.build import build_objective
from flowcore.train.config import ObjectiveConfig, OptimConfig
from flowcore.train.presets import BUDGETS, QUICK
from flowcore.train.schedule import learning_rate

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = ["steps=4", "network.width=16", "network.depth=2", "data.batch=64", "eval.samples=512", "eval.steps=1,2",
        "eval.ema=0.999", "log.every=1", "log.tensorboard=false", "log.figures=false", "log.progress=off",
        "checkpoint.every=0"]


def tiny(tmp_path, *more, path=None) -> TrainConfig:
    return load_config(path, TINY + [f"out={tmp_path}"] + list(more))


# ----------------------------------------------------------------------------------- config


def test_defaults_are_the_paper_recipe():
    c = TrainConfig()
    assert (c.network.width, c.network.depth, c.network.activation) == (512, 5, "gelu")
    assert c.optim.lr == 1e-3 and c.optim.clip == 10 and c.optim.schedule == "paper" and c.optim.decay_start == 35000
    assert c.ema == [0.999, 0.9999] and c.objective.eta == 0.75 and c.eval.samples == 65536
    assert c.autocast == "auto" and c.backend == "auto"


def test_quick_preset_is_the_shipped_quick_config():
    assert tomllib.loads(QUICK) == tomllib.loads((CONFIGS / "checkerboard-quick.toml").read_text())


def test_small_config_is_the_reproduce_budget():
    shipped = load_config(CONFIGS / "checkerboard-small.toml")
    budget = from_dict(TrainConfig().to_dict(), {"objective.name": "lsd", **BUDGETS["small"]})
    assert shipped.to_dict() == budget.with_overrides([f"out={shipped.out}"]).to_dict()


def test_overrides_are_typed():
    c = load_config(None, ["optim.lr=3e-4", "eval.steps=1,4", "network.sigma=0.5", "objective.learned_weight=true",
                           "data.name=two_moons", "ema=[0.99]", "eval.ema=0", "steps=10"])
    assert c.optim.lr == 3e-4 and c.eval.steps == [1, 4] and c.network.sigma == 0.5
    assert c.objective.learned_weight is True and c.data.name == "two_moons" and c.ema == [0.99] and c.steps == 10
    assert load_config(None, ["eval.steps=8"]).eval.steps == [8]
    assert load_config(None, ["network.sigma=data"]).network.sigma == "data"
    assert from_dict(c.to_dict()).to_dict() == c.to_dict()           # round trip
    assert tomllib.loads(c.to_toml()) == c.to_dict()


@pytest.mark.parametrize("override, message", [
    (["optim.lrr=1"], "unknown key 'optim.lrr'; did you mean 'optim.lr'?"),
    (["stepz=1"], "unknown key 'stepz'; did you mean 'steps'?"),
    (["steps=many"], "steps expects int, got 'many'"),
    (["steps=1.5"], "steps expects int, got 1.5"),
    (["optim.lr=fast"], "optim.lr expects float, got 'fast'"),
    (["optim.schedule=linear"], "optim.schedule = 'linear': choose one of paper, constant, cosine"),
    (["objective.eta=1.5"], "objective.eta = 1.5: the diagonal share must lie in [0, 1)"),
    (["eval.ema=0.95"], "eval.ema = 0.95: must be 0 (the raw weights) or one of ema"),
    (["optim=1"], "optim is a section"),
    (["steps"], "expected key=value"),
    (["log.tensorboard=maybe"], "log.tensorboard expects bool"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=None) as error:
        load_config(None, override)
    assert message in str(error.value)


def test_eta_for_an_objective_without_a_diagonal_share_is_an_error():
    assert build_objective(ObjectiveConfig(name="lsd", eta=0.5), 1.0).split(100) == (50, 50)
    with pytest.raises(ValueError, match="objective.eta = 0.5: the built-in 'fm' has no diagonal share"):
        build_objective(ObjectiveConfig(name="fm", eta=0.5), 1.0)


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = 10\n[optim]\nlearning_rate = 1e-3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown key 'optim.learning_rate'"):
        load_config(bad)
    bad.write_text("steps = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="no config file"):
        load_config(tmp_path / "absent.toml")


def test_schedules():
    paper = OptimConfig()
    assert learning_rate(paper, 0, 100) == learning_rate(paper, 35000, 100) == 1e-3
    assert learning_rate(paper, 140000, 100) == pytest.approx(5e-4)
    cosine = OptimConfig(schedule="cosine", min_lr=1e-5)
    assert learning_rate(cosine, 0, 101) == 1e-3 and learning_rate(cosine, 100, 101) == pytest.approx(1e-5)
    assert learning_rate(OptimConfig(schedule="constant"), 10 ** 6, 10) == 1e-3


# ----------------------------------------------------------------------------------- batches


def test_shards_partition_the_global_batch():
    objective = build_objective(ObjectiveConfig(name="psd_u"), 0.5)
    from flowcore.data import make_source

    source = make_source("checkerboard", 48, seed=0)
    stream = BatchStream(objective, source, torch.Generator().manual_seed(1), torch.device("cpu"), shards=4)
    batch = stream.next()
    shards = [stream.shard(batch, j) for j in range(4)]
    assert torch.equal(torch.cat([s.x1 for s in shards]).sort(0).values, batch.x1.sort(0).values)
    for j, shard in enumerate(shards):
        assert tuple(len(v) for v in (shard.x1, shard.x0)) == (12, 12)
        assert {name: len(next(iter(t.values()))) for name, t in shard.times.items()} == {"fm": 9, "psd_u": 3}
        assert torch.equal(shard.x0[:9], batch.x0[0:36][j::4])
    with pytest.raises(ValueError, match=r"data.batch = 50 cannot be split into 4 equal shards.*try data.batch = 64"):
        check_split(objective, 50, 4)


def test_a_batch_larger_than_memory_is_refused_before_it_is_drawn(tmp_path, capsys, monkeypatch):
    from flowcore.train import batch_stream

    monkeypatch.setattr(batch_stream, "available_memory", lambda device: (10 ** 7, "available RAM"))
    assert main(["train", "--out", str(tmp_path), *(f"--set={o}" for o in TINY), "--set=data.batch=1e9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    # x1, x0: 16 bytes a sample; the widest layer of the 16-wide network: 64 bytes a sample
    assert err.startswith("flowcore train: data.batch = 1000000000 needs at least 80.0 GB for one step (x1, x0: "
                          "16 bytes a sample; the network's largest activation: 64 bytes a sample") and \
        "more than the 10.0 MB of available RAM; lower data.batch, or split it with accumulate" in err, err
    # 100000 samples: 1.6 MB of data fit in 5 MB, not with the network's 6.4 MB; 4 micro-batches fit
    monkeypatch.setattr(batch_stream, "available_memory", lambda device: (5 * 10 ** 6, "available RAM"))
    with pytest.raises(ValueError, match=r"^data.batch = 100000 needs at least 8.0 MB"):
        Trainer(tiny(tmp_path / "activations", "data.batch=100000"))
    Trainer(tiny(tmp_path / "accumulated", "data.batch=100000", "accumulate=4"))
    monkeypatch.undo()
    memory = batch_stream.available_memory(torch.device("cpu"))
    assert memory is not None and memory[0] > 0
    with pytest.raises(ValueError, match=r"^data.batch = 10000000000000 needs at least 800.0 TB"):
        Trainer(tiny(tmp_path / "huge", "data.batch=1e13"))


# ----------------------------------------------------------------------------------- training


# The image configs (digits-*, cifar10-*) have their own test, tests/test_configs_images.py: they need
# an image net and, for CIFAR-10, a data folder the test writes.
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("checkerboard-*.toml")), ids=lambda p: p.stem)
def test_every_shipped_checkerboard_config_trains(path, tmp_path):
    summary = Trainer(tiny(tmp_path, path=path)).train()
    assert summary.step == 4 and summary.skipped == 0
    assert summary.checkpoint.is_file() and set(summary.results) == {1, 2}
    assert all(math.isfinite(row["kl"]) for row in summary.results.values())
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("step,loss,")


def _state(trainer: Trainer) -> dict:
    return {"model": [p.detach().clone() for p in trainer.parameters],
            "ema": {d: [p.clone() for p in s] for d, s in trainer.ema.shadows.items()},
            "optimizer": trainer.optimizer.state_dict(), "generator": trainer.generator.get_state(),
            "data": trainer.data.state_dict()["generator"]}


def _assert_equal_states(a: dict, b: dict) -> None:
    assert all(torch.equal(x, y) for x, y in zip(a["model"], b["model"]))
    for decay in a["ema"]:
        assert all(torch.equal(x, y) for x, y in zip(a["ema"][decay], b["ema"][decay]))
    for key, state in a["optimizer"]["state"].items():
        assert all(torch.equal(state[name], b["optimizer"]["state"][key][name]) for name in state)
    assert torch.equal(a["generator"], b["generator"]) and torch.equal(a["data"], b["data"])


def _signalled(trainer: Trainer, signals: int) -> None:
    """`trainer`'s second step receives SIGINT `signals` times, as from Ctrl-C pressed that often."""
    step = trainer.train_step

    def step_and_signal():
        if trainer.step == 1:
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGINT)
        return step()

    trainer.train_step = step_and_signal


def test_sigint_says_at_once_that_the_run_stops_after_this_step(tmp_path, capfd):
    """The first step builds the extension for about a minute: a Ctrl-C then said nothing until it ended."""
    trainer = Trainer(tiny(tmp_path))
    _signalled(trainer, 1)
    summary = trainer.train()
    assert summary.interrupted == "SIGINT" and summary.step == 2
    err = capfd.readouterr().err
    assert err.count("SIGINT: stopping after this step (press Ctrl-C again to stop now)\n") == 1, err


def test_a_second_sigint_stops_at_once_and_the_notice_is_not_repeated(tmp_path, capfd):
    trainer = Trainer(tiny(tmp_path))
    _signalled(trainer, 2)
    # the handler the trainer finds is Python's default here, also where the suite runs as a background
    # job (which inherits SIGINT ignored)
    found = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.train()
    finally:
        signal.signal(signal.SIGINT, found)
    assert capfd.readouterr().err.count("stopping after this step") == 1


def test_resume_continues_bit_for_bit(tmp_path):
    # PSD-U draws γ, the learned weight adds a head: every random stream and parameter must resume
    more = ["steps=6", "objective.name=psd_u", "objective.learned_weight=true"]
    straight = Trainer(tiny(tmp_path / "straight", *more))
    straight.train()
    first = Trainer(tiny(tmp_path / "split", *more))       # the same run, interrupted after 3 steps
    step = first.train_step

    def step_then_interrupt():
        if first.step == 2:
            first._signal = "SIGINT"              # what the signal handler does
        return step()

    first.train_step = step_then_interrupt
    interrupted = first.train()
    assert interrupted.interrupted == "SIGINT" and interrupted.step == 3 and not interrupted.results
    second = Trainer(tiny(tmp_path / "split", *more), resume=True)
    assert second.step == 3 and second.resumed_from.name == "step-000000003.pt"
    second.train()
    _assert_equal_states(_state(straight), _state(second))
    rows = [line.split(",")[0] for line in (tmp_path / "split" / "metrics.csv").read_text().splitlines()[1:]]
    assert rows == ["1", "2", "3", "4", "5", "6"]


def test_an_existing_run_needs_resume(tmp_path):
    Trainer(tiny(tmp_path)).train()
    with pytest.raises(FileExistsError, match="already holds checkpoints.*--resume"):
        Trainer(tiny(tmp_path))


def test_accumulation_matches_one_big_batch(tmp_path):
    one = Trainer(tiny(tmp_path / "one", "steps=3"))
    one.train()
    two = Trainer(tiny(tmp_path / "two", "steps=3", "accumulate=2"))
    two.train()
    for a, b in zip(one.parameters, two.parameters):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    summary = Trainer(tiny(tmp_path, "autocast=bf16", "steps=2")).train()
    assert summary.skipped == 0 and all(math.isfinite(r["kl"]) for r in summary.results.values())


def test_autocast_wrapper_keeps_the_native_jvps():
    """Under bf16 autocast the compiled objective still finds jvp and jvp_many (ESD's merged call)
    and gets its outputs back in the input's dtype."""
    from flowcore.nn import FlowMapMLP
    from flowcore.train.precision import wrap

    net = FlowMapMLP(2, 16, 2)
    wrapped = wrap(net, torch.bfloat16, torch.device("cpu"))
    s, t, x = torch.rand(5), torch.rand(5), torch.randn(5, 2)
    tangents = [(torch.ones(5), None, None), (None, None, torch.randn(5, 2))]
    v, dots = wrapped.jvp_many(s, t, x, tangents, live=[True, False])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want_v, want_dots = net.jvp_many(s, t, x, tangents, live=[True, False])
    assert v.dtype == torch.float32 and all(d.dtype == torch.float32 for d in dots)
    assert torch.equal(v, want_v.float()) and all(torch.equal(d, w.float()) for d, w in zip(dots, want_dots))
    assert dots[0].requires_grad and not dots[1].requires_grad


def test_tensorboard_and_figures(tmp_path):
    summary = Trainer(tiny(tmp_path, "log.tensorboard=true", "log.figures=true", "steps=2")).train()
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert summary.samples == tmp_path / "samples.png" and summary.samples.stat().st_size > 0
    assert summary.losses.is_file()


# ----------------------------------------------------------------------------------- NaN guard


def _poison(trainer: Trainer, steps: set[int]) -> None:
    """Make the loss NaN on the given (0-based) steps."""
    compiled = trainer.compiled

    def poisoned(*args, **kwargs):
        result = compiled(*args, **kwargs)
        if trainer.step in steps:
            return Evaluation(result.loss * float("nan"), result.terms)
        return result

    trainer.compiled = poisoned


def test_nan_steps_are_skipped_and_counted(tmp_path):
    trainer = Trainer(tiny(tmp_path, "steps=5", "nan_guard=3"))
    _poison(trainer, {0, 2, 3})
    before = [p.detach().clone() for p in trainer.parameters]
    trainer.train_step()                                         # step 0: skipped
    assert trainer.skipped == 1 and trainer.ema.updates == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.parameters))
    assert all(p.grad is None for p in trainer.parameters)
    summary = trainer.train()
    assert summary.step == 5 and summary.skipped == 3 and trainer.ema.updates == 2
    csv = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv[1].startswith("2,") and "nan" in csv[2] and csv[-1].split(",")[-1] == "3"


def test_nan_guard_stops_after_n_in_a_row(tmp_path):
    trainer = Trainer(tiny(tmp_path, "steps=10", "nan_guard=3"))
    _poison(trainer, {1, 2, 3, 4})
    with pytest.raises(TrainingStopped, match=r"stopped at step 4: 3 consecutive steps had a non-finite loss"):
        trainer.train()
    assert trainer.skipped == 3 and trainer.ema.updates == 1


# ----------------------------------------------------------------------------------- checkpoints


def test_keep_last_k(tmp_path):
    Trainer(tiny(tmp_path, "steps=5", "checkpoint.every=1", "checkpoint.keep_last=2")).train()
    assert [p.name for _, p in ckpt.CheckpointDir(tmp_path / "checkpoints").steps()] == \
        ["step-000000004.pt", "step-000000005.pt"]


def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny(tmp_path, "steps=2"))
    trainer.train()
    good = trainer.checkpoints.latest()
    content = good.read_bytes()

    def crash(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    trainer.step = 3
    with pytest.raises(OSError, match="disk full"):
        trainer.save()
    assert trainer.checkpoints.latest() == good and good.read_bytes() == content
    assert sorted(p.name for p in good.parent.iterdir()) == [good.name]         # no temporary left
    monkeypatch.undo()
    assert ckpt.read(good)["step"] == 2


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    trainer = Trainer(tiny(tmp_path, "steps=1"))
    trainer.train()
    path = trainer.checkpoints.latest()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{path} is not a flowcore checkpoint \(it cannot be read, truncated "
                                              r"or corrupt\?"):
        ckpt.read(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        ckpt.read(tmp_path / "absent.pt")


class _Payload:
    """Unpickling this would create a file: proof that pickled code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_objects_are_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "model": {}, "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=rf"{path} is not a flowcore checkpoint \(it holds pickled objects"):
        ckpt.read(path)
    assert not marker.exists()
    torch.save({"format": "something else"}, path)
    with pytest.raises(CheckpointError, match=r"is not a flowcore checkpoint \(format 'something else'"):
        ckpt.read(path)


def test_sigint_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "flowcore.cli", "train", "--out", str(out)]
        + [f"--set={o}" for o in TINY + ["steps=1000000"]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = out / "metrics.csv"
    try:
        # until 3 steps are logged (a cold kernel build on a busy machine can take minutes)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 4:
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # never leave a million-step run behind
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted by SIGINT at step" in stdout and f"continue with: flowcore train --resume {out}" in stdout
    assert stdout.count("SIGINT") == 1, stdout                     # told once
    assert stderr.count("SIGINT: stopping after this step (press Ctrl-C again to stop now)") == 1, stderr  # at once
    state = ckpt.read(ckpt.resolve(out))
    assert state["step"] >= 3
    assert int(metrics.read_text().splitlines()[-1].split(",")[0]) == state["step"]


# ----------------------------------------------------------------------------------- commands


def test_train_eval_sample_commands(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(tiny(tmp_path / "run").to_toml())
    assert main(["train", str(config), "--set", "steps=3", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "trained 3 steps" in out and "checkerboard KL" in out and "paper" in out
    assert main(["eval", str(tmp_path / "run"), "--steps", "1", "2", "--n", "512",
                 "--json", str(tmp_path / "eval.json")]) == 0
    assert "kl" in capsys.readouterr().out
    import json

    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["step"] == 3 and set(results["results"]) == {"1", "2"}
    assert main(["sample", str(tmp_path / "run"), "--steps", "1", "4", "--n", "300", "--out",
                 str(tmp_path / "samples")]) == 0
    import numpy as np

    with np.load(tmp_path / "samples" / "samples.npz") as arrays:
        assert sorted(arrays.files) == ["k1", "k4"] and arrays["k1"].shape == (300, 2)
    assert (tmp_path / "samples" / "samples_k4.png").is_file()
    # a custom grid: the uniform grid written out gives the same samples as --steps
    assert main(["sample", str(tmp_path / "run"), "--steps", "4", "--grid", "0,0.25,0.5,0.75,1", "--grid", "0,0.9,1",
                 "--n", "300", "--out", str(tmp_path / "grid")]) == 0
    with np.load(tmp_path / "grid" / "samples.npz") as arrays:
        assert sorted(arrays.files) == ["grid-0-0.25-0.5-0.75-1", "grid-0-0.9-1", "k4"]  # each named by its times
        assert np.array_equal(arrays["grid-0-0.25-0.5-0.75-1"], arrays["k4"])
        assert not np.allclose(arrays["grid-0-0.9-1"], arrays["k4"])
    assert (tmp_path / "grid" / "samples_grid-0-0.9-1.png").is_file()
    # the ODE of the diagonal as a check, in eval and sample
    assert main(["eval", str(tmp_path / "run"), "--steps", "2", "--n", "512", "--method", "heun",
                 "--json", str(tmp_path / "heun.json")]) == 0
    heun = json.loads((tmp_path / "heun.json").read_text())
    assert heun["method"] == "heun" and heun["results"]["2"]["kl"] != results["results"]["2"]["kl"]
    assert main(["sample", str(tmp_path / "run"), "--steps", "2", "--n", "50", "--method", "euler",
                 "--out", str(tmp_path / "ode")]) == 0
    with np.load(tmp_path / "ode" / "samples.npz") as arrays:
        assert arrays.files == ["euler_k2"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["sample", str(tmp_path / "run"), "--grid", "0,0.7,0.5,1", "--out", str(tmp_path / "bad")])
    assert "strictly increasing" in capsys.readouterr().err
    # mistakes are one line on stderr
    assert main(["train", str(config), "--set", "optim.lrr=1"]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing-here")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_the_quick_run_starts_over_but_never_removes_another_run(tmp_path, capsys):
    sets = [f"--set={o}" for o in TINY + ["steps=2"]]
    quick = tmp_path / "quick"
    assert main(["train", "--out", str(quick), *sets]) == 0
    assert main(["train", "--out", str(quick), *sets]) == 0
    assert "started the quick run over" in capsys.readouterr().out
    # logs left by a run that stopped before its first checkpoint (another objective: other columns)
    (tmp_path / "crashed").mkdir()
    (tmp_path / "crashed" / "metrics.csv").write_text("step,loss,loss_psd,grad_norm\n0,1.0,1.0,1.0\n")
    assert main(["train", "--out", str(tmp_path / "crashed"), *sets]) == 0
    rows = (tmp_path / "crashed" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,loss_fm,loss_lsd,") and [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    other = tmp_path / "other"  # a different run (here: another step count) in the same place
    assert main(["train", "--out", str(other), *sets[:-1], "--set=steps=3"]) == 0
    kept = ckpt.resolve(other)
    assert main(["train", "--out", str(other), *sets]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err and kept.is_file()


def test_distillation_from_a_trained_teacher(tmp_path):
    teacher = Trainer(tiny(tmp_path / "teacher", "objective.name=fm", "steps=2")).train()
    student = Trainer(tiny(tmp_path / "student", "objective.name=lmd", f"objective.teacher={teacher.out}"))
    assert student.train().skipped == 0
    with pytest.raises(ValueError, match="distils a teacher: set objective.teacher"):
        Trainer(tiny(tmp_path / "orphan", "objective.name=lmd"))


def test_reproduce_writes_the_table_beside_the_paper(tmp_path, capsys):
    overrides = [o for o in TINY if not o.startswith(("log.figures", "out="))] + ["steps=2"]
    args = ["reproduce", "checkerboard", "--budget", "small", "--out", str(tmp_path), "--objectives", "lsd,psd_m"]
    assert main(args + [word for o in overrides for word in ("--set", o)]) == 0
    table = (tmp_path / "kl.md").read_text()
    assert "| LSD (flowcore) |" in table and "| LSD (paper) | 0.0864 |" in table and "| PSD-M (paper) |" in table
    import json

    report = json.loads((tmp_path / "kl.json").read_text())
    assert set(report["kl"]) == {"LSD", "PSD-M"} and report["paper"]["ESD"]["1"] == 0.0983
    assert (tmp_path / "samples.png").stat().st_size > 0
    capsys.readouterr()
    assert main(args + [word for o in overrides for word in ("--set", o)]) == 0          # done: nothing retrained
    assert capsys.readouterr().out.count("already trained") == 2
    (tmp_path / "lsd" / "result.json").write_text('{"config": {"st')  # a result cut short
    assert main(args + [word for o in overrides for word in ("--set", o)]) == 0
    out = capsys.readouterr().out
    assert "result.json: unreadable" in out and out.count("already trained") == 1
    assert json.loads((tmp_path / "lsd" / "result.json").read_text())["step"] == 2
