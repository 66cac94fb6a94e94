"""Time embeddings of the flow-map MLP's first layer, with their exact time derivatives (docs/math.md §4).

An embedding maps the times ``(s, t)`` of a batch to ``(B, channels)`` features. Its ``jvp``
pushes time tangents ``(ṡ, ṫ)`` through analytically — sinusoids differentiate to sinusoids —
so the tangent in s and t enters the network's first layer exactly (no finite differences, no
autograd graph of its own).

- `RawTimes`: the paper's 2-D input ``(s, t)`` (channels 2).
- `SinusoidalTimes`: sinusoidal positional embeddings of ``s`` and of ``t − s`` (the two-time
  embedding of the paper's image networks), the same frequencies as `flowcore.nn.LogVarHead`:
  ``ω_i = scale · max_period^(−i/half)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["EMBEDDINGS", "RawTimes", "SinusoidalTimes", "time_embedding"]

Tangent = tuple  # (ṡ, ṫ): (B,) tensors


class RawTimes(nn.Module):
    """``e(s, t) = (s, t)``; ``ė = (ṡ, ṫ)``."""

    channels = 2

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.stack([s, t], dim=1)

    def jvp(self, s: torch.Tensor, t: torch.Tensor, tangents: list[Tangent]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self(s, t), [torch.stack([ds, dt], dim=1) for ds, dt in tangents]


def sinusoidal_frequencies(features: int, max_period: float = 1e4, scale: float = 1000.0) -> torch.Tensor:
    """The ``features // 2`` frequencies ``scale · max_period^(−i/half)`` (float64) of a sinusoidal
    embedding of a time in [0, 1] (its cos and sin pairs)."""
    half = features // 2
    return scale * torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)


class SinusoidalTimes(nn.Module):
    """``e(s, t) = [cos(ω s), sin(ω s), cos(ω (t − s)), sin(ω (t − s))]`` with ``features/2``
    frequencies per time; ``ė`` is the same with ``−ω sin, ω cos`` times the tangent of each time."""

    def __init__(self, features: int = 32, max_period: float = 1e4, scale: float = 1000.0):
        super().__init__()
        if features < 2 or features % 2:
            raise ValueError(f"features must be even and positive (cos and sin pairs), got {features}")
        if not (max_period > 0 and scale > 0):
            raise ValueError(f"max_period and scale must be positive, got {max_period}, {scale}")
        self.features, self.max_period, self.scale = features, float(max_period), float(scale)
        freqs = sinusoidal_frequencies(features, max_period, scale)
        self.register_buffer("freqs", freqs, persistent=False)  # float64; cast to the times' dtype

    @property
    def channels(self) -> int:
        return 2 * self.features

    def _angles(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = self.freqs.to(tau.dtype)
        return freqs, tau[:, None] * freqs

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        _, a_s = self._angles(s)
        _, a_d = self._angles(t - s)
        return torch.cat([torch.cos(a_s), torch.sin(a_s), torch.cos(a_d), torch.sin(a_d)], dim=1)

    def jvp(self, s: torch.Tensor, t: torch.Tensor, tangents: list[Tangent]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        freqs, a_s = self._angles(s)
        _, a_d = self._angles(t - s)
        cos_s, sin_s, cos_d, sin_d = torch.cos(a_s), torch.sin(a_s), torch.cos(a_d), torch.sin(a_d)
        primal = torch.cat([cos_s, sin_s, cos_d, sin_d], dim=1)
        dots = []
        for ds, dt in tangents:
            w_s = freqs * ds[:, None]             # ω·ṡ
            w_d = freqs * (dt - ds)[:, None]      # ω·(ṫ − ṡ)
            dots.append(torch.cat([-sin_s * w_s, cos_s * w_s, -sin_d * w_d, cos_d * w_d], dim=1))
        return primal, dots

    def extra_repr(self) -> str:
        return f"features={self.features}, max_period={self.max_period:g}, scale={self.scale:g}"


EMBEDDINGS = {"raw": RawTimes, "sinusoidal": SinusoidalTimes}


def time_embedding(spec: str | nn.Module) -> nn.Module:
    """An embedding from its name (``raw``, ``sinusoidal``) or a module with ``channels``,
    ``forward(s, t)`` and ``jvp(s, t, tangents)``."""
    if isinstance(spec, nn.Module):
        if not (hasattr(spec, "channels") and callable(getattr(spec, "jvp", None))):
            raise TypeError("a time embedding module needs `channels` and `jvp(s, t, tangents)`; "
                            f"got {type(spec).__name__}")
        return spec
    if spec not in EMBEDDINGS:
        raise ValueError(f"unknown time_embedding {spec!r}; choose one of {', '.join(EMBEDDINGS)}")
    return EMBEDDINGS[spec]()
