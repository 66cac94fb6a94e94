"""Pointwise jets with a hand-written backward: ``mp_silu`` and clipping on a stacked jet
(docs/math.md §4, the image UNet; the stacking: flowcore.nn.unet.jvp).

The stack ``[x; ẋ_1; …; ẋ_n]`` (block 0 the primal, B rows per block) maps to

    mp_silu   y = x·σ(x)/0.596,  ẏ_j = a'(x)·ẋ_j,     a'  = (σ + x·σ(1 − σ))/0.596
    clip      y = clamp(x, ±256), ẏ_j = 1[|x| ≤ 256]·ẋ_j

and back, for cotangents ``(g_y, g_ẏj)``:

    mp_silu   g_x = a'·g_y + a''·Σ_j ẋ_j·g_ẏj,   g_ẋj = a'·g_ẏj,
              a'' = σ(1 − σ)(2 + x(1 − 2σ))/0.596
    clip      g_x = 1[|x| ≤ 256]·g_y,             g_ẋj = 1[|x| ≤ 256]·g_ẏj

Written as plain torch ops on the stack, autograd keeps every intermediate (σ, 1 − σ, the slope,
the products) for the backward; these Functions keep only the input stack (mp_silu) or one bool
mask of the primal (clip) and recompute the factors. Their backward is itself differentiable torch
ops, so double backward works. They are plain autograd Functions: under torch.func transforms or
forward-mode AD the caller uses the equivalent plain ops instead (`plain_autograd`).
"""
from __future__ import annotations

import torch
from torch.autograd import Function

from ...native.ops import transforms_active
from .layers import CLIP, SILU_RMS

__all__ = ["ClipJet", "SiluJet", "plain_autograd"]


def plain_autograd() -> bool:
    """True outside torch.func transforms and forward-mode AD (where these Functions may be used)."""
    return not transforms_active()


def _blocks(stack: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, ẋ)``: the primal ``(B, …)`` and the tangents ``(n, B, …)``."""
    x, tangents = stack.split([batch, stack.shape[0] - batch])
    return x, tangents.unflatten(0, (tangents.shape[0] // batch, batch))


def _join(primal: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    return torch.cat([primal, tangents.flatten(0, 1)])


def silu_slopes(x: torch.Tensor, order: int) -> list[torch.Tensor]:
    """``[a'(x)]`` or ``[a'(x), a''(x)]`` of ``a = mp_silu``."""
    sig = torch.sigmoid(x)
    slopes = [sig * (1 + x * (1 - sig)) / SILU_RMS]
    if order > 1:
        slopes.append(sig * (1 - sig) * (2 + x * (1 - 2 * sig)) / SILU_RMS)
    return slopes


class SiluJet(Function):
    """``stack -> [mp_silu(x); a'(x)·ẋ_j]``; saves only the stack."""

    @staticmethod
    def forward(ctx, stack: torch.Tensor, batch: int) -> torch.Tensor:
        x, tangents = _blocks(stack, batch)
        sig = torch.sigmoid(x)
        slope = sig * (1 + x * (1 - sig)) / SILU_RMS
        ctx.batch = batch
        ctx.save_for_backward(stack)
        return _join(x * sig / SILU_RMS, tangents * slope)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (stack,) = ctx.saved_tensors
        x, tangents = _blocks(stack, ctx.batch)
        g_y, g_tangents = _blocks(grad, ctx.batch)
        slope, curvature = silu_slopes(x, 2)
        g_x = slope * g_y + curvature * (tangents * g_tangents).sum(0)
        return _join(g_x, g_tangents * slope), None


class ClipJet(Function):
    """``stack -> [clamp(x, ±256); 1[|x| ≤ 256]·ẋ_j]``; saves only the primal's bool mask."""

    @staticmethod
    def forward(ctx, stack: torch.Tensor, batch: int) -> torch.Tensor:
        x, tangents = _blocks(stack, batch)
        inside = (x >= -CLIP) & (x <= CLIP)
        ctx.batch = batch
        ctx.save_for_backward(inside)
        return _join(x.clamp(-CLIP, CLIP), torch.where(inside, tangents, tangents.new_zeros(())))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return torch.where(inside, grad.unflatten(0, (-1, ctx.batch)), grad.new_zeros(())).flatten(0, 1), None
