"""A whole stacked MLP call: the layers of `FlowMapMLP.jvp_many` (docs/math.md §4, §6).

The rows ``h = [h_0; ḣ_1; …; ḣ_k]`` (primal, then tangents) go through every layer together:
``y_l = h_l·W_lᵀ`` is one GEMM over all rows, ``h_{l+1} = [σ(y_0 + b); σ'·ẏ_j]`` one fused
activation (flowcore.nn.fused), and the last layer is linear with its bias on the primal rows.
The first `live` row blocks carry gradients; the others (tangents used only under stop-gradient)
share the forward's GEMMs but nothing of the backward.

Two implementations of the same function:

- `stacked_layers`: layer by layer in torch ops and `act_jvp`. Differentiable to any order and
  under torch.func / forward AD; the reference for the other.
- `NetCall`: the extension's ``flowcore::mlp_net_fwd`` (csrc/mlp_net.cpp) — every layer forward
  without returning to Python — and ``mlp_act_bwd_saved_`` + ``mlp_layer_bwd`` per layer for the
  backward through the tangents, as ONE autograd node per network call. A differentiable
  backward (``create_graph``), one under vmap (batched gradients) or a second one through a
  retained graph recomputes the call with `stacked_layers` and differentiates that.

`net_call` picks `NetCall` in plain autograd where the fused kernels run for the rows' device and
dtype (under ``no_grad`` the bare op, saving nothing), else `stacked_layers` (torch.func
transforms, forward AD, autocast, torch.compile tracing, ``fused=False``, no extension).
"""
from __future__ import annotations

import torch
from torch.autograd import Function
from torch.nn import functional as F

from ..native.ops import transforms_active
from .fused import _use_kernels, act_fwd, act_jvp, mlp_ops

__all__ = ["NetCall", "net_call", "stacked_layers"]


def _linear(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(T, B, F) @ Wᵀ`` as one GEMM over the T·B rows."""
    T, B = h.shape[0], h.shape[1]
    return F.linear(h.reshape(T * B, h.shape[2]), weight).view(T, B, weight.shape[0])


def stacked_layers(h: torch.Tensor, live: int, weights: list[torch.Tensor], biases: list[torch.Tensor],
                   activation: str, scale: float, fused: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out[:live], out[live:])`` of the stacked rows `h` (T, B, F), layer by layer in torch ops.

    The dead blocks ``h[live:]`` run outside the graph (their σ'(z) taken from the primal rows)."""
    h_dead = h[live:].detach() if live < h.shape[0] else None
    h = h[:live]
    for weight, bias in zip(weights[:-1], biases[:-1]):
        y = _linear(h, weight)
        bias = bias.to(y.dtype)  # dtype: autocast
        if h_dead is not None:
            with torch.no_grad():
                y_dead = _linear(h_dead, weight)
                h_dead = act_fwd(torch.cat([y[:1], y_dead]), bias, activation, fused)[1:]
        h = act_jvp(y, bias, activation, fused)
    out = scale * _linear(h, weights[-1])
    out = torch.cat([(out[0] + scale * biases[-1].to(out.dtype))[None], out[1:]])
    if h_dead is None:
        return out, out.new_empty((0, *out.shape[1:]))
    with torch.no_grad():
        return out, scale * _linear(h_dead, weights[-1])


class NetCall(Function):
    """`stacked_layers` as one autograd node: inputs ``(h, activation, scale, live, *weights,
    *biases)``, outputs ``(out_live, out_dead)`` (the dead one not differentiable).

    The backward walks the layers back (``flowcore::mlp_act_bwd_saved_`` for g_y and the bias
    gradient, then ``flowcore::mlp_layer_bwd`` for the GEMMs) and drops each layer's saved rows as
    soon as it is done. So they are kept on the context, not with ``save_for_backward`` (which holds
    everything until the node's backward returns): the peak memory of a backward is then below
    autograd's layer by layer. A second backward through a retained graph finds them gone and
    recomputes, as a differentiable backward does.

    Old-style (ctx-in-forward) on purpose: a plain training step pays no ``setup_context``
    introspection, and torch.func never sees this Function (`net_call` routes transforms to
    `stacked_layers`)."""

    @staticmethod
    def forward(ctx, h, activation, scale, live, *params):
        n = len(params) // 2
        save = any(ctx.needs_input_grad)
        ops = mlp_ops()
        if ops is None:
            raise RuntimeError("NetCall needs flowcore's extension, which is unavailable here (net_call falls back)")
        out, out_dead, hidden, derivatives = ops.mlp_net_fwd(h, params[:n], params[n:], activation, scale, live, save)
        ctx.activation, ctx.scale, ctx.live, ctx.blocks = activation, scale, live, h.shape[0]
        if save:
            ctx.save_for_backward(h, *params)
            ctx.layers = (list(hidden), list(derivatives))  # intermediates: see the class docstring
        ctx.mark_non_differentiable(out_dead)
        return out, out_dead

    @staticmethod
    def backward(ctx, grad, _grad_dead):
        h, *params = ctx.saved_tensors
        n = len(params) // 2
        weights, biases = params[:n], params[n:]
        needs = ctx.needs_input_grad
        layers, ctx.layers = ctx.layers, None
        if layers is None or torch.is_grad_enabled() or transforms_active() or _legacy_batched(grad):
            # create_graph, vmap over the backward, or a retained graph's second backward
            grads = _differentiable_backward(ctx, grad, h, weights, biases)
        else:
            inputs, derivatives = [h, *layers[0]], [*layers[1], None]  # the last layer is linear
            del layers
            g, grad_weights, grad_biases = grad * ctx.scale, [None] * n, [None] * n
            for k in reversed(range(n)):
                hidden = derivatives[k] is not None
                if hidden:
                    # g_y over g (the previous layer's GEMM output, ours to overwrite) and the bias
                    # gradient in the same pass, in an op of its own, so that the saved derivatives
                    # are freed before the GEMMs allocate theirs
                    grad_biases[k] = torch.ops.flowcore.mlp_act_bwd_saved_(derivatives[k], g)
                    derivatives[k] = None
                g, grad_weights[k], grad_bias = torch.ops.flowcore.mlp_layer_bwd(
                    g, None, inputs[k], weights[k], k > 0 or needs[0], not hidden)
                if not hidden:
                    grad_biases[k] = grad_bias
                inputs[k] = None  # this layer's rows are no longer needed
            grads = [_pad(g, ctx.blocks) if needs[0] else None, *grad_weights, *grad_biases]
        return (grads[0], None, None, None,
                *[g if need else None for g, need in zip(grads[1:], needs[4:])])


def _legacy_batched(grad: torch.Tensor) -> bool:
    """A gradient batched by torch's legacy vmap (gradcheck's batched-gradient check): the op has no
    batching rule, the twin's torch ops have."""
    return "Batched" in str(torch._C._dispatch_keys(grad))  # the key is not in Python's DispatchKey enum


def _pad(grad_h: torch.Tensor, blocks: int) -> torch.Tensor:
    """The gradient of all T row blocks: zero on the dead ones."""
    if grad_h.shape[0] == blocks:
        return grad_h
    return torch.cat([grad_h, grad_h.new_zeros((blocks - grad_h.shape[0], *grad_h.shape[1:]))])


def _differentiable_backward(ctx, grad, h, weights, biases) -> list:
    """The gradients by the layer-by-layer twin, recomputed from the saved inputs themselves: as
    functions of them (``create_graph``: double backward) and in torch ops (vmap over a backward:
    batched gradients)."""
    create_graph = torch.is_grad_enabled()
    targets = [h, *weights, *biases]
    wanted = [i for i, need in enumerate([ctx.needs_input_grad[0], *ctx.needs_input_grad[4:]]) if need]
    n = len(weights)
    with torch.enable_grad():
        out, _ = stacked_layers(h[:ctx.live], ctx.live, list(weights), list(biases), ctx.activation, ctx.scale)
        found = torch.autograd.grad(out, [targets[i] for i in wanted], grad, create_graph=create_graph,
                                    allow_unused=True)
    grads: list = [None] * (1 + 2 * n)
    for i, g in zip(wanted, found):
        grads[i] = g if g is not None else torch.zeros_like(targets[i])
    return grads


def net_call(h: torch.Tensor, live: int, weights: list[torch.Tensor], biases: list[torch.Tensor],
             activation: str, scale: float, fused: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out[:live], out[live:])``: the MLP on stacked rows `h` (T, B, F), the first `live` blocks
    differentiable; `NetCall` where it applies, else `stacked_layers`."""
    if not 1 <= live <= h.shape[0]:
        raise ValueError(f"net_call: live must count 1..{h.shape[0]} row blocks, got {live}")
    if (transforms_active() or torch.compiler.is_compiling() or torch.is_autocast_enabled(h.device.type)
            or not _use_kernels(h, fused) or any(p.dtype != h.dtype for p in (*weights, *biases))):
        return stacked_layers(h, live, weights, biases, activation, scale, fused)
    ops = mlp_ops()
    if not hasattr(ops, "mlp_net_fwd"):  # an extension loaded from an older build
        return stacked_layers(h, live, weights, biases, activation, scale, fused)
    if not torch.is_grad_enabled():
        # an sg'd call (LSD's teacher): the op alone, saving nothing. Through NetCall it would save
        # every layer's rows for a backward that never comes (a Function's needs_input_grad
        # ignores no_grad) — 20 MiB at the peak of a paper-net LSD step
        out, out_dead, _, _ = ops.mlp_net_fwd(h, weights, biases, activation, float(scale), live, False)
        return out, out_dead
    return NetCall.apply(h, activation, float(scale), live, *weights, *biases)
