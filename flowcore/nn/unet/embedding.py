"""The UNet's two-time conditioning (docs/math.md §4, the image UNet):

    emb = mp_silu(mp_sum(Lin_s(PE(s)), Lin_d(PE(t − s)), 0.5))

PE is a sinusoidal positional embedding of the raw time (no log-σ or other transform), max period
10,000, scaled by √2 so that each cos/sin pair has unit mean square. The frequencies are flowcore's
(flowcore.nn.embeddings.sinusoidal_frequencies): ``ω_i = scale · 10000^(−i/half)``. The default
scale 1 is the paper's (the raw time in [0, 1], so the fastest frequency is 1 rad per unit time
and the slow ones are nearly linear in τ); `time_scale` > 1 (the 2-D `SinusoidalTimes` uses 1000)
spreads the features if a run needs finer time resolution. The linears are magnitude-preserving
(`MPConv`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..embeddings import sinusoidal_frequencies
from .layers import MPConv, mp_silu, mp_sum

__all__ = ["PositionalEmbedding", "TwoTimeEmbedding"]


class PositionalEmbedding(nn.Module):
    """``PE(τ) = √2 · [cos(ω τ), sin(ω τ)]`` with `features` / 2 frequencies: ``(B,) -> (B, features)``."""

    def __init__(self, features: int, max_period: float = 1e4, scale: float = 1.0):
        super().__init__()
        if features < 2 or features % 2:
            raise ValueError(f"a positional embedding needs an even number of features >= 2, got {features}")
        self.features = features
        self.register_buffer("freqs", sinusoidal_frequencies(features, max_period, scale), persistent=False)

    def forward(self, tau: torch.Tensor) -> torch.Tensor:
        angles = tau[:, None] * self.freqs.to(tau.dtype)
        return math.sqrt(2) * torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class TwoTimeEmbedding(nn.Module):
    """``(s, t) -> emb``, ``(B,), (B,) -> (B, channels)``: embeddings of s and of t − s, each through
    its own MP linear, blended by ``mp_sum(·, ·, 0.5)`` and passed through ``mp_silu``."""

    def __init__(self, features: int, channels: int, time_scale: float = 1.0):
        super().__init__()
        self.pe = PositionalEmbedding(features, scale=time_scale)
        self.linear_s = MPConv(features, channels)
        self.linear_d = MPConv(features, channels)

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return mp_silu(mp_sum(self.linear_s(self.pe(s)), self.linear_d(self.pe(t - s)), 0.5))
