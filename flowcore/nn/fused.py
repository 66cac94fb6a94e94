"""The fused activation of the flow-map MLP's JVP, with backward THROUGH the JVP (docs/math.md §4, §6).

A layer's JVP rows are stacked: ``y`` is ``(T, B, N)`` with block 0 the primal pre-activation
(bias not yet added) and blocks ``1..T−1`` the tangents ``ẏ_j`` (no bias). With ``z = y_0 + b``:

    forward   a = σ(z),                ȧ_j = σ'(z)·ẏ_j
    backward  g_y0 = σ'·g_a + σ''·Σ_j ẏ_j·g_ȧj,   g_ẏj = σ'·g_ȧj,   g_b = Σ_rows g_y0

Both directions are one pass over the rows: the ops ``flowcore::mlp_act_fwd`` / ``mlp_act_bwd``
of flowcore's extension (csrc/mlp_ops.cpp, csrc/mlp_cuda.cu), or — where the extension cannot be
loaded, for a dtype it lacks, or when forced with ``FLOWCORE_MLP_FUSED=0`` / ``fused=False`` — the
same math in plain torch ops (one warning per process when loading failed). Loading, and the ops'
fake kernels, are the native layer's (flowcore.native.extension, flowcore.native.ops).

`ActJvp` is a ``setup_context``-style ``torch.autograd.Function`` (so torch.func accepts it) with
a forward-mode rule (``jvp``) and a vmap rule; its backward is another such Function
(`ActJvpBackward`) whose own derivatives are plain torch ops, so double backward, forward-over-
reverse and higher orders all work. Under ``torch.no_grad()`` (sg'd JVPs) `act_jvp` calls the op
directly: nothing is saved for backward.
"""
from __future__ import annotations

import math

import torch
from torch.autograd import Function

from ..native import extension
from ..native.ops import transforms_active

__all__ = ["ACTIVATIONS", "ActJvp", "ActJvpBackward", "act_jvp", "derivatives", "kernels_available", "mlp_ops"]

ACTIVATIONS = ("gelu", "silu", "tanh")
ENV_FUSED = "FLOWCORE_MLP_FUSED"  # "0": always the pure-torch path
_SQRT1_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# -- the activation and its derivatives in torch ops (the unfused path; the ops' backward) --------
def derivatives(activation: str, z: torch.Tensor, order: int) -> list[torch.Tensor]:
    """``[σ(z), σ'(z), …, σ^(order)(z)]`` (order ≤ 3), differentiable torch ops. GELU is the exact
    erf GELU of ``torch.nn.GELU()``."""
    if activation == "gelu":
        cdf = 0.5 * torch.erfc(-_SQRT1_2 * z)
        pdf = torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
        zz = z * z
        terms = [torch.nn.functional.gelu(z), cdf + z * pdf, pdf * (2 - zz), pdf * (zz - 4) * z]
    elif activation == "silu":
        p, pm = torch.sigmoid(z), torch.sigmoid(-z)  # p and 1 − p, both without cancellation
        q = p * pm
        c = pm - p
        terms = [z * p, p + z * q, q * (2 + z * c), q * (c * (3 + z * c) - 2 * z * q)]
    elif activation == "tanh":
        th = torch.tanh(z)
        d1 = 1 - th * th
        terms = [th, d1, -2 * th * d1, d1 * (6 * th * th - 2)]
    else:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    return terms[:order + 1]


def _times_d1(activation: str, z: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    """``[σ'(z)·g_j]`` with torch's own vectorized activation backward, row by row (oneDNN's float32
    path does not broadcast; out-of-place, so vmap works)."""
    if activation == "gelu":
        return [torch.ops.aten.gelu_backward(row, z) for row in g]
    if activation == "silu":
        return [torch.ops.aten.silu_backward(row, z) for row in g]
    th = torch.tanh(z)
    return [torch.ops.aten.tanh_backward(row, th) for row in g]


def _second(activation: str, z: torch.Tensor) -> torch.Tensor:
    """σ''(z) alone (the fallback backward's one extra factor)."""
    if activation == "gelu":
        zz = z * z
        return torch.exp(-0.5 * zz) * _INV_SQRT_2PI * (2 - zz)
    if activation == "silu":
        p, pm = torch.sigmoid(z), torch.sigmoid(-z)
        return p * pm * (2 + z * (pm - p))
    th = torch.tanh(z)
    return -2 * th * (1 - th * th)


def act_fwd_torch(y: torch.Tensor, bias: torch.Tensor, activation: str) -> torch.Tensor:
    """The forward in plain torch ops (not differentiable by autograd): ``[σ(z); σ'(z)·ẏ_j]``."""
    z = y[0] + bias
    if activation not in ACTIVATIONS:
        derivatives(activation, z, 0)  # raises the error
    a = {"gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu, "tanh": torch.tanh}[activation](z)
    return torch.stack([a, *_times_d1(activation, z, y[1:])])


def act_bwd_torch(y: torch.Tensor, bias: torch.Tensor, grad: torch.Tensor, activation: str) -> torch.Tensor:
    """The backward in plain torch ops (not differentiable by autograd): ``[σ'·g_0 + σ''·Σ ẏ_j·g_j; σ'·g_j]``."""
    z = y[0] + bias
    rows = _times_d1(activation, z, grad)
    if y.shape[0] > 1:
        rows[0] = rows[0] + _second(activation, z) * (y[1:] * grad[1:]).sum(0)
    return torch.stack(rows)


# -- loading the kernels ----------------------------------------------------------------------------
_UNAVAILABLE = ("flowcore.nn: the fused MLP kernels are unavailable ({reason}); using the equivalent pure-torch JVP "
                "layers (slower)")


def mlp_ops() -> object | None:
    """``torch.ops.flowcore`` with the fused MLP's ops, or None (warned once) where the extension
    cannot be loaded (flowcore.native.extension)."""
    return extension.optional_extension("mlp_act_fwd", _UNAVAILABLE)


def kernels_available(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether the fused kernels run for this device and dtype (loading the extension if needed)."""
    return extension.kernels_available("mlp_act_fwd", device, dtype, switch=ENV_FUSED, unavailable=_UNAVAILABLE,
                                       family="the fused MLP")


def _use_kernels(y: torch.Tensor, fused: bool | None) -> bool:
    if fused is False:
        return False
    available = kernels_available(y.device, y.dtype)
    if fused and not available:
        raise RuntimeError(f"fused=True but the fused MLP kernels are unavailable for {y.dtype} on {y.device} "
                           f"(extension not loadable, {ENV_FUSED}=0, or a dtype the kernels lack)")
    return available


def act_fwd(y, bias, activation: str, fused: bool | None = None) -> torch.Tensor:
    if _use_kernels(y, fused):
        return torch.ops.flowcore.mlp_act_fwd(y, bias, activation)
    return act_fwd_torch(y, bias, activation)


def act_bwd(y, bias, grad, activation: str, fused: bool | None = None) -> torch.Tensor:
    if _use_kernels(y, fused):
        return torch.ops.flowcore.mlp_act_bwd(y, bias, grad, activation)
    return act_bwd_torch(y, bias, grad, activation)


# -- autograd -----------------------------------------------------------------------------------------
def _zero(t, like):
    return torch.zeros_like(like) if t is None else t


class ActJvp(Function):
    """``(y, bias) -> [σ(z); σ'(z)·ẏ_j]`` with ``z = y_0 + bias`` (shapes (T, B, N), (N,))."""

    generate_vmap_rule = True

    @staticmethod
    def forward(y, bias, activation, fused):
        return act_fwd(y, bias, activation, fused)

    @staticmethod
    def setup_context(ctx, inputs, output):
        y, bias, ctx.activation, ctx.fused = inputs
        ctx.save_for_backward(y, bias)
        ctx.save_for_forward(y, bias)

    @staticmethod
    def backward(ctx, grad):
        y, bias = ctx.saved_tensors
        gy = ActJvpBackward.apply(y, bias, grad, ctx.activation, ctx.fused)
        return gy, (gy[0].sum(0) if ctx.needs_input_grad[1] else None), None, None

    @staticmethod
    def jvp(ctx, dy, dbias, _activation, _fused):
        y, bias = ctx.saved_tensors
        dy, dbias = _zero(dy, y), _zero(dbias, bias)
        dz = dy[0] + dbias
        _, d1, d2 = derivatives(ctx.activation, y[0] + bias, 2)
        return torch.cat([(d1 * dz)[None], d2 * dz * y[1:] + d1 * dy[1:]])


class ActJvpBackward(Function):
    """``(y, bias, g) -> g_y`` of `ActJvp`, itself differentiable (reverse and forward mode)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(y, bias, grad, activation, fused):
        return act_bwd(y, bias, grad, activation, fused)

    @staticmethod
    def setup_context(ctx, inputs, output):
        y, bias, grad, ctx.activation, _ = inputs
        ctx.save_for_backward(y, bias, grad)
        ctx.save_for_forward(y, bias, grad)

    @staticmethod
    def backward(ctx, r):
        y, bias, g = ctx.saved_tensors
        _, d1, d2, d3 = derivatives(ctx.activation, y[0] + bias, 3)
        u, gj, r0, rj = y[1:], g[1:], r[0], r[1:]
        grad_g = torch.cat([(d1 * r0)[None], d2 * u * r0 + d1 * rj])
        grad_z = d2 * g[0] * r0 + d3 * (u * gj).sum(0) * r0 + d2 * (gj * rj).sum(0)
        grad_y = torch.cat([grad_z[None], d2 * gj * r0])
        return grad_y, (grad_z.sum(0) if ctx.needs_input_grad[1] else None), grad_g, None, None

    @staticmethod
    def jvp(ctx, dy, dbias, dg, _activation, _fused):
        y, bias, g = ctx.saved_tensors
        dy, dbias, dg = _zero(dy, y), _zero(dbias, bias), _zero(dg, g)
        _, d1, d2, d3 = derivatives(ctx.activation, y[0] + bias, 3)
        dz, u, du, gj, dgj = dy[0] + dbias, y[1:], dy[1:], g[1:], dg[1:]
        first = (d2 * dz * g[0] + d1 * dg[0] + d3 * dz * (u * gj).sum(0)
                 + d2 * ((du * gj).sum(0) + (u * dgj).sum(0)))
        return torch.cat([first[None], d2 * dz * gj + d1 * dgj])


class _ActJvpReverse(Function):
    """`ActJvp` for plain reverse mode, the common case (a compiled objective's training step).

    A ``setup_context``-style Function costs an ``inspect.signature`` per call; this old-style twin
    does not. torch.func and forward AD need the other one. A plain backward (no ``create_graph``)
    calls the backward op directly; a differentiable one goes through `ActJvpBackward`.
    """

    @staticmethod
    def forward(ctx, y, bias, activation, fused):
        ctx.activation, ctx.fused = activation, fused
        ctx.save_for_backward(y, bias)
        return act_fwd(y, bias, activation, fused)

    @staticmethod
    def backward(ctx, grad):
        y, bias = ctx.saved_tensors
        if torch.is_grad_enabled():
            gy = ActJvpBackward.apply(y, bias, grad, ctx.activation, ctx.fused)
        else:
            gy = act_bwd(y, bias, grad, ctx.activation, ctx.fused)
        return gy, (gy[0].sum(0) if ctx.needs_input_grad[1] else None), None, None


def act_jvp(y: torch.Tensor, bias: torch.Tensor, activation: str, fused: bool | None = None) -> torch.Tensor:
    """The fused activation of stacked JVP rows; differentiable, or a bare op call (nothing saved)
    under ``torch.no_grad()``."""
    if transforms_active():
        return ActJvp.apply(y, bias, activation, fused)
    if torch.is_grad_enabled():
        return _ActJvpReverse.apply(y, bias, activation, fused)
    return act_fwd(y, bias, activation, fused)
