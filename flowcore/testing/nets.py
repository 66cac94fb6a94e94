"""Small smooth networks for checks and for the test suite: any data shape (B, *dims), times
entering nonlinearly. Each follows the network protocol (flowcore.nn.protocol) through ``forward``
alone, so compiled objectives reach it through ``torch.func.jvp``.

Smoothness matters — second derivatives in time must be non-trivial — so the activations are
tanh and sin, never ReLU. Parameters are drawn from a seed, so a check is reproducible.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _seeded_(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / math.sqrt(p.shape[-1]))


class SmoothVelocity(nn.Module):
    """``net(s, t, x) -> v`` with v shaped like x; s, t of shape (B,)."""

    def __init__(self, shape: tuple[int, ...], width: int = 16, seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
        dim = math.prod(shape)
        self.first = nn.Linear(dim + 2, width, dtype=dtype)
        self.second = nn.Linear(width, width, dtype=dtype)
        self.out = nn.Linear(width, dim, dtype=dtype)
        _seeded_(self, seed)

    def forward(self, s: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([s[:, None], t[:, None], x.flatten(1)], dim=1)
        h = torch.tanh(self.first(h))
        h = torch.sin(self.second(h)) + h * t[:, None] * s[:, None]
        return self.out(h).reshape(x.shape)


class SmoothTeacher(nn.Module):
    """A frozen velocity ``teacher(t, x)``."""

    def __init__(self, shape: tuple[int, ...], seed: int = 1, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.net = SmoothVelocity(shape, seed=seed, dtype=dtype)
        self.requires_grad_(False)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(t, t, x)


class SmoothLogVar(nn.Module):
    """A log-variance head ``w(s, t) -> (B,)``."""

    def __init__(self, seed: int = 2, dtype: torch.dtype = torch.float64):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.freq = nn.Parameter(torch.randn(4, 2, generator=gen, dtype=dtype))
        self.out = nn.Parameter(torch.randn(4, generator=gen, dtype=dtype) / 2)

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(torch.stack([s, t], 1) @ self.freq.T) @ self.out
