"""The learned log-variance head for images (docs/math.md §4, learned loss weight):

    w_{s,t} = Lin(mp_sum(PE_128(s), PE_128(t), 0.5))

of the raw times s and t (not t − s), PE the UNet's positional embedding (flowcore.nn.unet.embedding).
``Lin`` is a bias-free linear initialised to zero, so ``w = 0`` at initialisation: the weighted loss
``exp(−w)·ℓ + w`` starts as the unweighted one (docs/math.md §3), while the features are non-zero,
so the weight's gradient is not. It is a weight head of the protocol ``weight_net(s, t) -> (B,)``
(docs/design.md, the network protocol), usable by any ``learned_logvar`` objective.
"""
from __future__ import annotations

import torch
from torch import nn

from .embedding import PositionalEmbedding
from .layers import mp_sum


class ImageLogVarHead(nn.Module):
    """``w(s, t) -> (B,)`` from `features` positional-embedding channels per time (128 in the paper)."""

    def __init__(self, features: int = 128, time_scale: float = 1.0):
        super().__init__()
        self.pe = PositionalEmbedding(features, scale=time_scale)
        self.linear = nn.Linear(features, 1, bias=False)
        nn.init.zeros_(self.linear.weight)

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        features = mp_sum(self.pe(s), self.pe(t), 0.5).to(self.linear.weight.dtype)
        return self.linear(features).squeeze(1)
