"""Network kinds by name: what ``network.kind`` in a training config resolves to (docs/design.md).

A kind is a builder and, for the benchmark's GEMM bound, a counting function::

    def build_mine(config, data_shape, sigma):        # config: the run's [network] section
        return MyNet(data_shape, config.width, sigma)  # an nn.Module of flowcore.nn.protocol

    register_network("mine", build_mine, gemm_layers=lambda net: net.gemm_shapes())

Adding a network is its file plus that one registration (``flowcore.nn.mlp`` registers ``"mlp"``);
``flowcore.nn`` imports the built-in networks' modules, so they are registered whenever any part of
``flowcore.nn`` is.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

# builder(config, data_shape, sigma) -> the network. `config` is the run's network section
# (flowcore.train.config.NetworkConfig: kind, width, depth, activation, sigma, dim); `data_shape` the
# shape of one sample as the data source yields it; `sigma` the resolved σ of docs/math.md §1.
Builder = Callable[[Any, tuple[int, ...], float], nn.Module]
# gemm_layers(net) -> the (fan_in, fan_out) of each GEMM one sample's stream runs through `net`, in
# order, or (fan_in, fan_out, rows) for a GEMM of several rows per sample (a convolution's im2col:
# one row per pixel); flowcore.bench.flops multiplies the rows by the streams and samples of a step.
GemmCounter = Callable[[nn.Module], list[tuple[int, ...]]]
# weight_head() -> the kind's learned log-variance head ``w(s, t) -> (B,)`` (docs/math.md §3), the
# `weight_net` of a ``learned_weight`` run; a kind without one gets the generic flowcore.nn.LogVarHead.
WeightHead = Callable[[], nn.Module]


@dataclass(frozen=True)
class NetworkKind:
    """A registered kind of flow-map network."""

    name: str
    build: Builder
    gemm_layers: GemmCounter | None = None
    weight_head: WeightHead | None = None


_KINDS: dict[str, NetworkKind] = {}


def register_network(kind: str, builder: Builder, *, gemm_layers: GemmCounter | None = None,
                     weight_head: WeightHead | None = None) -> NetworkKind:
    """Make ``network.kind = kind`` build networks with `builder`; `gemm_layers` counts a built
    network's GEMMs for the benchmark (a kind without it trains, but cannot be benchmarked);
    `weight_head` makes the learned loss weight's head of this kind's runs (default: LogVarHead)."""
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ValueError(f"a network kind is a name such as 'mlp', got {kind!r}")
    if kind in _KINDS:
        raise ValueError(f"network kind {kind!r} is already registered (by {_KINDS[kind].build.__module__})")
    if not callable(builder) or any(f is not None and not callable(f) for f in (gemm_layers, weight_head)):
        raise TypeError(f"network kind {kind!r}: the builder, gemm_layers and weight_head must be callables")
    _KINDS[kind] = NetworkKind(kind, builder, gemm_layers, weight_head)
    return _KINDS[kind]


def network_kinds() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return tuple(_KINDS)


def network_kind(kind: str) -> NetworkKind:
    """The registered kind `kind`, or a ValueError naming it and the registered ones."""
    if kind not in _KINDS:
        raise ValueError(f"unknown network kind {kind!r}; registered kinds: {', '.join(_KINDS) or 'none'}")
    return _KINDS[kind]


def build_network(kind: str, config: Any, data_shape: tuple[int, ...], sigma: float = 1.0) -> nn.Module:
    """A fresh network of kind `kind` for samples shaped `data_shape` (``(2,)``, ``(C, H, W)``, …)."""
    entry = network_kind(kind)
    shape = tuple(data_shape)
    if not shape or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(f"network kind {kind!r}: the data's sample shape must be positive sizes, got {data_shape!r}")
    net = entry.build(config, shape, float(sigma))
    if not isinstance(net, nn.Module):
        raise TypeError(f"the builder of network kind {kind!r} returned {type(net).__name__}, not an nn.Module")
    return net


def build_weight_head(kind: str) -> nn.Module:
    """A fresh learned log-variance head for runs of network kind `kind` (docs/math.md §3)."""
    entry = network_kind(kind)
    if entry.weight_head is None:
        from .heads import LogVarHead

        return LogVarHead()
    return entry.weight_head()


def gemm_layers(kind: str, net: nn.Module) -> list[tuple[int, ...]]:
    """The GEMM shapes of one sample's stream through `net`, by its kind's registered counter:
    ``(fan_in, fan_out)`` or ``(fan_in, fan_out, rows per sample)``."""
    entry = network_kind(kind)
    if entry.gemm_layers is None:
        raise ValueError(f"network kind {kind!r} registers no gemm_layers counter: its FLOPs cannot be counted")
    layers = [tuple(int(v) for v in layer) for layer in entry.gemm_layers(net)]
    bad = [layer for layer in layers if len(layer) not in (2, 3) or min(layer) < 1]
    if bad:
        raise ValueError(f"network kind {kind!r}: gemm_layers gave {bad[0]}; give (fan_in, fan_out) or "
                         "(fan_in, fan_out, rows per sample), positive")
    return layers
