"""The network protocol and the registry behind ``network.kind``: FlowMapMLP satisfies the protocol with
the shapes it documents, an unknown kind is a clear error, and a network registered from outside the
package trains through the config → Trainer path and comes back from its checkpoint."""
import math

import pytest
import torch
from torch import nn

from flowcore.nn import FlowMapMLP, FlowMapNetwork, NativeJvp, registry
from flowcore.nn.registry import build_network, network_kinds, register_network
from flowcore.testing.nets import SmoothVelocity
from flowcore.train import ConfigError, Trainer, load_config
from flowcore.train.build import network_from_checkpoint
from flowcore.train.checkpoint import read
from flowcore.train.config import NetworkConfig

TINY = ["steps=3", "data.batch=64", "eval.samples=256", "eval.steps=1", "eval.ema=0.999", "log.every=1",
        "log.tensorboard=false", "log.figures=false", "log.progress=off", "checkpoint.every=0"]


@pytest.fixture
def fresh_registry(monkeypatch):
    """Registrations made by a test stay in it."""
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))


def build_smooth(config, data_shape, sigma):
    """A custom kind: a small smooth velocity on any sample shape, as a user's file would register it."""
    return SmoothVelocity(data_shape, width=config.width, dtype=torch.float32)


# ----------------------------------------------------------------------------------- the protocol


def test_flow_map_mlp_satisfies_the_protocol_with_its_shapes():
    net = FlowMapMLP(3, 8, 2)
    assert isinstance(net, FlowMapNetwork) and isinstance(net, NativeJvp)
    assert not isinstance(nn.Linear(2, 2), NativeJvp)
    B = 5
    s, t, x = torch.rand(B), torch.rand(B), torch.randn(B, 3)
    assert net(s, t, x).shape == x.shape
    v, v_dot = net.jvp(s, t, x, torch.ones(B), None, torch.randn(B, 3))
    assert v.shape == v_dot.shape == x.shape
    v, dots = net.jvp_many(s, t, x, [(torch.ones(B), None, None), (None, None, torch.randn(B, 3))], live=[True, False])
    assert v.shape == x.shape and [d.shape for d in dots] == [x.shape] * 2
    assert dots[0].requires_grad and not dots[1].requires_grad  # a dead tangent carries no graph
    plain, none = net.jvp_many(s, t, x, [])
    assert none == [] and torch.allclose(plain, net(s, t, x), rtol=1e-5, atol=1e-6)  # float32 GEMM orders differ


# ----------------------------------------------------------------------------------- the registry


def test_mlp_is_the_default_kind_and_builds_from_the_config():
    assert NetworkConfig().kind == "mlp" and "mlp" in network_kinds()
    net = build_network("mlp", NetworkConfig(width=8, depth=2, activation="tanh"), (2,), sigma=0.5)
    assert isinstance(net, FlowMapMLP) and net.sigma == 0.5 and net.activation == "tanh"
    assert [m.out_features for m in net.body if isinstance(m, nn.Linear)] == [8, 8, 2]


def test_an_unknown_kind_names_it_and_the_registered_kinds():
    with pytest.raises(ValueError, match=r"unknown network kind 'transformer'; registered kinds: mlp, unet"):
        build_network("transformer", NetworkConfig(), (2,))
    with pytest.raises(ConfigError, match=r"network.kind = 'transformer': choose one of mlp, unet"):
        load_config(None, ["network.kind=transformer"])


def test_the_mlp_refuses_data_it_cannot_take():
    with pytest.raises(ValueError, match=r"'mlp' trains on flat points; the data has samples shaped \(1, 3, 3\)"):
        build_network("mlp", NetworkConfig(), (1, 3, 3))
    with pytest.raises(ValueError, match=r"network.dim = 3, but the data has dimension 2"):
        build_network("mlp", NetworkConfig(dim=3), (2,))
    with pytest.raises(ValueError, match=r"sample shape must be positive sizes, got \(\)"):
        build_network("mlp", NetworkConfig(), ())


def test_bad_registrations_are_errors(fresh_registry):
    with pytest.raises(ValueError, match=r"network kind 'mlp' is already registered"):
        register_network("mlp", build_smooth)
    with pytest.raises(ValueError, match=r"a network kind is a name such as 'mlp', got 'my net'"):
        register_network("my net", build_smooth)
    register_network("not_a_module", lambda config, shape, sigma: object())
    with pytest.raises(TypeError, match=r"builder of network kind 'not_a_module' returned object, not an nn.Module"):
        build_network("not_a_module", NetworkConfig(), (2,))


def test_a_registered_kind_takes_any_sample_shape(fresh_registry):
    register_network("smooth", build_smooth)
    net = build_network("smooth", NetworkConfig(width=4), (1, 3, 3))
    x = torch.randn(6, 1, 3, 3)
    assert net(torch.rand(6), torch.rand(6), x).shape == x.shape


def test_a_custom_network_trains_through_the_config_and_comes_back_from_its_checkpoint(fresh_registry, tmp_path):
    register_network("smooth", build_smooth)
    config = load_config(None, TINY + ["network.kind=smooth", "network.width=8", f"out={tmp_path}"])
    trainer = Trainer(config)
    assert isinstance(trainer.net, SmoothVelocity)
    before = [p.detach().clone() for p in trainer.net.parameters()]
    summary = trainer.train()
    assert summary.step == 3 and summary.skipped == 0 and math.isfinite(summary.results[1]["kl"])
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.net.parameters()))  # it trained
    net, restored, _ = network_from_checkpoint(read(summary.checkpoint), weights=0)
    assert isinstance(net, SmoothVelocity) and restored.network.kind == "smooth"
    assert all(torch.equal(a, b.cpu()) for a, b in zip(net.parameters(), trainer.net.parameters()))
