"""Mixed precision: the network's matrix products under bf16 autocast, everything else in fp32.

Only the network runs under ``torch.autocast``; its output is cast back to the input's dtype, so
the objective's residuals, time derivatives and loss stay in fp32 (peers' numerical hygiene,
docs/math.md §3). A network's native ``jvp`` and ``jvp_many`` are wrapped the same way. "auto" turns bf16 on for a CUDA
device that supports it and leaves it off on the CPU (CPU bf16 is slower there for these nets).
"""
from __future__ import annotations

import torch
from torch import nn


def autocast_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `choice` ("auto" | "bf16" | "off") on `device`, or None for fp32."""
    if choice == "off":
        return None
    if choice == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"autocast = 'bf16', but {torch.cuda.get_device_name(device)} does not support bfloat16")
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class Autocast(nn.Module):
    """``net(s, t, x)`` (and ``net.jvp``) computed under autocast, returned in x's dtype."""

    def __init__(self, net: nn.Module, dtype: torch.dtype, device_type: str):
        super().__init__()
        self.net, self.dtype, self.device_type = net, dtype, device_type
        if callable(getattr(net, "jvp", None)):
            self.jvp = self._jvp
        if callable(getattr(net, "jvp_many", None)):
            self.jvp_many = self._jvp_many

    @property
    def dropout_rate(self) -> float:
        """The wrapped network's (the network protocol: it decides whether calls pass a dropout seed)."""
        return float(getattr(self.net, "dropout_rate", 0.0))

    def forward(self, s: torch.Tensor, t: torch.Tensor, x: torch.Tensor, **options) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.net(s, t, x, **options)
        return out.to(x.dtype)

    def _jvp(self, s, t, x, ds, dt, dx, **options):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out, tangent = self.net.jvp(s, t, x, ds, dt, dx, **options)
        return out.to(x.dtype), tangent.to(x.dtype)

    def _jvp_many(self, s, t, x, tangents, live=None, **options):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out, dots = self.net.jvp_many(s, t, x, tangents, live=live, **options)
        return out.to(x.dtype), [dot.to(x.dtype) for dot in dots]


def wrap(net: nn.Module, dtype: torch.dtype | None, device: torch.device) -> nn.Module:
    return net if dtype is None else Autocast(net, dtype, device.type)
