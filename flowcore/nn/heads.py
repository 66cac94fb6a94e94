"""The learned log-variance head of the EDM2-style loss weight (docs/math.md §3)."""
from __future__ import annotations

import torch
from torch import nn

from .embeddings import sinusoidal_frequencies


class LogVarHead(nn.Module):
    """``w(s, t)``: sinusoidal positional embeddings of raw s and t, then one linear layer → (B,).

    Used by ``flowcore.lang.learned_logvar``: per sample ``exp(−w)·ℓ + w``. Starts at w = 0
    (the unweighted loss).
    """

    def __init__(self, features: int = 32, max_period: float = 1e4):
        super().__init__()
        if features % 2:
            raise ValueError(f"features must be even (sin and cos pairs), got {features}")
        self.register_buffer("freqs", sinusoidal_frequencies(features, max_period).float(), persistent=False)
        self.linear = nn.Linear(2 * features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def embed(self, tau: torch.Tensor) -> torch.Tensor:
        angles = tau[:, None] * self.freqs.to(tau.dtype)
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        features = torch.cat([self.embed(s), self.embed(t)], dim=1).to(self.linear.weight.dtype)
        return self.linear(features).squeeze(1)
