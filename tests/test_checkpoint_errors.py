"""Bad checkpoints and bad data files: one line naming the file and what is wrong, through every
place that loads them (train --resume, sample, eval, a distillation teacher), never torch's advice to
retry with ``weights_only=False`` nor numpy's to pass ``allow_pickle``."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from flowcore.cli import main
from flowcore.data import make_source
from flowcore.data.arrays import load_array
from flowcore.train import CheckpointError, Trainer, load_config
from flowcore.train import checkpoint as ckpt

TINY = ["steps=1", "network.width=8", "network.depth=1", "data.batch=32", "eval.samples=64", "eval.steps=1",
        "eval.ema=0.999", "log.tensorboard=false", "log.figures=false", "log.progress=off", "checkpoint.every=0"]
ADVICE = ("weights_only", "allow_pickle", "Traceback")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """The state of a one-step run's checkpoint (trained once for the module)."""
    out = tmp_path_factory.mktemp("run")
    Trainer(load_config(None, TINY + [f"out={out}"])).train()
    return torch.load(ckpt.resolve(out), weights_only=True)


def _one_line_error(capsys, argv: list[str], *words: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"flowcore {argv[0]}: "), err
    assert not any(advice in err for advice in ADVICE), err
    for word in words:
        assert word in err, err
    return err


# ----------------------------------------------------------------------------------- not a checkpoint


@pytest.mark.parametrize("content", [os.urandom(4096), b"hello, world\n", b"PK\x03\x04" + os.urandom(200),
                                     pickle.dumps({"step": 1}, protocol=4)],
                         ids=["random", "text", "broken-zip", "plain-pickle"])
def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, capsys, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        ckpt.read(path)
    message = str(error.value)
    assert message.startswith(f"{path} is not a flowcore checkpoint (") and "\n" not in message
    assert len(message) < len(str(path)) + 160, message           # one short line, not torch's paragraph
    assert not any(advice in message for advice in ADVICE)
    for command in (["sample", str(path), "--n", "4", "--out", str(tmp_path / "s")], ["eval", str(path)]):
        _one_line_error(capsys, command, f"{path} is not a flowcore checkpoint")


def test_an_empty_file_is_named(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"^{path} is not a flowcore checkpoint \(the file is empty\)$"):
        ckpt.read(path)


def test_pickled_code_is_named_without_torchs_advice(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "step": Path("x")}, path)
    with pytest.raises(CheckpointError) as error:
        ckpt.read(path)
    message = str(error.value)
    assert message.startswith(f"{path} is not a flowcore checkpoint (it holds pickled objects")
    assert "pathlib" in message and "\n" not in message and "weights_only" not in message


# ----------------------------------------------------------------------------------- incomplete checkpoints


def _save_without(trained: dict, path: Path, *keys: str, model_keys: tuple[str, ...] = ()) -> Path:
    state = {key: value for key, value in trained.items() if key not in keys}
    state["model"] = {key: value for key, value in trained["model"].items() if key not in model_keys}
    torch.save(state, path)
    return path


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_checkpoint_without_step_names_the_key(tmp_path, capsys, trained, command):
    path = _save_without(trained, tmp_path / "nostep.pt", "step")
    with pytest.raises(CheckpointError, match=rf"^{path} is not a complete flowcore checkpoint: it lacks step$"):
        ckpt.read(path)
    argv = [command, str(path), "--n", "4", "--steps", "1"] + (["--out", str(tmp_path / "s")] if command == "sample"
                                                               else [])
    _one_line_error(capsys, argv, str(path), "lacks step")


def test_a_checkpoint_missing_model_weights_names_them(tmp_path, capsys, trained):
    first = next(iter(trained["model"]))
    path = _save_without(trained, tmp_path / "partial.pt", model_keys=(first,))
    _one_line_error(capsys, ["sample", str(path), "--ema", "0", "--n", "4", "--steps", "1",
                             "--out", str(tmp_path / "s")], str(path), f"missing {first}")


def test_ema_weights_that_do_not_fit_are_named(tmp_path, capsys, trained):
    state = dict(trained)
    state["ema"] = {**trained["ema"], "shadows": {k: v[:-1] for k, v in trained["ema"]["shadows"].items()}}
    path = tmp_path / "short-ema.pt"
    torch.save(state, path)
    _one_line_error(capsys, ["eval", str(path), "--n", "4", "--steps", "1"], str(path), "EMA 0.999")


def test_a_resume_from_a_checkpoint_missing_keys_names_them(tmp_path, capsys, trained):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    path = _save_without(trained, out / "checkpoints" / "step-000000001.pt", "optimizer", "rng")
    with pytest.raises(CheckpointError, match=rf"^{path} is not a complete flowcore checkpoint: it lacks "
                                              r"optimizer, rng \(needed to resume\)$"):
        Trainer(load_config(None, TINY + [f"out={out}"]), resume=True)


def test_a_teacher_that_is_not_a_checkpoint_is_named(tmp_path):
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(os.urandom(100))
    with pytest.raises(CheckpointError, match=rf"^{teacher} is not a flowcore checkpoint"):
        Trainer(load_config(None, TINY + [f"out={tmp_path / 'student'}", "objective.name=lmd",
                                          f"objective.teacher={teacher}"]))


# ----------------------------------------------------------------------------------- data files


def _object_npy(path: Path) -> Path:
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return path


@pytest.mark.parametrize("write, words", [
    (lambda p: _object_npy(p / "objects.npy"), ["objects.npy", "Python objects (dtype object)"]),
    (lambda p: (p / "garbage.npy").write_bytes(os.urandom(500)) and p / "garbage.npy",
     ["garbage.npy", "not a NumPy .npy file"]),
    (lambda p: (p / "cut.npy").write_bytes(_npy_bytes()[:-40]) and p / "cut.npy", ["cut.npy", "truncated"]),
    (lambda p: (p / "garbage.npz").write_bytes(os.urandom(500)) and p / "garbage.npz",
     ["garbage.npz", "not a NumPy .npz archive"]),
    (lambda p: _object_npz(p / "objects.npz"), ["objects.npz['x']", "Python objects (dtype object)"]),
], ids=["object-npy", "garbage-npy", "truncated-npy", "garbage-npz", "object-npz"])
def test_bad_array_files_name_the_file(tmp_path, capsys, write, words):
    path = write(tmp_path)
    with pytest.raises(ValueError) as error:
        load_array(path)
    message = str(error.value)
    assert "\n" not in message and "allow_pickle" not in message, message
    for word in words:
        assert word in message, message
    _one_line_error(capsys, ["train", "--out", str(tmp_path / "run"), *(f"--set={o}" for o in TINY),
                             f"--set=data.name={path}"], *words)


def _npy_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.zeros((50, 2), dtype=np.float32))
    return buffer.getvalue()


def _object_npz(path: Path) -> Path:
    np.savez(path, x=np.array([None, 1], dtype=object))
    return path


def test_a_source_from_a_bad_file_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="objects.npy"):
        make_source(_object_npy(tmp_path / "objects.npy"), 4)
