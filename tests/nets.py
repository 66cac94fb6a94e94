"""Small smooth networks for tests: any data shape (B, *dims), times enter nonlinearly.

Smoothness matters: second derivatives in time (nested D) must be non-trivial, so the activations
are tanh/sin, never ReLU.
"""
import math

import torch
from torch import nn


class TinyVelocity(nn.Module):
    """``net(s, t, x) -> v`` with v shaped like x; s, t of shape (B,)."""

    def __init__(self, shape: tuple[int, ...], width: int = 16, seed: int = 0, dtype=torch.float64):
        super().__init__()
        dim = math.prod(shape)
        gen = torch.Generator().manual_seed(seed)
        self.first = nn.Linear(dim + 2, width, dtype=dtype)
        self.second = nn.Linear(width, width, dtype=dtype)
        self.out = nn.Linear(width, dim, dtype=dtype)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype) / math.sqrt(p.shape[-1]))

    def forward(self, s, t, x):
        h = torch.cat([s[:, None], t[:, None], x.flatten(1)], dim=1)
        h = torch.tanh(self.first(h))
        h = torch.sin(self.second(h)) + h * t[:, None] * s[:, None]
        return self.out(h).reshape(x.shape)


class TinyTeacher(nn.Module):
    """A frozen velocity ``teacher(t, x)``."""

    def __init__(self, shape: tuple[int, ...], seed: int = 1, dtype=torch.float64):
        super().__init__()
        self.net = TinyVelocity(shape, seed=seed, dtype=dtype)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, t, x):
        return self.net(t, t, x)


class TinyLogVar(nn.Module):
    """A log-variance head ``w(s, t) -> (B,)``."""

    def __init__(self, seed: int = 2, dtype=torch.float64):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.freq = nn.Parameter(torch.randn(4, 2, generator=gen, dtype=dtype))
        self.out = nn.Parameter(torch.randn(4, generator=gen, dtype=dtype) / 2)

    def forward(self, s, t):
        return torch.sin(torch.stack([s, t], 1) @ self.freq.T) @ self.out
