"""Pointwise jets with a fused kernel and a hand-written backward: ``mp_silu``, the FiLM scale followed
by ``mp_silu``, clipping and the pixel norm, on a stacked jet (docs/math.md §4, the image UNet; the stacking:
flowcore.nn.unet.jvp).

The stack ``[x; ẋ_1; …; ẋ_n]`` (block 0 the primal, B rows per block) maps to

    mp_silu     y = a(x) = x·σ(x)/0.596,   ẏ_j = a'(x)·ẋ_j
    film_silu   z = y·(1 + l),  ż_j = ẏ_j·(1 + l) + y·l̇_j   (l: per sample and channel), then mp_silu
    clip        y = clamp(x, ±256),       ẏ_j = 1[|x| < 256]·ẋ_j
    pixel_norm  y = x/(r + ε),            ẏ_j = (ẋ_j − y·ṙ_j)/(r + ε),  r = rms(x), ṙ_j = mean(x·ẋ_j)/r
                (along the channel axis: per pixel, or per head and token in attention)

and back, for cotangents ``(g_y, g_ẏj)``:

    mp_silu     g_x = a'·g_y + a''·Σ_j ẋ_j·g_ẏj,   g_ẋj = a'·g_ẏj,
                a' = (σ + x·σ(1 − σ))/0.596,  a'' = σ(1 − σ)(2 + x(1 − 2σ))/0.596
    film_silu   the same through z, then the product rule, summed over pixels for g_l, g_l̇
    clip        g_x = 1[|x| < 256]·g_y,            g_ẋj = 1[|x| < 256]·g_ẏj
    pixel_norm  per pixel, from five sums over the channels (docs/math.md §4, the fused pointwise jets)

Each forward and backward is ONE pass of the extension's ``flowcore::unet_*`` kernels (csrc/unet_jet*,
CPU and CUDA) over the primal and every tangent block, where the same math in torch ops is 6–15
elementwise passes with as many stack-sized temporaries that autograd keeps. The Functions save only
their inputs (clip: a bool mask of the primal). Where the kernels are unavailable (no extension, a
dtype they lack, ``FLOWCORE_UNET_FUSED=0``) the same formulas run in torch ops; a backward that must
itself be differentiable (``create_graph``, second-order objectives) recomputes in torch ops from the
saved inputs, so double backward works. Under torch.func transforms or forward-mode AD the caller
uses plain differentiable ops instead (`plain_autograd`, flowcore.nn.unet.jvp).
"""
from __future__ import annotations

import math

import torch
from torch.autograd import Function

from ...native import extension
from ...native.ops import transforms_active
from .layers import _PIXEL_EPS, CLIP, SILU_RMS

__all__ = ["ClipJet", "FilmSiluJet", "PixelNormJet", "SiluJet", "clip_rule", "clip_tangents", "film_rule",
           "film_silu_tangents", "kernels_available", "pixel_norm_rule", "pixel_norm_tangents", "plain_autograd",
           "runs_fused", "silu_rule", "silu_tangents"]

ENV_FUSED = "FLOWCORE_UNET_FUSED"  # "0": always the torch-op formulas
_UNAVAILABLE = ("flowcore.nn: the UNet's fused pointwise kernels are unavailable ({reason}); using the "
                "equivalent torch ops (slower)")
_GAIN = 1.0 / SILU_RMS


def plain_autograd() -> bool:
    """True outside torch.func transforms and forward-mode AD (where these Functions may be used)."""
    return not transforms_active()


def kernels_available(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether the fused ``flowcore::unet_*`` kernels run for this device and dtype."""
    return extension.kernels_available("unet_silu_jet", device, dtype, switch=ENV_FUSED, unavailable=_UNAVAILABLE,
                                       family="the UNet's pointwise jets")


def runs_fused(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernels take these tensors: one dtype and device, with kernels for them."""
    first = tensors[0]
    return (all(t.dtype == first.dtype and t.device == first.device for t in tensors)
            and kernels_available(first.device, first.dtype))


def _ops():
    return torch.ops.flowcore


def _split(stack: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0, t)``: the primal block ``(B, …)`` and the tangent blocks ``(n·B, …)``, views of `stack`."""
    return stack.split([batch, stack.shape[0] - batch])


def _blocks(stack: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, ẋ)``: the primal ``(B, …)`` and the tangents ``(n, B, …)``."""
    x, tangents = _split(stack, batch)
    return x, tangents.unflatten(0, (tangents.shape[0] // batch, batch))


def _join(primal: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    return torch.cat([primal, tangents.flatten(0, 1)])


# -- the formulas in torch ops (fallback, double backward, transforms, the kernels' tests' reference) ----
# A rule maps the primal block(s) to ``(value, tangent)``: its value there, and ``tangent(*blocks)``, its
# derivative there applied to tangent blocks shaped ``(n, B, …)`` (one per input). flowcore.nn.unet.jvp
# runs the same rules under torch.func transforms; `on_stack` / `tangents_at` apply them to stacks.
def silu_slopes(x: torch.Tensor, order: int) -> list[torch.Tensor]:
    """``[a'(x)]`` or ``[a'(x), a''(x)]`` of ``a = mp_silu``."""
    sig = torch.sigmoid(x)
    slopes = [sig * (1 + x * (1 - sig)) / SILU_RMS]
    if order > 1:
        slopes.append(sig * (1 - sig) * (2 + x * (1 - 2 * sig)) / SILU_RMS)
    return slopes


def silu_rule(x: torch.Tensor):
    sig = torch.sigmoid(x)
    slope = sig * (1 + x * (1 - sig)) / SILU_RMS
    return x * sig / SILU_RMS, lambda t: t * slope


def clip_inside(x: torch.Tensor) -> torch.Tensor:
    """Where clamp(x, ±256) has derivative 1: strictly inside (torch.clamp's convention, 0 at ±256)."""
    return (x > -CLIP) & (x < CLIP)


def clip_rule(x: torch.Tensor):
    inside = clip_inside(x)
    return x.clamp(-CLIP, CLIP), lambda t: torch.where(inside, t, t.new_zeros(()))


def film_rule(y0: torch.Tensor, l0: torch.Tensor):
    """The FiLM scale ``y·(1 + l)`` (l per sample and channel, broadcast over pixels): the product rule."""
    pixels = (None,) * (y0.dim() - 2)
    scale = (l0 + 1).to(y0.dtype)[(..., *pixels)]
    return y0 * scale, lambda ty, tl: ty * scale + y0 * tl.to(ty.dtype)[(..., *pixels)]


def pixel_norm_rule(dim: int):
    """The pixel norm along `dim` (> 0): ``y = x/(r + ε)``, ``ẏ_j = (ẋ_j − y·ṙ_j)/(r + ε)``,
    ``r = rms(x)``, ``ṙ_j = mean(x·ẋ_j)/r``."""
    def rule(x: torch.Tensor):
        rms = torch.sqrt(x.square().mean(dim=dim, keepdim=True))
        inv = 1 / (rms + _PIXEL_EPS)
        y = x * inv

        def tangent(t: torch.Tensor) -> torch.Tensor:   # t: (n, B, …), so the reduced axis is dim + 1
            rms_dot = (x * t).mean(dim=dim + 1, keepdim=True) / rms
            return (t - y * rms_dot) * inv
        return y, tangent
    return rule


def on_stack(rule, *stacks: torch.Tensor, batch: int) -> torch.Tensor:
    """`rule` on stacks ``[x; ẋ_1; …]`` of `batch` rows per block: ``[value; tangent_1; …]``."""
    parts = [_blocks(stack, batch) for stack in stacks]
    value, tangent = rule(*[primal for primal, _ in parts])
    return _join(value, tangent(*[tangents for _, tangents in parts]))


def tangents_at(rule, primals: tuple[torch.Tensor, ...], tangents: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """`rule`'s tangent blocks ``(n·B, …)`` at `primals` for tangent stacks ``(n·B, …)``."""
    batch = primals[0].shape[0]
    return rule(*primals)[1](*[t.unflatten(0, (-1, batch)) for t in tangents]).flatten(0, 1)


def silu_jet_torch(stack: torch.Tensor, batch: int) -> torch.Tensor:
    return on_stack(silu_rule, stack, batch=batch)


def film_torch(y: torch.Tensor, lin: torch.Tensor, batch: int) -> torch.Tensor:
    """The FiLM scale on stacks: ``[y0·s; ẏ_j·s + y0·l̇_j]``, ``s = 1 + l0`` (broadcast over pixels)."""
    return on_stack(film_rule, y, lin, batch=batch)


def pixel_norm_torch(stack: torch.Tensor, batch: int, dim: int) -> torch.Tensor:
    """The pixel norm along `dim` (> 0) on a stack (`pixel_norm_rule`)."""
    return on_stack(pixel_norm_rule(dim), stack, batch=batch)


def _columns(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``(…, C, …) -> (O, C, I)`` around axis `dim`: the layout of the pixel-norm kernels (a view)."""
    return x.reshape(math.prod(x.shape[:dim]), x.shape[dim], math.prod(x.shape[dim + 1:]))


# -- the Functions -----------------------------------------------------------------------------------
class SiluJet(Function):
    """``stack -> [mp_silu(x); a'(x)·ẋ_j]``; saves only the stack."""

    @staticmethod
    def forward(ctx, stack: torch.Tensor, batch: int) -> torch.Tensor:
        ctx.batch = batch
        ctx.save_for_backward(stack)
        if runs_fused(stack):
            return _ops().unet_silu_jet(*_split(stack, batch), _GAIN, True)
        return silu_jet_torch(stack, batch)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (stack,) = ctx.saved_tensors
        if runs_fused(stack, grad) and not torch.is_grad_enabled():
            return _ops().unet_silu_jet_bwd(*_split(stack, ctx.batch), grad, _GAIN), None
        x, tangents = _blocks(stack, ctx.batch)
        g_y, g_tangents = _blocks(grad, ctx.batch)
        slope, curvature = silu_slopes(x, 2)
        g_x = slope * g_y + curvature * (tangents * g_tangents).sum(0)
        return _join(g_x, g_tangents * slope), None


class FilmSiluJet(Function):
    """``(y, lin) -> mp_silu jet of the FiLM scale [y0·s; ẏ_j·s + y0·l̇_j]``, ``s = 1 + l0``: the
    block's ``mp_silu(y·(1 + gain·Lin(emb)))`` in one pass; saves only its two input stacks."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, lin: torch.Tensor, batch: int) -> torch.Tensor:
        ctx.batch = batch
        ctx.save_for_backward(y, lin)
        if runs_fused(y, lin) and y.dim() >= 2:
            (y0, yt), (l0, lt) = _split(y, batch), _split(lin, batch)
            return _ops().unet_film_silu_jet(y0, l0, yt, lt, _GAIN, True)
        return silu_jet_torch(film_torch(y, lin, batch), batch)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        y, lin = ctx.saved_tensors
        if runs_fused(y, lin, grad) and not torch.is_grad_enabled():
            (y0, yt), (l0, lt) = _split(y, ctx.batch), _split(lin, ctx.batch)
            g_y, g_lin = _ops().unet_film_silu_jet_bwd(y0, l0, yt, lt, grad, _GAIN)
            return g_y, g_lin, None
        # recomputed in torch ops from the saved inputs: a differentiable backward under create_graph
        with torch.enable_grad():
            inputs = [t if t.requires_grad else t.detach().requires_grad_() for t in (y, lin)]
            out = silu_jet_torch(film_torch(*inputs, ctx.batch), ctx.batch)
            g_y, g_lin = torch.autograd.grad(out, inputs, grad, create_graph=torch.is_grad_enabled())
        return g_y, g_lin, None


class PixelNormJet(Function):
    """``stack -> [x/(r + ε); (ẋ_j − y·ṙ_j)/(r + ε)]`` along `dim`; saves only the stack."""

    @staticmethod
    def forward(ctx, stack: torch.Tensor, batch: int, dim: int) -> torch.Tensor:
        ctx.batch, ctx.dim = batch, dim
        ctx.save_for_backward(stack)
        if runs_fused(stack):
            x0, tangents = _split(stack, batch)
            out = _ops().unet_pixel_norm_jet(_columns(x0, dim), _columns(tangents, dim), _PIXEL_EPS, True)
            return out.view(stack.shape)
        return pixel_norm_torch(stack, batch, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (stack,) = ctx.saved_tensors
        if runs_fused(stack, grad) and not torch.is_grad_enabled():
            x0, tangents = _split(stack, ctx.batch)
            g = _ops().unet_pixel_norm_jet_bwd(_columns(x0, ctx.dim), _columns(tangents, ctx.dim),
                                               _columns(grad.contiguous(), ctx.dim), _PIXEL_EPS)
            return g.view(stack.shape), None, None
        with torch.enable_grad():
            leaf = stack if stack.requires_grad else stack.detach().requires_grad_()
            (g,) = torch.autograd.grad(pixel_norm_torch(leaf, ctx.batch, ctx.dim), leaf, grad,
                                       create_graph=torch.is_grad_enabled())
        return g, None, None


class ClipJet(Function):
    """``stack -> [clamp(x, ±256); 1[|x| < 256]·ẋ_j]``; saves only the primal's bool mask."""

    @staticmethod
    def forward(ctx, stack: torch.Tensor, batch: int) -> torch.Tensor:
        ctx.batch = batch
        if runs_fused(stack):
            out, inside = _ops().unet_clip_jet(*_split(stack, batch), CLIP, True)
        else:
            inside = clip_inside(stack[:batch])
            out = on_stack(clip_rule, stack, batch=batch)
        ctx.save_for_backward(inside)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return torch.where(inside, grad.unflatten(0, (-1, ctx.batch)), grad.new_zeros(())).flatten(0, 1), None


# -- stop-gradient ("dead") tangents at a primal, without a graph ---------------------------------------
@torch.no_grad()
def silu_tangents(x0: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """``a'(x0)·ẋ_j`` for the tangent blocks ``(n·B, …)``."""
    if runs_fused(x0, tangents):
        return _ops().unet_silu_jet(x0, tangents, _GAIN, False)
    return tangents_at(silu_rule, (x0,), (tangents,))


@torch.no_grad()
def film_silu_tangents(y0: torch.Tensor, l0: torch.Tensor, y_tangents: torch.Tensor,
                       l_tangents: torch.Tensor) -> torch.Tensor:
    """The tangent blocks of `FilmSiluJet` at the primal ``(y0, l0)``."""
    if runs_fused(y0, l0, y_tangents, l_tangents) and y0.dim() >= 2:
        return _ops().unet_film_silu_jet(y0, l0, y_tangents, l_tangents, _GAIN, False)
    batch = y0.shape[0]
    z0, z_tangent = film_rule(y0, l0)
    z_tangents = z_tangent(y_tangents.unflatten(0, (-1, batch)), l_tangents.unflatten(0, (-1, batch))).flatten(0, 1)
    return tangents_at(silu_rule, (z0,), (z_tangents,))


@torch.no_grad()
def clip_tangents(x0: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """``1[|x0| < 256]·ẋ_j``."""
    if runs_fused(x0, tangents):
        return _ops().unet_clip_jet(x0, tangents, CLIP, False)[0]
    return tangents_at(clip_rule, (x0,), (tangents,))


@torch.no_grad()
def pixel_norm_tangents(x0: torch.Tensor, tangents: torch.Tensor, dim: int) -> torch.Tensor:
    """The pixel norm's tangent blocks at the primal `x0`."""
    if runs_fused(x0, tangents):
        out = _ops().unet_pixel_norm_jet(_columns(x0, dim), _columns(tangents, dim), _PIXEL_EPS, False)
        return out.view(tangents.shape)
    return tangents_at(pixel_norm_rule(dim), (x0,), (tangents,))
