"""Data sets and metrics by name: the registries of flowcore.data and flowcore.eval.metrics, used
from a training config (data.name, eval.metrics), for samples of any shape (B, *dims)."""
import math

import numpy as np
import pytest
import torch

from flowcore.data import DATASETS, get_dataset, make_source, register_dataset
from flowcore.eval.evaluate import evaluate_sampler
from flowcore.eval.metrics import register_metric, select_metrics
from flowcore.train import ConfigError, Trainer, load_config

TINY = ["steps=2", "network.width=16", "network.depth=2", "data.batch=64", "eval.samples=256", "eval.steps=1",
        "eval.ema=0.999", "log.tensorboard=false", "log.figures=false", "log.progress=off", "checkpoint.every=0"]


def ring(n, generator=None, dtype=torch.float32):
    angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.stack([angle.cos(), angle.sin()], dim=1).to(dtype)


def mean_gap(samples, data):
    """|mean(samples) − mean(data)| over every entry: a metric of any sample shape."""
    return float((samples.mean() - data.mean()).abs())


def test_a_registered_data_set_trains_by_name_from_a_config(tmp_path, registries):
    register_dataset("ring", ring, shape=(2,), kind="points2d")
    assert get_dataset("ring").kind == "points2d" and "ring" in DATASETS
    trainer = Trainer(load_config(None, TINY + ["data.name=ring", f"out={tmp_path}"]))
    assert trainer.data.name == "ring" and trainer.data.dims == (2,) and trainer.data.kind == "points2d"
    assert trainer.data.std == pytest.approx(2 ** -0.5, rel=3e-3)  # estimated from 2²⁰ samples: entries ±1 on a circle
    summary = trainer.train()
    assert list(summary.results[1]) == ["energy", "sw2"]  # the points2d defaults: no checkerboard KL


def test_a_registered_metric_is_chosen_by_eval_metrics(tmp_path, registries):
    register_metric("mean_gap", mean_gap)
    config = load_config(None, TINY + ["eval.metrics=mean_gap,kl", f"out={tmp_path}"])
    assert config.eval.metrics == ["mean_gap", "kl"]
    summary = Trainer(config).train()
    assert list(summary.results[1]) == ["mean_gap", "kl"]  # in the order asked, nothing else
    assert all(math.isfinite(v) and v >= 0 for v in summary.results[1].values())
    assert '"mean_gap"' in (tmp_path / "eval.jsonl").read_text()  # logged like the built-ins


def test_unknown_names_are_errors_naming_them_and_the_registered_ones(tmp_path, registries):
    with pytest.raises(ValueError, match=r"unknown data 'nope': give a registered data set \(checkerboard, "
                                         r"eight_gaussians, two_moons, spirals, cifar10, digits, image_folder\)"):
        make_source("nope", 4)
    with pytest.raises(ValueError, match=r"unknown data set 'nope'; registered: checkerboard, eight_gaussians"):
        get_dataset("nope")
    with pytest.raises(ConfigError, match=r"eval.metrics = \['kl', 'nope'\]: unknown metric\(s\) nope; "
                                          r"registered: kl, energy, sw2"):
        load_config(None, ["eval.metrics=kl,nope"])
    with pytest.raises(ValueError, match=r"unknown metric 'nope'; registered: kl, energy, sw2"):
        select_metrics("points2d", ["nope"])
    with pytest.raises(ValueError, match=r"unknown data 'nope'"):
        Trainer(load_config(None, TINY + ["data.name=nope", f"out={tmp_path}"]))


def test_a_metric_for_another_data_kind_is_refused(tmp_path, registries):
    message = (r"metric 'kl' cannot score 'points2d' data \('kl' applies to checkerboard data\); "
               r"metrics for 'points2d' data: energy, sw2")
    with pytest.raises(ValueError, match=message):
        select_metrics("points2d", ["kl"])
    with pytest.raises(ValueError, match=message):  # before a single training step
        Trainer(load_config(None, TINY + ["data.name=two_moons", "eval.metrics=kl", f"out={tmp_path}"]))
    assert not (tmp_path / "checkpoints").exists()
    register_metric("pixels_only", mean_gap, kinds=("images",), default=False)
    assert [m.name for m in select_metrics("images")] == ["energy", "sw2"]  # not a default
    with pytest.raises(ValueError, match=r"'pixels_only' applies to images data"):
        select_metrics("checkerboard", ["energy", "pixels_only"])


def test_defaults_per_kind_are_todays_choice():
    assert [m.name for m in select_metrics("checkerboard")] == ["kl", "energy", "sw2"]
    for kind in ("points2d", "points", "images", "arrays"):
        assert [m.name for m in select_metrics(kind)] == ["energy", "sw2"]


def test_image_shaped_array_source_streams_and_is_evaluated(tmp_path):
    data = np.random.default_rng(0).uniform(-1, 1, size=(40, 3, 4, 5)).astype(np.float32)
    np.save(tmp_path / "images.npy", data)
    source = make_source(tmp_path / "images.npy", 8, seed=0)
    assert source.dims == (3, 4, 5) and source.kind == "images"
    batches = [next(source) for _ in range(5)]  # one epoch: every image once
    assert all(b.shape == (8, 3, 4, 5) for b in batches)
    assert sorted(torch.cat(batches).reshape(40, -1)[:, 0].tolist()) == sorted(data.reshape(40, -1)[:, 0].tolist())

    def identity(s, t, x):  # the flow map that moves nothing: its samples are the noise
        return torch.zeros_like(x)

    results = evaluate_sampler(identity, (1,), n=64, sigma=1.0, dataset=tmp_path / "images.npy",
                               options={"energy": {"max_points": 64}, "sw2": {"projections": 8}})
    assert list(results[1]) == ["energy", "sw2"] and all(v > 0 for v in results[1].values())


def test_a_registered_image_set_streams_its_declared_shape(registries):
    def blobs(n, generator=None, dtype=torch.float32):
        return torch.rand(n, 1, 6, 6, generator=generator, dtype=dtype)

    register_dataset("blobs", blobs, shape=(1, 6, 6), kind="images")
    source = make_source("blobs", 5, seed=1)
    assert next(source).shape == (5, 1, 6, 6) and source.kind == "images" and source.dims == (1, 6, 6)
    register_dataset("liar", blobs, shape=(1, 8, 8), kind="images")
    with pytest.raises(ValueError, match=r"data 'liar': asked for 3 samples shaped \(1, 8, 8\), the sampler "
                                         r"returned shape \(3, 1, 6, 6\)"):
        next(make_source("liar", 3))


def test_registrations_are_checked(registries):
    with pytest.raises(ValueError, match="'checkerboard' is already registered"):
        register_dataset("checkerboard", ring, shape=(2,), kind="points2d")
    with pytest.raises(ValueError, match="not a .npy/.npz path"):
        register_dataset("ring.npy", ring, shape=(2,), kind="points2d")
    with pytest.raises(ValueError, match="shape must be the shape of one sample"):
        register_dataset("ring", ring, shape=(0,), kind="points2d")
    with pytest.raises(ValueError, match="kind must be a non-empty string"):
        register_dataset("ring", ring, shape=(2,), kind="")
    with pytest.raises(ValueError, match="'energy' is already registered"):
        register_metric("energy", mean_gap)
    with pytest.raises(TypeError, match=r"kinds must be a sequence of data kinds, e.g. \('images',\)"):
        register_metric("gap", mean_gap, kinds="images")
    with pytest.raises(ValueError, match="must be an identifier"):
        register_metric("mean gap", mean_gap)
    with pytest.raises(ValueError, match="options for metrics that are not computed: kl"):
        evaluate_sampler(lambda s, t, x: x, (1,), n=16, dataset="two_moons", options={"kl": {"bins": 10}})


def test_flowcore_eval_takes_the_configs_metrics_or_its_own(tmp_path, capsys, registries):
    from flowcore.cli import main

    register_metric("mean_gap", mean_gap)
    Trainer(load_config(None, TINY + ["eval.metrics=mean_gap", f"out={tmp_path}"])).train()
    capsys.readouterr()
    assert main(["eval", str(tmp_path), "--steps", "1", "--n", "256"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == ["mean_gap"]  # the run's eval.metrics
    assert main(["eval", str(tmp_path), "--steps", "1", "--n", "256", "--metrics", "sw2", "kl"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == ["sw2", "kl"]
    assert main(["eval", str(tmp_path), "--steps", "1", "--n", "256", "--metrics", "nope"]) == 2
    assert "unknown metric 'nope'; registered: kl, energy, sw2, fd_digits, fid, mean_gap" in capsys.readouterr().err
