"""Cosine multi-head self-attention over pixels (docs/math.md §4, the image UNet and the attention JVP).

q, k and v come from one 1×1 MP convolution; each head's q, k and v (64 channels per head by
default) is pixel-normed, so a score ``q·k/√d`` is a scaled cosine and the softmax cannot saturate
as weights grow. It is written with ``matmul`` and ``softmax``: PyTorch's
``scaled_dot_product_attention`` has no forward-mode derivative, and ``torch.func.jvp`` must run
through the whole network; the native path (flowcore.nn.unet.jvp) runs the fused attention JVP of
docs/math.md §4 instead. The
output is projected by another 1×1 MP convolution and blended into the input with
``mp_sum(x, y, balance)`` (balance 0.3).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import MPConv, mp_sum, pixel_norm


class CosineAttention(nn.Module):
    """``x -> mp_sum(x, proj(attention(x)), balance)`` on ``(B, channels, H, W)``, with
    ``channels / channels_per_head`` heads (`channels` must be a multiple of `channels_per_head`)."""

    def __init__(self, channels: int, channels_per_head: int = 64, balance: float = 0.3):
        super().__init__()
        if channels_per_head < 1 or channels % channels_per_head:
            raise ValueError(f"attention over {channels} channels needs channels_per_head dividing it, "
                             f"got channels_per_head = {channels_per_head}")
        self.heads, self.head_channels, self.balance = channels // channels_per_head, channels_per_head, balance
        self.qkv = MPConv(channels, 3 * channels, (1, 1))
        self.proj = MPConv(channels, channels, (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).reshape(b, self.heads, self.head_channels, 3, h * w)
        q, k, v = pixel_norm(qkv, dim=2).unbind(dim=3)                       # (B, heads, d, HW) each
        scores = torch.matmul(q.transpose(-1, -2), k) / math.sqrt(self.head_channels)   # (B, heads, HW, HW)
        weights = torch.softmax(scores, dim=-1)
        y = torch.matmul(v, weights.transpose(-1, -2))                       # (B, heads, d, HW)
        return mp_sum(x, self.proj(y.reshape(b, c, h, w)), self.balance)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, channels_per_head={self.head_channels}, balance={self.balance}"
