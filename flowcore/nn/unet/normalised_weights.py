"""Every MP weight of a UNet normalised at once, per network call (docs/math.md §4, the image UNet:
``MPConv`` uses each weight with unit-norm rows, and the gradient goes through the normalisation).

Per layer that normalisation is four small torch ops forward and as many autograd nodes backward, for
every convolution and linear of the network (≈ 50 in the digits UNet, ≈ 130 in CIFAR-10's): on small
batches their fixed cost is a sixth of a training step. In plain autograd `NormalisedWeights` runs
them all as ONE op forward and one backward, the extension's ``flowcore::unet_unit_rows`` /
``unet_unit_rows_bwd`` (csrc/unet_jet*): ``u = w / max(‖w_row‖, 1e-12)``, ``g_w = (g − u⟨g, u⟩_row) /
max(‖w_row‖, 1e-12)``. Under torch.func transforms, forward-mode AD, a backward that must itself be
differentiable, or where the kernels are unavailable, each layer's own torch ops
(`MPConv.effective_weight`) run instead.
"""
from __future__ import annotations

import torch
from torch.autograd import Function

from .layers import _NORM_FLOOR, MPConv, unit_rows
from .pointwise import plain_autograd, runs_fused

__all__ = ["NormalisedWeights", "UnitRows"]


class UnitRows(Function):
    """``(w_1, …, w_k) -> (unit_rows(w_1), …, unit_rows(w_k))`` in one kernel; saves only the weights."""

    @staticmethod
    def forward(ctx, *weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.save_for_backward(*weights)
        return tuple(torch.ops.flowcore.unet_unit_rows(list(weights), _NORM_FLOOR))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        weights = ctx.saved_tensors
        if not torch.is_grad_enabled():
            return tuple(torch.ops.flowcore.unet_unit_rows_bwd(list(weights), list(grads), _NORM_FLOOR))
        # create_graph: the torch ops of unit_rows on the saved weights, so the backward is differentiable
        with torch.enable_grad():
            leaves = [w if w.requires_grad else w.detach().requires_grad_() for w in weights]
            return torch.autograd.grad([unit_rows(w) for w in leaves], leaves, grads, create_graph=True)


class NormalisedWeights:
    """The effective weights ``gain · unit_rows(w)`` of a network's `MPConv` layers for one call:
    ``weights(layer, dtype, gain)``."""

    def __init__(self, net: torch.nn.Module):
        layers = [m for m in net.modules() if isinstance(m, MPConv)]
        params = [m.weight for m in layers]
        self._units: dict[int, torch.Tensor] | None = None
        if layers and plain_autograd() and runs_fused(*params) and all(p.is_contiguous() for p in params):
            self._units = {id(m): u for m, u in zip(layers, UnitRows.apply(*params))}

    def __call__(self, layer: MPConv, dtype: torch.dtype, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        if self._units is None:
            return layer.effective_weight(dtype, gain)
        unit = self._units[id(layer)]
        if not (isinstance(gain, float) and gain == 1.0):
            unit = unit * gain
        return unit.to(dtype)
