"""The paper's 2-D flow-map network: ``v̂_{s,t}(x) = σ·MLP(x/σ; s, t)`` (MATH.md §4)."""
from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class FlowMapMLP(nn.Module):
    """An MLP velocity ``net(s, t, x)`` on ``(B, dim)`` points; the flow map is ``x + (t − s)·net``.

    The input is ``(s, t, x/σ)`` (raw times, as in the paper's 2-D experiments); `depth` hidden
    layers of `width` units (the paper: 5 × 512, GELU).
    """

    def __init__(self, dim: int = 2, width: int = 512, depth: int = 5, activation: str = "gelu", sigma: float = 1.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if dim < 1 or width < 1 or depth < 1:
            raise ValueError(f"dim, width and depth must be positive, got {dim}, {width}, {depth}")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.dim, self.sigma = dim, float(sigma)
        layers: list[nn.Module] = []
        features = dim + 2
        for _ in range(depth):
            layers += [nn.Linear(features, width), ACTIVATIONS[activation]()]
            features = width
        layers.append(nn.Linear(features, dim))
        self.body = nn.Sequential(*layers)

    def forward(self, s: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"FlowMapMLP expects points shaped (B, {self.dim}), got {tuple(x.shape)}")
        h = torch.cat([s[:, None].to(x.dtype), t[:, None].to(x.dtype), x / self.sigma], dim=1)
        return self.sigma * self.body(h)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}"


def count_parameters(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
