"""The shipped image configs (configs/digits-*.toml, configs/cifar10-*.toml): each parses and validates,
carries the recipe it claims (docs/math.md §3-§5), builds a Trainer, and digits-lsd takes real steps on
the CPU. The CIFAR-10 configs run on a fake python-format folder written here (the official layout,
as tests/test_image_data.py writes it); the 55M-parameter net is built once, never trained."""
from pathlib import Path

import pytest
import torch

from flowcore.train import Trainer, load_config

from test_image_data import _cifar_folder

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DIGITS = ["fm", "lsd", "psd-m", "psd-u", "meanflow"]
CIFAR10 = ["fm", "lsd", "psd-m", "psd-u"]
QUIET = ["log.tensorboard=false", "log.progress=off", "log.figures=false", "checkpoint.every=0"]


def _objective_name(tag: str) -> str:
    return tag.replace("-", "_")


@pytest.mark.parametrize("tag", DIGITS)
def test_digits_config_is_the_cpu_image_recipe(tag):
    c = load_config(CONFIGS / f"digits-{tag}.toml")
    assert c.objective.name == _objective_name(tag)
    assert (c.network.kind, c.network.preset, c.network.sigma) == ("unet", "digits", 0.5)
    assert c.data.name == "digits" and not c.data.flip
    assert (c.optim.name, c.optim.lr, c.optim.clip, c.optim.weight_decay) == ("radam", 1e-2, 1.0, 0.0)
    assert c.seed == 42 and c.ema == [0.999, 0.9999] and c.eval.ema in c.ema
    assert c.device == "auto" and c.backend in ("torch", "cpu")


@pytest.mark.parametrize("tag", CIFAR10)
def test_cifar10_config_is_the_papers_recipe(tag):
    c = load_config(CONFIGS / f"cifar10-{tag}.toml")
    assert c.objective.name == _objective_name(tag)
    assert (c.network.kind, c.network.preset, c.network.sigma, c.network.dropout) == ("unet", "cifar10", 0.5, 0.13)
    assert (c.data.name, c.data.batch, c.data.flip, c.data.path) == ("cifar10", 512, False, "")
    assert (c.steps, c.seed) == (400_000, 42)
    p = c.optim
    assert (p.name, p.lr, p.clip, p.weight_decay, p.schedule, p.decay_start) == ("radam", 1e-2, 1.0, 0.0, "paper", 35000)
    assert c.ema == [0.999, 0.9999] and c.eval.ema == 0.9999
    assert c.eval.steps == [1, 2, 4, 8, 16]


def test_digits_lsd_trains_two_steps_and_the_others_build(tmp_path):
    for tag in DIGITS:
        # the shipped file with two steps of a small batch (the recipe's 128 costs seconds a step here)
        trainer = Trainer(load_config(CONFIGS / f"digits-{tag}.toml", ["steps=2", "data.batch=8", *QUIET]),
                          out=tmp_path / tag)
        assert trainer.data.dims == (1, 8, 8)
        assert trainer.net.out_gain.item() == 0.0          # v̂ = 0 at initialisation (docs/math.md §4)
        if tag != "lsd":
            continue
        before = [p.detach().clone() for p in trainer.net.parameters()]
        losses = [trainer.train_step() for _ in range(2)]
        assert all(step["finite"] for step in losses) and trainer.step == 2
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.net.parameters()))


@pytest.mark.parametrize("tag", CIFAR10)
def test_cifar10_config_refuses_to_start_without_data_path(tag, tmp_path):
    config = load_config(CONFIGS / f"cifar10-{tag}.toml", QUIET)
    with pytest.raises(ValueError, match=r"data\.path"):
        Trainer(config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tag", CIFAR10)
def test_cifar10_config_scores_fid_and_refuses_to_start_without_its_weights(tag, tmp_path, monkeypatch):
    """The paper's metric: FID at every k (docs/math.md §5). Its weights file is checked before the
    run starts: without one, the error names the file to fetch."""
    monkeypatch.delenv("FLOWCORE_INCEPTION_WEIGHTS", raising=False)
    config = load_config(CONFIGS / f"cifar10-{tag}.toml", [f"data.path={_cifar_folder(tmp_path)}", *QUIET])
    assert config.eval.metrics[0] == "fid" and config.eval.inception_weights == ""
    with pytest.raises(FileNotFoundError, match=r"weights-inception-2015-12-05-6726825d\.pth"):
        Trainer(config, out=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cifar10_configs_build_on_a_cifar_folder(tmp_path):
    folder = _cifar_folder(tmp_path)
    # The shipped recipe, as is: the cifar10 preset on 32×32×3 (built, not trained).
    no_fid = ['eval.metrics=["energy", "sw2"]']   # FID's weights file is not here (the test above)
    lsd = Trainer(load_config(CONFIGS / "cifar10-lsd.toml",
                              [f"data.path={folder}", "data.batch=16", *no_fid, *QUIET]), out=tmp_path / "lsd")
    assert lsd.data.dims == (3, 32, 32)
    assert 50e6 < sum(p.numel() for p in lsd.net.parameters()) < 60e6   # docs/math.md §4: about 55M
    del lsd
    # Every objective with the same file and a tiny net of explicit sizes: one real step each.
    tiny = ["network.preset=", "network.model_channels=8", "network.channel_mult=[1]", "network.num_blocks=1",
            "network.attn_resolutions=[]", "network.channels_per_head=8", "network.dropout=0.0", "data.batch=4"]
    for tag in CIFAR10:
        trainer = Trainer(load_config(CONFIGS / f"cifar10-{tag}.toml", [f"data.path={folder}", *tiny, *no_fid, *QUIET]),
                          out=tmp_path / tag)
        assert trainer.train_step()["finite"]


def test_every_shipped_config_is_tested_by_one_family():
    """A new config file must land in a family some test trains: the checkerboard configs in
    tests/test_train.py, the image configs here."""
    image = {f"digits-{tag}" for tag in DIGITS} | {f"cifar10-{tag}" for tag in CIFAR10}
    stems = {path.stem for path in CONFIGS.glob("*.toml")}
    untested = sorted(stem for stem in stems if not stem.startswith("checkerboard-") and stem not in image)
    assert untested == [], f"configs no test covers: {untested}"
    assert image <= stems
