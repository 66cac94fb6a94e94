"""The paper's 2-D flow-map network: ``v̂_{s,t}(x) = σ·MLP(x/σ; s, t)`` (docs/math.md §4), with a fused
JVP whose backward runs THROUGH the tangent (LSD trains ``∂_t X̂``; docs/math.md §2, §6). It is the first
implementation of the network protocol (flowcore.nn.protocol), registered as ``network.kind = "mlp"``.

``forward`` is the plain ``nn.Sequential`` (what the reference interpreter and ``torch.func.jvp``
see). ``jvp`` / ``jvp_many`` push one primal and k tangents through each layer together: the rows
``[h; ḣ_1; …; ḣ_k]`` are stacked, so a layer is ONE GEMM over ``(k+1)·B`` rows (bias on the primal
rows only, added inside the activation) and ONE fused elementwise op ``a = σ(y)``, ``ȧ_j = σ'(y)ẏ_j``
(flowcore.nn.fused). Their backward is stacked GEMMs again plus one fused op for
``g_y = σ'g_a + σ''Σ ẏ_j g_ȧj``, ``g_ẏj = σ'g_ȧj``. In plain autograd a whole call is one autograd
node: its forward one extension op over every layer, its backward two ops per layer
(flowcore.nn.mlp_call). Under ``torch.no_grad()`` (sg'd JVPs) nothing is saved for backward.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn

from .embeddings import time_embedding as _time_embedding
from .mlp_call import net_call
from .registry import register_network

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}

Tangent = tuple  # (ṡ, ṫ, ẋ); None = zero


class FlowMapMLP(nn.Module):
    """An MLP velocity ``net(s, t, x)`` on ``(B, dim)`` points; the flow map is ``x + (t − s)·net``.

    The input is ``(e(s, t), x/σ)``: `depth` hidden layers of `width` units (the paper: 5 × 512,
    GELU, raw times). ``time_embedding``: ``"raw"`` (the times themselves), ``"sinusoidal"``
    (sinusoidal embeddings of s and t − s, flowcore.nn.embeddings) or an embedding module.
    ``fused``: None uses the extension's fused kernels where they load (else the equivalent torch
    ops, warning once), False always the torch ops, True requires the kernels.
    """

    def __init__(self, dim: int = 2, width: int = 512, depth: int = 5, activation: str = "gelu", sigma: float = 1.0,
                 *, time_embedding: str | nn.Module = "raw", fused: bool | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if dim < 1 or width < 1 or depth < 1:
            raise ValueError(f"dim, width and depth must be positive, got {dim}, {width}, {depth}")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.dim, self.sigma, self.activation, self.fused = dim, float(sigma), activation, fused
        self.embedding = _time_embedding(time_embedding)
        layers: list[nn.Module] = []
        features = self.embedding.channels + dim
        for _ in range(depth):
            layers += [nn.Linear(features, width), ACTIVATIONS[activation]()]
            features = width
        layers.append(nn.Linear(features, dim))
        self.body = nn.Sequential(*layers)

    # -- inputs -------------------------------------------------------------------------------------
    def _check_x(self, x: torch.Tensor, name: str = "x") -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"FlowMapMLP expects {name} shaped (B, {self.dim}), got {shape}")

    @staticmethod
    def _time(tau, x: torch.Tensor, name: str) -> torch.Tensor:
        """A per-sample time (B,) in x's dtype; a scalar is broadcast, None is zero."""
        if tau is None:
            return x.new_zeros(x.shape[0])
        tau = tau.to(x.dtype) if isinstance(tau, torch.Tensor) else torch.tensor(tau, dtype=x.dtype, device=x.device)
        if tau.ndim == 0:
            return tau.expand(x.shape[0])
        if tau.shape != (x.shape[0],):
            raise ValueError(f"FlowMapMLP expects {name} shaped ({x.shape[0]},) (one per sample) or a scalar, "
                             f"got {tuple(tau.shape)}")
        return tau

    def _input(self, s, t, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.embedding(s, t), x / self.sigma], dim=1)

    # -- evaluation ---------------------------------------------------------------------------------
    def forward(self, s: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self._check_x(x)
        s, t = self._time(s, x, "s"), self._time(t, x, "t")
        return self.sigma * self.body(self._input(s, t, x))

    def jvp(self, s, t, x, ds=None, dt=None, dx=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v, v̇)``: the velocity and its derivative along the tangent ``(ṡ, ṫ, ẋ)`` (None = 0)."""
        v, (v_dot,) = self.jvp_many(s, t, x, [(ds, dt, dx)])
        return v, v_dot

    def jvp_many(self, s, t, x, tangents: list[Tangent], live: list[bool] | None = None
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(v, [v̇_1, …, v̇_k])`` for k ≥ 0 tangents ``(ṡ, ṫ, ẋ)`` sharing one primal pass: each
        layer is one GEMM over the stacked rows and one fused activation, and in plain autograd the
        whole call is one autograd node (flowcore.nn.mlp_call). With no tangents this is
        the forward, through the same fused path (compiled objectives call it; `forward` stays the
        plain ``nn.Sequential`` that the reference interpreter and torch.func see).

        ``live[j] = False`` marks a tangent needed only under stop-gradient (ESD's ``∇X̂·v̂``,
        MeanFlow's ``dv̂/ds``): its rows share the forward's GEMMs but run without a graph, so the
        backward's GEMMs cover only the primal and the live tangents."""
        self._check_x(x)
        live = [True] * len(tangents) if live is None else [bool(flag) for flag in live]
        if len(live) != len(tangents):
            raise ValueError(f"jvp_many: {len(live)} live flags for {len(tangents)} tangents")
        s, t = self._time(s, x, "s"), self._time(t, x, "t")
        dots = []
        for k, tangent in enumerate(tangents):
            if len(tangent) != 3:
                raise ValueError(f"tangent {k} must be a triple (ds, dt, dx), got {len(tangent)} entries")
            ds, dt, dx = tangent
            if dx is None:
                dx = torch.zeros_like(x)
            else:
                self._check_x(dx, f"the tangent dx (tangent {k})")
            dots.append((self._time(ds, x, "ds"), self._time(dt, x, "dt"), dx.to(x.dtype)))
        e, e_dots = self.embedding.jvp(s, t, [(ds, dt) for ds, dt, _ in dots])
        rows = [torch.cat([e_dot, dx / self.sigma], dim=1) for e_dot, (_, _, dx) in zip(e_dots, dots)]
        h = torch.stack([torch.cat([e, x / self.sigma], dim=1)]
                        + [r for r, keep in zip(rows, live) if keep]
                        + [r.detach() for r, keep in zip(rows, live) if not keep])
        linears = list(self.body)[0::2]
        out, out_dead = net_call(h, 1 + sum(live), [layer.weight for layer in linears],
                                 [layer.bias for layer in linears], self.activation, self.sigma, self.fused)
        live_dots, dead_dots = iter(out[1:]), iter(out_dead)
        return out[0], [next(live_dots) if keep else next(dead_dots) for keep in live]

    def extra_repr(self) -> str:
        fused = "" if self.fused is None else f", fused={self.fused}"
        return f"sigma={self.sigma:g}, activation={self.activation!r}{fused}"


def count_parameters(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())


def layer_shapes(dim: int, width: int, depth: int, time_channels: int = 2) -> list[tuple[int, int]]:
    """The ``(in, out)`` of each linear layer of ``FlowMapMLP(dim, width, depth)`` whose time embedding
    has `time_channels` features (the raw times (s, t): 2), without building it."""
    return list(itertools.pairwise([time_channels + dim] + [width] * depth + [dim]))


def gemm_layers(net: FlowMapMLP) -> list[tuple[int, int]]:
    """The ``(in, out)`` of each linear layer of `net`'s body: one GEMM each per stream of rows
    (flowcore.bench.flops); the time embedding has no GEMM."""
    return [(layer.in_features, layer.out_features) for layer in net.body if isinstance(layer, nn.Linear)]


def build_mlp(config: Any, data_shape: tuple[int, ...], sigma: float) -> FlowMapMLP:
    """The ``"mlp"`` kind: ``FlowMapMLP`` of the config's width, depth and activation on flat points."""
    if len(data_shape) != 1:
        raise ValueError(f"network.kind = 'mlp' trains on flat points; the data has samples shaped {data_shape} "
                         f"(flatten them to (N, {math.prod(data_shape)}), or choose another network.kind)")
    (dim,) = data_shape
    if config.dim and config.dim != dim:
        raise ValueError(f"network.dim = {config.dim}, but the data has dimension {dim}")
    return FlowMapMLP(dim, config.width, config.depth, config.activation, sigma)


register_network("mlp", build_mlp, gemm_layers=gemm_layers)
