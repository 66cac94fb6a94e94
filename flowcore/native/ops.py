"""The Python side of every op of flowcore's extension: fake (meta) kernels and vmap rules.

The ops themselves are C++ (csrc/): ``flowcore::run_kernel`` runs a generated kernel (the cpu and
cuda backends); the ``mlp_*`` ops are the fused flow-map MLP's activations and network calls
(flowcore.nn.fused, flowcore.nn.mlp_call); the ``attention*`` ops are attention with its JVP
(flowcore.nn.attention_jvp); the ``unet_*`` ops are the image UNet's pointwise jets
(flowcore.nn.unet.pointwise). Their shape functions for fake tensors (torch.compile,
``torch.library.opcheck``) are registered here, in Python, so they hold whichever way the library was
loaded (ahead of time, just in time, or by someone else). `register_all` runs once, from
flowcore.native.extension's `load_extension`, after the library is loaded.
"""
from __future__ import annotations

import torch

__all__ = ["register_all", "transforms_active"]


def transforms_active() -> bool:
    """Whether a torch.func transform (vmap, jvp, grad) or forward-mode AD is tracing the current
    call: custom autograd Functions that save state by hand must then take their plain-op path."""
    return torch.autograd.forward_ad._current_level >= 0 or torch._C._are_functorch_transforms_active()

_done: dict = {}


def _run_kernel_fake(fns, B, N, like, element_inputs, sample_inputs, n_element_outputs, n_sample_outputs):
    return ([like.new_empty((B, N)) for _ in range(n_element_outputs)] +
            [like.new_empty((B,)) for _ in range(n_sample_outputs)])


def _saved_shape(live, like):
    """The rows `mlp_act_fwd_save` keeps of (T, B, N) `like`: σ' of the primal, plus σ'' with `live` > 1."""
    return (1 if live == 1 else live + 1, like.shape[1], like.shape[2])


def _act_fwd_fake(y, bias, activation):
    return torch.empty_like(y, memory_format=torch.contiguous_format)


def _act_bwd_fake(y, bias, grad, activation):
    return torch.empty_like(y, memory_format=torch.contiguous_format)


def _fwd_save_fake(y, bias, activation, live):
    return torch.empty_like(y, memory_format=torch.contiguous_format), y.new_empty(_saved_shape(live, y))


def _bwd_saved_fake(saved, grad):
    return torch.empty_like(grad, memory_format=torch.contiguous_format)


def _bwd_saved_inplace_fake(saved, grad):
    return grad.new_empty((grad.shape[2],))


def _fwd_inplace_fake(y, bias, activation):
    return None


def _fwd_save_inplace_fake(y, bias, activation, live):
    return y.new_empty(_saved_shape(live, y))


def _net_fwd_fake(h, weights, biases, activation, scale, live, save):
    T, B = h.shape[0], h.shape[1]
    out = h.new_empty((T, B, weights[-1].shape[0]))
    hidden = [h.new_empty((live, B, w.shape[0])) for w in weights[:-1]] if save else []
    derivatives = [h.new_empty(_saved_shape(live, x)) for x in hidden]
    return out[:live], out[live:].clone(), hidden, derivatives


def _layer_bwd_fake(grad, derivatives, input, weight, input_grad, bias_grad=True):
    live, B = grad.shape[0], grad.shape[1]
    grad_input = grad.new_empty((live, B, input.shape[2]) if input_grad else (0,))
    return grad_input, torch.empty_like(weight), grad.new_empty((grad.shape[2],) if bias_grad else (0,))


def _attention_out(q, v):
    """o, and lse in the accumulation type (float32 for float16 / bfloat16 inputs, as the CUDA kernels
    keep it)."""
    stats = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    return q.new_empty((*q.shape[:3], v.shape[3])), q.new_empty(q.shape[:3], dtype=stats)


def _attention_jvp_fwd_fake(q, k, v, dq, dk, dv, scale):
    o, lse = _attention_out(q, v)
    return o, torch.empty_like(o), lse, torch.empty_like(lse)


def _attention_jvp_bwd_fake(q, k, v, dq, dk, dv, o, ot, lse, mu, go, got, scale):
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v, dq, dk, dv))


def _attention_fwd_fake(q, k, v, scale):
    return _attention_out(q, v)


def _attention_bwd_fake(q, k, v, o, lse, go, scale):
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v))


def _stacked(x0, blocks):
    return x0.new_empty((blocks * x0.shape[0], *x0.shape[1:]))


def _unet_silu_jet_fake(x0, t, gain, with_primal):
    return _stacked(x0, t.shape[0] // x0.shape[0] + int(with_primal))


def _unet_silu_jet_bwd_fake(x0, t, grad, gain):
    return torch.empty_like(grad, memory_format=torch.contiguous_format)


def _unet_film_silu_jet_fake(y0, l0, yt, lt, gain, with_primal):
    return _stacked(y0, yt.shape[0] // y0.shape[0] + int(with_primal))


def _unet_film_silu_jet_bwd_fake(y0, l0, yt, lt, grad, gain):
    return torch.empty_like(grad, memory_format=torch.contiguous_format), _stacked(l0, 1 + yt.shape[0] // y0.shape[0])


def _unet_clip_jet_fake(x0, t, bound, with_primal):
    return _stacked(x0, t.shape[0] // x0.shape[0] + int(with_primal)), x0.new_empty(x0.shape, dtype=torch.bool)


def _unet_pixel_norm_jet_fake(x0, t, eps, with_primal):
    return _stacked(x0, t.shape[0] // x0.shape[0] + int(with_primal))


def _unet_pixel_norm_jet_bwd_fake(x0, t, grad, eps):
    return torch.empty_like(grad, memory_format=torch.contiguous_format)


def _unet_unit_rows_fake(weights, floor):
    return [torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights]


def _unet_unit_rows_bwd_fake(weights, grads, floor):
    return [torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights]


#: op -> its fake kernel
FAKES = {
    "run_kernel": _run_kernel_fake,
    "mlp_act_fwd": _act_fwd_fake,
    "mlp_act_bwd": _act_bwd_fake,
    "mlp_act_fwd_save": _fwd_save_fake,
    "mlp_act_bwd_saved": _bwd_saved_fake,
    "mlp_act_bwd_saved_": _bwd_saved_inplace_fake,
    "mlp_act_fwd_": _fwd_inplace_fake,
    "mlp_act_fwd_save_": _fwd_save_inplace_fake,
    "mlp_net_fwd": _net_fwd_fake,
    "mlp_layer_bwd": _layer_bwd_fake,
    "attention_jvp_fwd": _attention_jvp_fwd_fake,
    "attention_jvp_bwd": _attention_jvp_bwd_fake,
    "attention_fwd": _attention_fwd_fake,
    "attention_bwd": _attention_bwd_fake,
    "unet_silu_jet": _unet_silu_jet_fake,
    "unet_silu_jet_bwd": _unet_silu_jet_bwd_fake,
    "unet_film_silu_jet": _unet_film_silu_jet_fake,
    "unet_film_silu_jet_bwd": _unet_film_silu_jet_bwd_fake,
    "unet_clip_jet": _unet_clip_jet_fake,
    "unet_pixel_norm_jet": _unet_pixel_norm_jet_fake,
    "unet_pixel_norm_jet_bwd": _unet_pixel_norm_jet_bwd_fake,
    "unet_unit_rows": _unet_unit_rows_fake,
    "unet_unit_rows_bwd": _unet_unit_rows_bwd_fake,
}
#: ops with a vmap rule (gradcheck's batched-gradient checks call them under vmap)
VMAPPED = ("mlp_act_fwd", "mlp_act_bwd")
#: ops whose tensors all lead with the batch dimension B: a vmapped dimension folds into it
FOLDED = ("attention_jvp_fwd", "attention_jvp_bwd", "attention_fwd", "attention_bwd")


def _vmap_rule(name: str):
    """Batched calls loop over the vmapped dimension."""
    op = getattr(torch.ops.flowcore, name)

    def rule(info, in_dims, *args):
        size = info.batch_size
        tensors = [a.movedim(d, 0) if d is not None else a.expand(size, *a.shape) if isinstance(a, torch.Tensor) else a
                   for a, d in zip(args, in_dims)]
        outs = [op(*[t[i] if isinstance(t, torch.Tensor) else t for t in tensors]) for i in range(size)]
        return torch.stack(outs), 0

    return rule


def _folding_vmap_rule(name: str):
    """Batched calls of an op whose every tensor is (B, ...) and whose outputs are a tuple of (B, ...):
    one call on (V·B, ...) instead of V calls."""
    op = getattr(torch.ops.flowcore, name)

    def rule(info, in_dims, *args):
        size = info.batch_size
        folded = []
        for a, d in zip(args, in_dims):
            if isinstance(a, torch.Tensor):
                a = a.movedim(d, 0) if d is not None else a.expand(size, *a.shape)
                a = a.reshape(size * a.shape[1], *a.shape[2:])
            folded.append(a)
        outs = op(*folded)
        return tuple(o.reshape(size, o.shape[0] // size, *o.shape[1:]) for o in outs), (0,) * len(outs)

    return rule


def _defined(name: str) -> bool:
    try:
        getattr(torch.ops.flowcore, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def register_all() -> None:
    """Register the fake kernel (and vmap rule) of every op the loaded library defines, once."""
    if _done.get("registered"):
        return
    for name, fake in FAKES.items():
        if not _defined(name):  # a library built from older sources may lack an op
            continue
        try:
            torch.library.register_fake(f"flowcore::{name}", fake)
        except RuntimeError as e:  # a C++ Meta kernel (or another copy of this module) registered one already
            if "already" not in str(e):
                raise
        if name in VMAPPED:
            torch.library.register_vmap(f"flowcore::{name}", _vmap_rule(name))
        elif name in FOLDED:
            torch.library.register_vmap(f"flowcore::{name}", _folding_vmap_rule(name))
    _done["registered"] = True
