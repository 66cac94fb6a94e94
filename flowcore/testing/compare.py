"""Comparing a compiled objective with the reference interpreter: loss and every gradient."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..terms import Evaluation
from ..reference import evaluate

# float64 tolerance of compiled-vs-reference: both compute the same function with different op
# orders (symbolic vs jvp-traced derivatives, CSE'd kernels); float64's 2.2e-16 rounding over a few
# hundred ops leaves orders of magnitude below this bound.
FLOAT64_RTOL = 1e-9
# Errors are relative to max(|reference|, SCALE_FLOOR). A value far below the O(1) intermediates
# it is computed from (|cos(t)·x0 − x0|² at t ~ 1e-6; a bias gradient that is exactly zero because
# two O(1) contributions cancel) carries the ~1e-16 absolute rounding error of those intermediates,
# accumulated over a few hundred ops: at most ~1e-13, which is what the floor allows (1e-9 · 1e-4).
SCALE_FLOOR = 1e-4


@dataclass(frozen=True)
class Comparison:
    loss: float  # relative error of the loss
    gradients: dict  # name -> relative error (norm of difference / norm of reference)

    @property
    def worst(self) -> float:
        return max([self.loss, *self.gradients.values()])


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / max(‖want‖, SCALE_FLOOR)."""
    return (got - want).norm().item() / max(want.norm().item(), SCALE_FLOOR)


def compare_with_reference(compiled: Callable, objective, net: torch.nn.Module, x1: torch.Tensor, x0: torch.Tensor,
                           times: dict, teacher=None, weight_net=None, z=None, reduction=None) -> Comparison:
    """Evaluate both ways on the same batch and times; compare loss and gradients w.r.t. every
    parameter of `net` (and `weight_net`) and w.r.t. x0 and x1."""
    leaves = {"x0": x0.detach().clone().requires_grad_(True), "x1": x1.detach().clone().requires_grad_(True)}
    params = {f"net.{k}": p for k, p in net.named_parameters() if p.requires_grad}
    if weight_net is not None:
        params.update({f"weight_net.{k}": p for k, p in weight_net.named_parameters() if p.requires_grad})
    wrt = list(params.values()) + list(leaves.values())

    def run(fn) -> tuple[Evaluation, list]:
        result = fn(net, leaves["x1"], leaves["x0"], z=z, times=times, teacher=teacher, weight_net=weight_net,
                    reduction=reduction)
        if not result.loss.requires_grad:  # a loss that depends on nothing trainable (e.g. |∂_s x0|²)
            return result, [torch.zeros_like(w) for w in wrt]
        grads = torch.autograd.grad(result.loss, wrt, allow_unused=True)
        return result, [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]

    want, want_grads = run(lambda *a, **k: evaluate(objective, *a, interpolant=compiled.compilation.interpolant, **k))
    got, got_grads = run(compiled)
    names = list(params) + list(leaves)
    return Comparison(relative_error(got.loss, want.loss),
                      {name: relative_error(g, w) for name, g, w in zip(names, got_grads, want_grads)})
