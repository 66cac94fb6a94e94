"""The UNet's residual block, for the encoder and the decoder (docs/math.md §4, the image UNet).

One block at one resolution:

    x  <- resample(x)                                  (down in the encoder, up in the decoder, or none)
    x  <- pixel_norm(skip_conv(x))                     (encoder: shortcut projected, then normalised)
    y  = conv3(mp_silu(x))
    y  = mp_silu(y · (1 + gain·Lin(emb)))              (FiLM scale of the two-time embedding, no shift)
    y  = dropout(y)                                    (only when the call asks for it)
    y  = conv3(y)
    x  <- skip_conv(x)                                 (decoder: shortcut projected after the branch)
    x  <- mp_sum(x, y, 0.3)                            (residual balance)
    x  <- attention(x)                                 (at the attention resolutions)
    x  <- clip(x, ±256)

``gain`` starts at 0, so every block starts with the scale ``1``: at initialisation the network's
activation statistics are those of a time-independent stack, which is what the magnitude-preserving
layers are designed for, and the time dependence grows from there (the gradient of the gain is
``⟨Lin(emb), …⟩ ≠ 0``). The output gain of the whole network is 0 as well (docs/math.md §4), so
time enters training through these gains and the zero output together.

Dropout runs only in calls that pass a generator: the network's forward makes one from the call's
``dropout_seed`` (flowcore.terms draws one per dropout term and step; docs/math.md §4: only the
diagonal calls drop out). The mask is drawn from that generator, not from the global stream, so a
call evaluated twice — its primal and a JVP pass, the reference interpreter and a compiled
objective — sees the same mask, and under ``torch.func.jvp`` the tangent is masked like the primal.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import CosineAttention
from .layers import MPConv, clip_activations, downsample, mp_silu, mp_sum, pixel_norm, upsample

RESAMPLE = {"none": None, "down": downsample, "up": upsample}


def dropout_mask(like: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Inverted dropout's ``keep / (1 − p)`` shaped like `like`, drawn from `generator` in float32
    whatever `like`'s dtype, so the same seed gives the same mask in float32, float64 and bf16."""
    keep = torch.rand(like.shape, generator=generator, dtype=torch.float32, device=like.device) >= p
    return keep.to(like.dtype) / (1 - p)


class UNetBlock(nn.Module):
    """A residual block ``(x, emb) -> x'``: `in_channels` -> `out_channels` at `resolution` (the
    output's H = W). ``flavor`` is ``"enc"`` or ``"dec"``; ``resample`` ``"none"``, ``"down"`` or ``"up"``."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, *, flavor: str, resolution: int,
                 resample: str = "none", attention: bool = False, channels_per_head: int = 64,
                 dropout: float = 0.0, res_balance: float = 0.3, attn_balance: float = 0.3):
        super().__init__()
        if flavor not in ("enc", "dec"):
            raise ValueError(f"a UNet block's flavor is 'enc' or 'dec', got {flavor!r}")
        if resample not in RESAMPLE:
            raise ValueError(f"a UNet block's resample is one of {', '.join(RESAMPLE)}, got {resample!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.flavor, self.resample, self.resolution = flavor, resample, resolution
        self.in_channels, self.out_channels = in_channels, out_channels
        self.dropout, self.res_balance = float(dropout), res_balance
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, (3, 3))
        self.emb_linear = MPConv(emb_channels, out_channels)
        self.emb_gain = nn.Parameter(torch.zeros([]))
        self.conv_res1 = MPConv(out_channels, out_channels, (3, 3))
        self.conv_skip = MPConv(in_channels, out_channels, (1, 1)) if in_channels != out_channels else None
        self.attention = CosineAttention(out_channels, channels_per_head, attn_balance) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, dropout: torch.Generator | None = None) -> torch.Tensor:
        resample = RESAMPLE[self.resample]
        if resample is not None:
            x = resample(x)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = pixel_norm(x)
        y = self.conv_res0(mp_silu(x))
        scale = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * scale.to(y.dtype)[:, :, None, None])
        if dropout is not None and self.dropout > 0:
            y = y * dropout_mask(y, self.dropout, dropout)
        y = self.conv_res1(y)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, self.res_balance)
        if self.attention is not None:
            x = self.attention(x)
        return clip_activations(x)

    def extra_repr(self) -> str:
        return (f"{self.flavor}, {self.in_channels} -> {self.out_channels} at {self.resolution}×{self.resolution}, "
                f"resample={self.resample}, dropout={self.dropout:g}")
