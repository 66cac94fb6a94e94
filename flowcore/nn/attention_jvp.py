"""Attention with its JVP and a backward through both outputs (docs/math.md §4, attention JVP).

For ``s = scale·q kᵀ`` (no mask), ``p = softmax_rows(s)``, ``o = p v`` and tangents ``q̇, k̇, v̇``:

    ṡ = scale·(q̇ kᵀ + q k̇ᵀ),   μ_i = Σ_j p_ij ṡ_ij,   ȯ_i = Σ_j p_ij (ṡ_ij v_j + v̇_j) − μ_i o_i

— every sum is over keys with the softmax weights, so one pass over key tiles with an online
softmax gives ``o``, ``ȯ``, the row log-sum-exp and ``μ`` without an N×N matrix. The backward
(gradients of all six inputs from gradients on ``o`` and ``ȯ``) is derived in docs/math.md §4 and
recomputes the tiles from the saved ``lse`` and ``μ``.

Three modes:

* `attention_jvp(..., tangent_grad=True)` — both outputs differentiable (LSD trains through ȯ);
* `attention_jvp(..., tangent_grad=False)` — the dead-tangent mode: ȯ is needed only under a
  stop-gradient, so it carries no graph and nothing is saved for it; ``o`` stays differentiable;
* `attention(q, k, v)` — primal only; its forward-mode rule is exactly `attention_jvp`, so
  ``torch.func.jvp`` of a module that uses it works, and is differentiable.

The kernels are the extension's ``flowcore::attention_jvp_fwd`` / ``attention_jvp_bwd`` /
``attention_fwd`` / ``attention_bwd`` (csrc/attention_*); where they are unavailable (no extension,
a dtype they lack, ``FLOWCORE_ATTENTION_FUSED=0``) the same math runs in plain torch ops
(`attention_jvp_reference`, O(N²) memory). Second-order derivatives (double backward, forward mode
over `attention_jvp`) go through the reference: correct, but they materialise the score matrix.
"""
from __future__ import annotations

import math

import torch
from torch.autograd import Function

from ..native import extension
from ..native.ops import transforms_active

__all__ = ["attention", "attention_jvp", "attention_jvp_reference", "kernels_available"]

ENV_FUSED = "FLOWCORE_ATTENTION_FUSED"  # "0": always the pure-torch path
_UNAVAILABLE = ("flowcore.nn: the fused attention kernels are unavailable ({reason}); using the equivalent "
                "pure-torch attention JVP (slower, O(N²) memory)")


# -- checks -----------------------------------------------------------------------------------------
def _check(q, k, v, tangents=()):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"attention_jvp: {name} must be a 4-d tensor (B, H, N, D), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
    if k.shape != v.shape[:3] + k.shape[3:] or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"attention_jvp: shapes do not fit: q {tuple(q.shape)} (B, H, N_q, D), k {tuple(k.shape)} "
                         f"(B, H, N_k, D), v {tuple(v.shape)} (B, H, N_k, D_v)")
    if k.shape[2] == 0:
        raise ValueError(f"attention_jvp: attention over zero keys is undefined (k is {tuple(k.shape)})")
    if not (q.dtype == k.dtype == v.dtype and q.device == k.device == v.device):
        raise ValueError(f"attention_jvp: q, k, v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype} on "
                         f"{q.device}/{k.device}/{v.device}")
    for name, t, x in zip(("dq", "dk", "dv"), tangents, (q, k, v)):
        if t is not None and (t.shape != x.shape or t.dtype != x.dtype or t.device != x.device):
            raise ValueError(f"attention_jvp: tangent {name} must match {name[1]} ({tuple(x.shape)}, {x.dtype}, "
                             f"{x.device}), got ({tuple(t.shape)}, {t.dtype}, {t.device})")


def _scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


# -- the reference: plain torch math, the full score matrix --------------------------------------
def attention_jvp_reference(q, k, v, dq=None, dk=None, dv=None, *, scale=None):
    """``(o, ȯ)`` by the formula above in differentiable torch ops (softmax of the full score matrix)."""
    _check(q, k, v, (dq, dk, dv))
    scale = _scale(q, scale)
    dq, dk, dv = (torch.zeros_like(x) if t is None else t for t, x in ((dq, q), (dk, k), (dv, v)))
    p = torch.softmax(scale * (q @ k.transpose(-1, -2)), dim=-1)
    o = p @ v
    ds = scale * (dq @ k.transpose(-1, -2) + q @ dk.transpose(-1, -2))
    mu = (p * ds).sum(-1, keepdim=True)
    return o, (p * (ds - mu)) @ v + p @ dv


def _reference_tangent(x, dx, scale):
    """The JVP of `attention_jvp_reference` at ``x = (q, k, v, q̇, k̇, v̇)`` along ``dx``, written out in
    differentiable torch ops (forward-mode second order; no nested forward AD, which torch lacks)."""
    q, k, v, tq, tk, tv = x
    dq, dk, dv, dtq, dtk, dtv = dx
    kt, dkt, tkt, dtkt = (a.transpose(-1, -2) for a in (k, dk, tk, dtk))
    p = torch.softmax(scale * (q @ kt), dim=-1)
    ds = scale * (dq @ kt + q @ dkt)
    dp = p * (ds - (p * ds).sum(-1, keepdim=True))
    sdot = scale * (tq @ kt + q @ tkt)
    dsdot = scale * (dtq @ kt + tq @ dkt + dq @ tkt + q @ dtkt)
    mu = (p * sdot).sum(-1, keepdim=True)
    dmu = (dp * sdot + p * dsdot).sum(-1, keepdim=True)
    pdot = p * (sdot - mu)
    dpdot = dp * (sdot - mu) + p * (dsdot - dmu)
    return dp @ v + p @ dv, dpdot @ v + pdot @ dv + dp @ tv + p @ dtv


def _reference_stats(q, k, v, dq, dk, dv, scale):
    """The reference's ``(o, ȯ, lse, μ)`` (the kernels' saved state), not differentiable."""
    s = scale * (q @ k.transpose(-1, -2))
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None])
    o = p @ v
    ds = scale * (dq @ k.transpose(-1, -2) + q @ dk.transpose(-1, -2))
    mu = (p * ds).sum(-1)
    return o, (p * (ds - mu[..., None])) @ v + p @ dv, lse, mu


# -- kernels or fallback ------------------------------------------------------------------------------
def kernels_available(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether the fused attention kernels run for this device and dtype (loading the extension)."""
    return extension.kernels_available("attention_jvp_fwd", device, dtype, switch=ENV_FUSED,
                                       unavailable=_UNAVAILABLE, family="attention")


def _fused(q) -> bool:
    return kernels_available(q.device, q.dtype)


def _fwd(q, k, v, dq, dk, dv, scale):
    """``(o, ȯ, lse, μ)``."""
    if _fused(q):
        return torch.ops.flowcore.attention_jvp_fwd(q, k, v, dq, dk, dv, scale)
    return _reference_stats(q, k, v, dq, dk, dv, scale)


def _bwd(q, k, v, dq, dk, dv, o, ot, lse, mu, go, got, scale):
    """Gradients of ``(q, k, v, q̇, k̇, v̇)`` from ``(g_o, g_ȯ)``, not differentiable."""
    if _fused(q):
        return torch.ops.flowcore.attention_jvp_bwd(q, k, v, dq, dk, dv, o, ot, lse, mu, go, got, scale)
    with torch.enable_grad():
        inputs = [x.detach().requires_grad_() for x in (q, k, v, dq, dk, dv)]
        outs = attention_jvp_reference(*inputs, scale=scale)
        return torch.autograd.grad(outs, inputs, (go, got))


def _primal_fwd(q, k, v, scale):
    """``(o, lse)``."""
    if _fused(q):
        return torch.ops.flowcore.attention_fwd(q, k, v, scale)
    s = scale * (q @ k.transpose(-1, -2))
    lse = torch.logsumexp(s, -1)
    return torch.exp(s - lse[..., None]) @ v, lse


def _primal_bwd(q, k, v, o, lse, go, scale):
    if _fused(q):
        return torch.ops.flowcore.attention_bwd(q, k, v, o, lse, go, scale)
    with torch.enable_grad():
        inputs = [x.detach().requires_grad_() for x in (q, k, v)]
        out = attention_jvp_reference(*inputs, scale=scale)[0]
        return torch.autograd.grad(out, inputs, go)


def _zeros(tangents, like):
    return [torch.zeros_like(x) if t is None else t for t, x in zip(tangents, like)]


def _reference_vjp(inputs, grads, scale):
    """Differentiable vjp of the reference (second order: double backward)."""
    _, vjp = torch.func.vjp(lambda *a: attention_jvp_reference(*a, scale=scale), *inputs)
    return vjp(grads)


# -- autograd -------------------------------------------------------------------------------------------
class AttentionJvp(Function):
    """``(q, k, v, q̇, k̇, v̇) -> (o, ȯ)``, differentiable through both outputs."""

    generate_vmap_rule = True

    @staticmethod
    def forward(q, k, v, dq, dk, dv, scale):
        return _fwd(q, k, v, dq, dk, dv, scale)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.scale = inputs[-1]
        ctx.save_for_backward(*inputs[:6], *output)
        ctx.save_for_forward(*inputs[:6])
        ctx.mark_non_differentiable(output[2], output[3])

    @staticmethod
    def backward(ctx, go, got, _glse, _gmu):
        q, k, v, dq, dk, dv, o, ot, lse, mu = ctx.saved_tensors
        go = torch.zeros_like(o) if go is None else go
        got = torch.zeros_like(ot) if got is None else got
        if torch.is_grad_enabled():  # create_graph: second order through the reference
            grads = _reference_vjp((q, k, v, dq, dk, dv), (go, got), ctx.scale)
        else:
            grads = _bwd(q, k, v, dq, dk, dv, o, ot, lse, mu, go.contiguous(), got.contiguous(), ctx.scale)
        return (*grads, None)

    @staticmethod
    def jvp(ctx, *tangents):
        inputs = ctx.saved_tensors
        tangents = _zeros(tangents[:6], inputs)
        to, tot = _reference_tangent(inputs, tangents, ctx.scale)
        return to, tot, None, None


class AttentionDeadTangent(Function):
    """``(q, k, v, q̇, k̇, v̇) -> (o, ȯ, lse)`` with ȯ outside the graph: only the primal's state
    (o, lse) is saved, and only q, k, v get gradients."""

    generate_vmap_rule = True

    @staticmethod
    def forward(q, k, v, dq, dk, dv, scale):
        o, ot, lse, _ = _fwd(q, k, v, dq, dk, dv, scale)
        return o, ot, lse

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, *_, ctx.scale = inputs
        o, ot, lse = output
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.save_for_forward(q, k, v)
        ctx.mark_non_differentiable(ot, lse)

    @staticmethod
    def backward(ctx, go, _got, _glse):
        q, k, v, o, lse = ctx.saved_tensors
        go = torch.zeros_like(o) if go is None else go
        if torch.is_grad_enabled():
            grads = _AttentionGrad.apply(q, k, v, go, ctx.scale)
        else:
            grads = _primal_bwd(q, k, v, o, lse, go.contiguous(), ctx.scale)
        return (*grads, None, None, None, None)

    @staticmethod
    def jvp(ctx, dq, dk, dv, *_):
        q, k, v = ctx.saved_tensors
        dq, dk, dv = _zeros((dq, dk, dv), (q, k, v))
        return AttentionJvp.apply(q, k, v, dq, dk, dv, ctx.scale)[1], None, None


class _AttentionGrad(Function):
    """The primal backward as a differentiable function (double backward through the reference)."""

    @staticmethod
    def forward(ctx, q, k, v, go, scale):
        ctx.scale = scale
        ctx.save_for_backward(q, k, v, go)
        o, lse = _primal_fwd(q, k, v, scale)
        return tuple(_primal_bwd(q, k, v, o, lse, go.contiguous(), scale))

    @staticmethod
    def backward(ctx, *gg):
        q, k, v, go = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [x.detach().requires_grad_() for x in (q, k, v, go)]
            out = attention_jvp_reference(*inputs[:3], scale=ctx.scale)[0]
            first = torch.autograd.grad(out, inputs[:3], inputs[3], create_graph=True)
            gg = [torch.zeros_like(x) if g is None else g for g, x in zip(gg, inputs[:3])]
            second = torch.autograd.grad(first, inputs, gg, allow_unused=True)
        return (*[torch.zeros_like(x) if g is None else g for g, x in zip(second, inputs)], None)


class Attention(Function):
    """``(q, k, v) -> o``; its forward-mode rule is `attention_jvp` (differentiable)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(q, k, v, scale):
        return _primal_fwd(q, k, v, scale)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, ctx.scale = inputs
        ctx.save_for_backward(q, k, v, *output)
        ctx.save_for_forward(q, k, v)
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, go, _glse):
        q, k, v, o, lse = ctx.saved_tensors
        if torch.is_grad_enabled():
            grads = _AttentionGrad.apply(q, k, v, go, ctx.scale)
        else:
            grads = _primal_bwd(q, k, v, o, lse, go.contiguous(), ctx.scale)
        return (*grads, None)

    @staticmethod
    def jvp(ctx, dq, dk, dv, _dscale):
        q, k, v = ctx.saved_tensors
        dq, dk, dv = _zeros((dq, dk, dv), (q, k, v))
        ot = AttentionJvp.apply(q, k, v, dq, dk, dv, ctx.scale)[1]
        return ot, None


# -- public entry points -----------------------------------------------------------------------------------
def attention_jvp(q, k, v, dq=None, dk=None, dv=None, *, scale=None, tangent_grad=True):
    """``(o, ȯ)`` of softmax attention ``o = softmax(scale·q kᵀ) v`` and its JVP along ``(q̇, k̇, v̇)``.

    Shapes (B, H, N_q, D), (B, H, N_k, D), (B, H, N_k, D_v); a None tangent is zero; ``scale``
    defaults to 1/√D. ``tangent_grad=False``: ȯ carries no graph (the dead-tangent mode)."""
    _check(q, k, v, (dq, dk, dv))
    if dq is None and dk is None and dv is None:  # no tangent: the primal op, ȯ = 0
        o = attention(q, k, v, scale=scale)
        return o, o.new_zeros(o.shape)
    scale = _scale(q, scale)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    dq, dk, dv = (t.contiguous() for t in _zeros((dq, dk, dv), (q, k, v)))
    if not torch.is_grad_enabled():
        o, ot, _, _ = _fwd(q, k, v, dq, dk, dv, scale)
        return o, ot
    if not tangent_grad:
        o, ot, _ = AttentionDeadTangent.apply(q, k, v, dq, dk, dv, scale)
        return o, ot
    o, ot, _, _ = AttentionJvp.apply(q, k, v, dq, dk, dv, scale)
    return o, ot


def attention(q, k, v, *, scale=None):
    """``softmax(scale·q kᵀ) v`` (no mask); torch.func.jvp of it is `attention_jvp`."""
    _check(q, k, v)
    scale = _scale(q, scale)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if not torch.is_grad_enabled() and not transforms_active():
        return _primal_fwd(q, k, v, scale)[0]
    return Attention.apply(q, k, v, scale)[0]
