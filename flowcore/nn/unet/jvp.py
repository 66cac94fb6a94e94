"""The UNet's native JVP: the primal and k tangents stacked along the batch through the whole network
(docs/math.md §4, the image UNet and the attention JVP; the network protocol in docs/design.md).

A `Jet` holds ``[h; ḣ_1; …; ḣ_T]`` as ONE tensor ``((1+T)·B, …)``: every linear piece — the MP
convolutions and linears (their weight normalised once per call), ``mp_sum``, ``mp_cat``, the
resampling, the dropout mask — is one call on the stack, since a linear map sends each tangent
through itself. The nonlinear pieces take the primal block and apply their derivative at it to the
tangent blocks, with explicit formulas (the rules of flowcore.nn.unet.pointwise, which the fused
kernels' fallbacks share):

- ``mp_silu``: ``ẏ = (σ(x) + x·σ(x)(1 − σ(x)))/0.596 · ẋ``;
- ``pixel_norm``: ``y = x/(r + ε)``, ``r = rms(x)``: ``ẏ = (ẋ − y·ṙ)/(r + ε)``, ``ṙ = mean(x·ẋ)/r``;
- the FiLM scale ``y·(1 + g·Lin(emb))``: the product rule, ``ẏ·scale + y·g·Lin(ėmb)``;
- clipping to ±256: ``ẋ`` where the primal lies inside, 0 outside (torch's rule for ``clamp``);
- the positional embedding ``PE(τ) = √2[cos ωτ, sin ωτ]``: ``√2[−ω sin ωτ, ω cos ωτ]·τ̇``;
- attention: ``flowcore.nn.attention_jvp`` (o and ȯ in one pass, docs/math.md §4).

Each is written as plain differentiable torch ops on the stack: autograd differentiates the tangent
formulas themselves (the backward THROUGH the tangent that LSD needs, second derivatives included),
and under torch.func transforms or forward-mode AD that is the path taken. In plain autograd the
nonlinear pieces — ``mp_silu``, the FiLM scale with the ``mp_silu`` after it, clipping and the pixel
norm — are autograd Functions over the extension's fused kernels (flowcore.nn.unet.pointwise,
csrc/unet_jet*): one pass over the primal and every tangent block forward and backward, saving only
their inputs (digits UNet, batch 512: peak memory of a JVP + backward 1.56 GiB in plain torch ops,
1.11 GiB once the pixel norm kept only its input; the forward + backward's 0.87 GiB). Every layer's
weight is normalised by one op per call (flowcore.nn.unet.normalised_weights).

Tangents needed only under stop-gradient (``live[j] = False``) are a second stack, `Jet.dead`,
pushed through the same ops under ``torch.no_grad`` with the primal's factors: they share the
normalised weights and the primal but are never part of the backward.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from ..attention_jvp import attention as fused_attention
from ..attention_jvp import attention_jvp
from .blocks import RESAMPLE, UNetBlock, dropout_mask
from .layers import MPConv, mp_cat, mp_sum
from .normalised_weights import NormalisedWeights
from .pointwise import (
    ClipJet,
    FilmSiluJet,
    PixelNormJet,
    SiluJet,
    clip_rule,
    clip_tangents,
    film_rule,
    film_silu_tangents,
    pixel_norm_rule,
    pixel_norm_tangents,
    plain_autograd,
    silu_rule,
    silu_tangents,
)

__all__ = ["Jet", "network_jvp"]


@dataclass(frozen=True)
class Jet:
    """A value and its tangents stacked along the first axis, `batch` rows per block.

    ``live``: ``((1+T)·B, …)``, block 0 the primal, then the T tangents that carry gradients;
    ``dead``: ``(K·B, …)``, the K tangents computed without a graph, or None."""

    live: torch.Tensor
    dead: torch.Tensor | None
    batch: int

    @property
    def primal(self) -> torch.Tensor:
        return self.live[:self.batch]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Jet":
        """A LINEAR map applied to every block at once (one call per stack)."""
        return Jet(fn(self.live), _no_grad(fn, self.dead), self.batch)

    def blocks(self, which: str) -> list[torch.Tensor]:
        """The tangents of the live (without the primal) or the dead stack, one tensor each."""
        stack = self.live[self.batch:] if which == "live" else self.dead
        return [] if stack is None else list(stack.split(self.batch))


def _no_grad(fn: Callable, *stacks):
    if stacks[0] is None:
        return None
    with torch.no_grad():
        return fn(*stacks)


def _unstack(stack: torch.Tensor, batch: int) -> torch.Tensor:
    """``(n·B, …) -> (n, B, …)``, so a factor shaped like the primal broadcasts over the n blocks."""
    return stack.unflatten(0, (stack.shape[0] // batch, batch))


def _combine(fn: Callable[..., torch.Tensor], *jets: Jet) -> Jet:
    """A map LINEAR in each of several jets of one stacking (mp_sum, mp_cat, t − s)."""
    dead = _no_grad(fn, *[j.dead for j in jets])
    return Jet(fn(*[j.live for j in jets]), dead, jets[0].batch)


def _nonlinear(rule: Callable, *jets: Jet, recompute: bool = False) -> Jet:
    """The jet of a nonlinear piece. ``rule(*primals) -> (value, tangent)``: its result at the
    primal blocks, and ``tangent(*blocks)``, its derivative there applied to tangent blocks shaped
    ``(n, B, …)`` (one per input jet). Live tangents keep the graph (the backward runs through the
    formula); dead ones run without. Each live stack is split once into primal and tangents (a
    split's backward is one concatenation, where slices would each fill a zero buffer).
    `recompute`: keep only the inputs and recompute the live stack in the backward."""
    batch = jets[0].batch

    def live_stack(*stacks: torch.Tensor) -> tuple[torch.Tensor, Callable]:
        parts = [stack.split([batch, stack.shape[0] - batch]) for stack in stacks]
        value, tangent = rule(*[primal for primal, _ in parts])
        if not parts[0][1].shape[0]:
            return value, tangent
        return torch.cat([value, tangent(*[_unstack(rest, batch) for _, rest in parts]).flatten(0, 1)]), tangent

    if recompute and torch.is_grad_enabled() and plain_autograd():
        live = checkpoint(lambda *stacks: live_stack(*stacks)[0], *[j.live for j in jets], use_reentrant=False)
        tangent = None if jets[0].dead is None else _no_grad(lambda *p: rule(*p)[1], *[j.live[:batch] for j in jets])
    else:
        live, tangent = live_stack(*[j.live for j in jets])
    dead = _no_grad(lambda *d: tangent(*[_unstack(s, batch) for s in d]).flatten(0, 1), *[j.dead for j in jets])
    return Jet(live, dead, batch)


# -- the pieces -------------------------------------------------------------------------------------
def conv(jet: Jet, layer: MPConv, weights: NormalisedWeights, gain: float | torch.Tensor = 1.0) -> Jet:
    """An MP convolution or linear: its weight normalised once per network call (`weights`), one call
    per stack."""
    w = weights(layer, jet.live.dtype, gain)
    return jet.map(lambda z: layer.apply_weight(z, w))


def branch_sum(x: Jet, y: Jet, layer: MPConv, w: float, weights: NormalisedWeights) -> Jet:
    """``mp_sum(x, layer(y), w)`` with the branch's factor ``w/‖(1 − w, w)‖`` folded into the
    normalised weight: one ``add`` per stack instead of three passes and a division."""
    norm = math.hypot(1 - w, w)
    return _combine(lambda a, u: torch.add(u, a, alpha=(1 - w) / norm), x, conv(y, layer, weights, gain=w / norm))


def _pointwise(function: type, tangents: Callable, rule: Callable, jet: Jet) -> Jet:
    """A pointwise piece: the live stack through its Function (fused kernel, hand-written backward;
    flowcore.nn.unet.pointwise), the dead stack through `tangents` at the primal, without a graph;
    under torch.func transforms or forward-mode AD, `rule`'s differentiable torch ops."""
    if not plain_autograd():
        return _nonlinear(rule, jet)
    dead = None if jet.dead is None else tangents(jet.primal, jet.dead)
    return Jet(function.apply(jet.live, jet.batch), dead, jet.batch)


def mp_silu(jet: Jet) -> Jet:
    return _pointwise(SiluJet, silu_tangents, silu_rule, jet)


def pixel_norm(jet: Jet, dim: int = 1) -> Jet:
    """`flowcore.nn.unet.layers.pixel_norm` along `dim` (> 0: a per-sample axis)."""
    if not plain_autograd():
        return _nonlinear(pixel_norm_rule(dim), jet, recompute=True)
    dead = None if jet.dead is None else pixel_norm_tangents(jet.primal, jet.dead, dim)
    return Jet(PixelNormJet.apply(jet.live, jet.batch, dim), dead, jet.batch)


def clip_activations(jet: Jet) -> Jet:
    return _pointwise(ClipJet, clip_tangents, clip_rule, jet)


def film(y: Jet, lin: Jet) -> Jet:
    """``y · (1 + lin)`` with `lin` = ``gain·Lin(emb)`` per sample and channel: the product rule."""
    return _nonlinear(film_rule, y, lin)


def film_silu(y: Jet, lin: Jet) -> Jet:
    """``mp_silu(film(y, lin))`` in one fused pass (`FilmSiluJet`) in plain autograd."""
    if not plain_autograd() or y.live.dtype != lin.live.dtype:
        return mp_silu(film(y, lin))
    dead = None if y.dead is None else film_silu_tangents(y.primal, lin.primal, y.dead, lin.dead)
    return Jet(FilmSiluJet.apply(y.live, lin.live, y.batch), dead, y.batch)


def positional(pe: torch.nn.Module, tau: Jet) -> Jet:
    """``PE(τ) = √2[cos ωτ, sin ωτ]`` (flowcore.nn.unet.embedding) and its derivative in τ."""
    def rule(tau0: torch.Tensor):
        freqs = pe.freqs.to(tau0.dtype)
        angles = tau0[:, None] * freqs
        cos, sin = torch.cos(angles), torch.sin(angles)
        slope = math.sqrt(2) * torch.cat([-sin * freqs, cos * freqs], dim=1)
        return math.sqrt(2) * torch.cat([cos, sin], dim=1), lambda t: t[..., None] * slope
    return _nonlinear(rule, tau)


def embedding(module: torch.nn.Module, s: Jet, t: Jet, weights: NormalisedWeights) -> Jet:
    """``mp_silu(mp_sum(Lin_s(PE(s)), Lin_d(PE(t − s)), 0.5))`` (flowcore.nn.unet.embedding)."""
    e_s = conv(positional(module.pe, s), module.linear_s, weights)
    e_d = conv(positional(module.pe, _combine(torch.sub, t, s)), module.linear_d, weights)
    return mp_silu(_combine(lambda a, b: mp_sum(a, b, 0.5), e_s, e_d))


def attention(module: torch.nn.Module, x: Jet, weights: NormalisedWeights) -> Jet:
    """`CosineAttention`: q, k, v from one stacked 1×1 convolution and a stacked pixel norm, then
    ``attention_jvp`` with the primal repeated once per tangent (the tangents batched in one call;
    the dead ones in a second call without a graph; with only dead tangents the primal goes through
    the primal-only ``attention``), projection and ``mp_sum``."""
    batch = x.batch
    b, c, h, w = x.primal.shape
    heads, hc = module.heads, module.head_channels
    qkv = conv(x, module.qkv, weights).map(lambda z: z.reshape(z.shape[0], heads, hc, 3, h * w))
    qkv = pixel_norm(qkv, dim=2)

    def split(stack: torch.Tensor) -> list[torch.Tensor]:   # (n, heads, hc, 3, HW) -> 3 × (n, heads, HW, hc)
        return [u.transpose(-1, -2) for u in stack.unbind(dim=3)]

    def with_tangents(primal: list[torch.Tensor], tangents: list[torch.Tensor], **options):
        repeats = tangents[0].shape[0] // batch
        if repeats > 1:
            primal = [p.repeat(repeats, 1, 1, 1) for p in primal]
        return attention_jvp(*primal, *tangents, **options)

    primal_stack, moving = qkv.live.split([batch, qkv.live.shape[0] - batch])
    primal = split(primal_stack)
    if moving.shape[0]:
        o, o_dot = with_tangents(primal, split(moving))
        out_live = torch.cat([o[:batch], o_dot])
    else:
        out_live = fused_attention(*primal)
    out_dead = _no_grad(lambda d: with_tangents(primal, split(d), tangent_grad=False)[1], qkv.dead)
    y = Jet(out_live, out_dead, batch).map(lambda o: o.transpose(-1, -2).reshape(o.shape[0], c, h, w))
    return branch_sum(x, y, module.proj, module.balance, weights)


def block(module: UNetBlock, x: Jet, emb: Jet, weights: NormalisedWeights, generator: torch.Generator | None
          ) -> Jet:
    """`UNetBlock.forward` on jets; the dropout mask is drawn as the forward draws it (same generator
    order, the primal's shape) and multiplies every block of the stack."""
    resample = RESAMPLE[module.resample]
    if resample is not None:
        x = x.map(resample)
    if module.flavor == "enc":
        if module.conv_skip is not None:
            x = conv(x, module.conv_skip, weights)
        x = pixel_norm(x)
    y = conv(mp_silu(x), module.conv_res0, weights)
    y = film_silu(y, conv(emb, module.emb_linear, weights, gain=module.emb_gain))
    if generator is not None and module.dropout > 0:
        mask = dropout_mask(y.primal, module.dropout, generator)
        y = y.map(lambda z: (_unstack(z, y.batch) * mask).flatten(0, 1))
    if module.flavor == "dec" and module.conv_skip is not None:
        x = conv(x, module.conv_skip, weights)
    x = branch_sum(x, y, module.conv_res1, module.res_balance, weights)
    if module.attention is not None:
        x = attention(module.attention, x, weights)
    return clip_activations(x)


# -- the network ------------------------------------------------------------------------------------
def _stack(primal: torch.Tensor | None, parts: list[torch.Tensor]) -> torch.Tensor | None:
    pieces = ([] if primal is None else [primal]) + parts
    return torch.cat(pieces) if pieces else None


def network_jvp(net: torch.nn.Module, s: torch.Tensor, t: torch.Tensor, x: torch.Tensor,
                tangents: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], live: list[bool],
                generator: torch.Generator | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(v̂, [v̇_1, …, v̇_k])`` of `FlowMapUNet` `net` (its forward, on jets): `tangents` are full
    ``(ṡ, ṫ, ẋ)`` triples (no None), checked and in x's dtype; ``live[j] = False`` puts tangent j
    in the dead stack."""
    batch = x.shape[0]
    alive = [tangent for tangent, keep in zip(tangents, live) if keep]
    dead = [tangent for tangent, keep in zip(tangents, live) if not keep]

    def jet(index: int, primal: torch.Tensor) -> Jet:
        return Jet(_stack(primal, [tg[index] for tg in alive]),
                   _stack(None, [tg[index].detach() for tg in dead]), batch)

    weights = NormalisedWeights(net)
    emb = embedding(net.embedding, jet(0, s), jet(1, t), weights)
    h = jet(2, x).map(lambda z: z / net.sigma_data)
    # the constant input channel: ones on the primal rows, a zero tangent
    ones = torch.ones_like(x[:, :1])
    h = Jet(torch.cat([h.live, torch.cat([ones, ones.new_zeros((h.live.shape[0] - batch, *ones.shape[1:]))])], 1),
            None if h.dead is None else torch.cat([h.dead, torch.zeros_like(h.dead[:, :1])], 1), batch)
    h = conv(h, net.conv_in, weights)
    skips = [h]
    for module in net.encoder:
        h = block(module, h, emb, weights, generator)
        skips.append(h)
    for module, takes_skip in zip(net.decoder, net.decoder_takes_skip):
        if takes_skip:
            h = _combine(mp_cat, h, skips.pop())
        h = block(module, h, emb, weights, generator)
    out = conv(h, net.conv_out, weights, gain=net.out_gain).map(lambda z: net.sigma_data * z)
    v, *moving = out.live.split(batch)
    live_dots, dead_dots = iter(moving), iter(out.blocks("dead"))
    return v, [next(live_dots) if keep else next(dead_dots) for keep in live]
