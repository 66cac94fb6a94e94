"""Resuming: a change of what is trained (network, σ, objective, data) is refused by name; a resume with
nothing to resume from says it starts fresh; a finished run says it trained nothing; an interrupted run
says so once, and the command it prints continues it bit for bit with the run's own --set overrides."""
import shlex

import pytest
import torch

from flowcore.cli import main
from flowcore.train import CheckpointError, Trainer, load_config
from flowcore.train import checkpoint as ckpt

TINY = ["steps=2", "network.width=8", "network.depth=1", "data.batch=32", "eval.samples=64", "eval.steps=1",
        "eval.ema=0.999", "log.tensorboard=false", "log.figures=false", "log.progress=off", "checkpoint.every=0"]


def sets(*more: str) -> list[str]:
    return [f"--set={o}" for o in TINY + list(more)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-step run (trained once for the module; tests resume copies of it)."""
    out = tmp_path_factory.mktemp("finished")
    Trainer(load_config(None, TINY + [f"out={out}"])).train()
    return out


def _copy(run, tmp_path):
    import shutil

    return shutil.copytree(run, tmp_path / "run")


@pytest.mark.parametrize("change, named", [
    ("network.activation=silu", "network.activation 'gelu' → 'silu'"),
    ("network.sigma=0.5", "network.sigma 'data' → 0.5"),
    ("objective.name=psd_m", "objective.name 'lsd' → 'psd_m'"),
    ("objective.interpolant=trig", "objective.interpolant 'linear' → 'trig'"),
    ("network.width=16", "network.width 8 → 16"),
    ("data.name=two_moons", "data.name 'checkerboard' → 'two_moons'"),
])
def test_a_resume_that_changes_what_is_trained_is_refused(tmp_path, capsys, finished, change, named):
    run = _copy(finished, tmp_path)
    with pytest.raises(CheckpointError) as error:
        Trainer(load_config(None, TINY + [f"out={run}", change]), resume=True)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{run / 'checkpoints' / 'step-000000002.pt'}: cannot resume")
    assert named in message
    assert main(["train", "--out", str(run), "--resume", *sets(change)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "Traceback" not in err


def test_a_resume_whose_data_changed_sigma_is_refused(tmp_path):
    """network.sigma = "data": the same config, but the file's samples now have another std."""
    import numpy as np

    data = tmp_path / "points.npy"
    np.save(data, np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32))
    config = load_config(None, TINY + [f"out={tmp_path / 'run'}", f"data.name={data}"])
    Trainer(config).train()
    np.save(data, 3 * np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32))
    with pytest.raises(CheckpointError,
                       match=r"cannot resume with a different σ 1\.0\d+ → 3\.0\d+: that changes what is trained"):
        Trainer(config, resume=True)


def test_a_resume_that_changes_the_budget_goes_on_with_a_note(tmp_path, capsys, finished):
    run = _copy(finished, tmp_path)
    trainer = Trainer(load_config(None, TINY + [f"out={run}", "steps=3"]), resume=True)
    assert trainer.step == 2
    assert "note: resuming with settings that differ from the checkpoint's: steps 2 → 3" in capsys.readouterr().out


@pytest.mark.parametrize("made", [True, False], ids=["empty", "absent"])
def test_a_resume_with_nothing_to_resume_says_it_starts_fresh(tmp_path, capsys, made):
    out = tmp_path / "fresh"
    if made:
        out.mkdir()
    assert main(["train", "--out", str(out), "--resume", *sets()]) == 0
    printed = capsys.readouterr().out
    assert printed.count(f"no checkpoint in {out} to resume from: starting a fresh run there") == 1
    assert "trained 2 steps" in printed


def test_resuming_a_finished_run_says_it_trained_nothing(tmp_path, capsys, finished):
    run = _copy(finished, tmp_path)
    before = ckpt.resolve(run).stat().st_mtime_ns
    assert main(["train", "--resume", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "already at step 2 of 2: nothing to train" in printed and "trained 2 steps" not in printed
    assert ckpt.resolve(run).stat().st_mtime_ns == before      # the checkpoint is not written again
    assert main(["train", "--resume", str(run), "--set=steps=3"]) == 0   # a longer budget: the steps it adds
    assert "trained 1 step (steps 3–3)" in capsys.readouterr().out


def test_a_run_directory_without_resume_is_explained(tmp_path, capsys, finished):
    assert main(["train", str(finished)]) == 2
    err = capsys.readouterr().err
    assert f"{finished} is a run directory, not a TOML config" in err and "--resume" in err


def _interrupt_at(monkeypatch, step: int) -> None:
    """The next Trainer stops after `step` steps, as SIGINT would make it (the handler sets _signal)."""
    original = Trainer.train_step

    def train_step(self):
        if self.step == step:
            self._signal = "SIGINT"
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", train_step)


def _final_state(run) -> dict:
    state = torch.load(ckpt.resolve(run), weights_only=True)
    return {"step": state["step"], "model": state["model"], "ema": state["ema"]["shadows"],
            "optimizer": state["optimizer"]["state"], "batches": state["rng"]["batches"], "data": state["rng"]["data"],
            "torch": state["rng"]["torch"]}


def _assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def test_the_printed_resume_command_continues_bit_for_bit(tmp_path, capsys, monkeypatch):
    """A run of a config file with --set overrides: the printed command, which repeats neither, continues
    it exactly (it reads the run's saved config)."""
    config = tmp_path / "run.toml"
    config.write_text(load_config(None, TINY).to_toml())
    overrides = ["--set=steps=5", "--set=optim.lr=3e-3", "--set=objective.name=psd_u", "--set=seed=7"]
    assert main(["train", str(config), "--out", str(tmp_path / "straight"), *overrides]) == 0
    capsys.readouterr()
    _interrupt_at(monkeypatch, 2)
    assert main(["train", str(config), "--out", str(tmp_path / "split"), *overrides]) == 130
    printed = capsys.readouterr().out
    assert printed.count("SIGINT") == 1, printed                 # the interrupt is told once
    (command,) = [line.split("continue with: ", 1)[1] for line in printed.splitlines() if "continue with: " in line]
    argv = shlex.split(command)
    assert argv == ["flowcore", "train", "--resume", str(tmp_path / "split")]
    monkeypatch.undo()
    assert main(argv[1:]) == 0
    assert f"resumed from {tmp_path / 'split' / 'checkpoints' / 'step-000000003.pt'} at step 3" in \
        capsys.readouterr().out
    straight, resumed = _final_state(tmp_path / "straight"), _final_state(tmp_path / "split")
    assert straight["step"] == resumed["step"] == 5
    _assert_same(straight, resumed)
