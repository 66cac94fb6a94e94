"""A compiled kernel as an autograd node whose backward is the generated backward kernel.

The backward kernel is itself run through `KernelFunction`, so it too is differentiable: double
backward works (gradgradcheck) with kernels derived on demand by `flowcore.compiler.kernel.backward`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..compiler.kernel import Kernel, backward


@dataclass
class CompiledKernel:
    """A sympy kernel, its callable on one backend, and a builder for kernels derived from it."""

    kernel: Kernel
    fn: Callable
    build: Callable[[list[Kernel]], dict[str, Callable]]  # backend: kernels -> {name: fn}
    _backward: "CompiledKernel | None" = field(default=None, repr=False)

    @property
    def backward(self) -> "CompiledKernel":
        if self._backward is None:
            derived = backward(self.kernel)
            self._backward = CompiledKernel(derived, self.build([derived])[derived.name], self.build)
        return self._backward

    def with_backward(self, fn: Callable) -> "CompiledKernel":
        """Attach an already-built backward (built with the forward, in one library)."""
        self._backward = CompiledKernel(backward(self.kernel), fn, self.build)
        return self


class KernelFunction(torch.autograd.Function):
    """``outputs = kernel(inputs)``; element inputs (B, N) first, then sample inputs (B,)."""

    @staticmethod
    def forward(ctx, compiled: CompiledKernel, like: torch.Tensor, B: int, N: int, *inputs: torch.Tensor):
        ctx.compiled, ctx.like, ctx.B, ctx.N = compiled, like, B, N
        ctx.save_for_backward(*inputs)
        # Autograd needs each output to be its own tensor: CSE can make two outputs (x and sg(x))
        # one object, and a kernel may pass an input straight through.
        seen = {id(t) for t in inputs}
        distinct = []
        for out in compiled.fn(like, B, N, *inputs):
            distinct.append(out.clone() if id(out) in seen else out)
            seen.add(id(out))
        return tuple(distinct)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        kernel, B, N = ctx.compiled.kernel, ctx.B, ctx.N
        inputs = ctx.saved_tensors
        n_elem = len(kernel.element_inputs)
        elem_in, samp_in = inputs[:n_elem], inputs[n_elem:]
        n_elem_out = len(kernel.element_outputs)
        cotangents = [g if g is not None else ctx.like.new_zeros((B, N) if i < n_elem_out else (B,))
                      for i, g in enumerate(grads)]
        g_elem, g_samp = cotangents[:n_elem_out], cotangents[n_elem_out:]
        backward_kernel = ctx.compiled.backward
        args = (*elem_in, *g_elem, *samp_in, *g_samp)
        if torch.is_grad_enabled():  # create_graph: the backward must itself be differentiable
            results = KernelFunction.apply(backward_kernel, ctx.like, B, N, *args)
        else:  # a plain backward: no autograd node to build for it
            results = backward_kernel.fn(ctx.like, B, N, *args)
        by_symbol = dict(zip(kernel.differentiable_inputs, results))
        input_grads = [by_symbol.get(symbol) for symbol in kernel.element_inputs + kernel.sample_inputs]
        return (None, None, None, None, *input_grads)


def run_kernel(compiled: CompiledKernel, like: torch.Tensor, B: int, N: int, inputs: list[torch.Tensor]):
    return KernelFunction.apply(compiled, like, B, N, *inputs)
