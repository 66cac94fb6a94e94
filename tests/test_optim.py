"""The optimizer factory behind ``optim.name``: each name gives its torch optimizer with the config's
hyperparameters, a bad name is a clear error, and the default is exactly the recipe's RAdam."""
import pytest
import torch

from flowcore.train import ConfigError, Trainer, load_config
from flowcore.train.config import OptimConfig
from flowcore.train.optim import OPTIMIZERS, make_optimizer


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(4, 3, generator=gen)), torch.nn.Parameter(torch.randn(3, generator=gen))]


def _steps(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], count: int = 3) -> None:
    for k in range(count):
        optimizer.zero_grad()
        sum(((p - 0.1 * k) ** 2).sum() for p in params).backward()
        optimizer.step()


@pytest.mark.parametrize("name, cls", [("radam", torch.optim.RAdam), ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW)])
def test_each_name_builds_its_optimizer_with_the_configs_settings(name, cls):
    config = OptimConfig(name=name, lr=2e-3, betas=[0.8, 0.95], eps=1e-6, weight_decay=0.01)
    optimizer = make_optimizer(_params(), config)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (2e-3, (0.8, 0.95), 1e-6, 0.01)
    assert group["foreach"]
    assert set(OPTIMIZERS) == {"radam", "adam", "adamw"}


def test_a_bad_name_names_it_and_the_choices():
    with pytest.raises(ValueError, match=r"optim.name = 'sgd': unknown optimizer; choose one of radam, adam, adamw"):
        make_optimizer(_params(), OptimConfig(name="sgd"))
    with pytest.raises(ConfigError, match=r"optim.name = 'sgd': choose one of radam, adam, adamw"):
        load_config(None, ["optim.name=sgd"])
    with pytest.raises(ConfigError, match=r"optim.weight_decay = -0.1: must be >= 0"):
        load_config(None, ["optim.weight_decay=-0.1"])


def test_the_default_is_the_recipes_radam_bit_for_bit():
    """docs/math.md §3: RAdam with torch's defaults and no weight decay. The factory's steps equal a
    hand-made RAdam's exactly (same kernels, same order), so runs keep their numbers."""
    assert OptimConfig().name == "radam" and OptimConfig().weight_decay == 0
    ours, theirs = _params(), _params()
    _steps(make_optimizer(ours, OptimConfig()), ours)
    _steps(torch.optim.RAdam(theirs, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, foreach=True), theirs)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_the_trainer_uses_the_configured_optimizer(tmp_path):
    more = ["steps=2", "network.width=8", "network.depth=1", "data.batch=32", "eval.samples=128", "eval.steps=1",
            "eval.ema=0.999", "log.tensorboard=false", "log.figures=false", "log.progress=off", f"out={tmp_path}",
            "optim.name=adamw", "optim.weight_decay=0.05"]
    trainer = Trainer(load_config(None, more))
    assert type(trainer.optimizer) is torch.optim.AdamW
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.05
    assert trainer.train().skipped == 0
