"""A compiled kernel as an autograd node whose backward is a generated backward kernel.

The backward runs only what is asked of it: no kernel when none of the inputs needing a gradient
has a non-zero one (`Kernel.gradient_of`), else the built backward kernel with the fewest outputs
that covers them — in training, the one without the data's gradients (`compiler.segments.backward_kernels`).
A kernel whose inputs all have structurally zero gradients runs without an autograd node at all.
The backward kernel is itself run through `KernelFunction`, so it too is differentiable: double
backward works (gradgradcheck) with kernels derived on demand by `flowcore.compiler.kernel.backward`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import sympy
import torch

from ..compiler.kernel import Kernel, backward
from ..compiler.segments import backward_kernels


@dataclass
class CompiledKernel:
    """A sympy kernel, its callable on one backend, and its backward kernels (built, or on demand)."""

    kernel: Kernel
    fn: Callable
    build: Callable[[list[Kernel]], dict[str, Callable]]  # backend: kernels -> {name: fn}
    _backwards: "list[CompiledKernel] | None" = field(default=None, repr=False)  # the full one first

    @classmethod
    def from_library(cls, kernel: Kernel, functions, build: Callable[[list[Kernel]], dict[str, Callable]]
                     ) -> "CompiledKernel":
        """`kernel` and its `backward_kernels`, all taken from the already built `functions`."""
        backwards = [cls(derived, functions[derived.name], build) for derived in backward_kernels(kernel)]
        return cls(kernel, functions[kernel.name], build, backwards)

    @property
    def backwards(self) -> "list[CompiledKernel]":
        """The backward kernels, the one with every non-zero gradient first; none if no gradient."""
        if self._backwards is None:
            derived = backward(self.kernel)
            self._backwards = [CompiledKernel(derived, self.build([derived])[derived.name], self.build)
                               ] if derived.gradient_of else []
        return self._backwards

    @property
    def gradients(self) -> tuple[sympy.Symbol, ...]:
        """The inputs with a non-zero gradient."""
        return self.backwards[0].kernel.gradient_of if self.backwards else ()

    def backward_for(self, wanted: set) -> "CompiledKernel | None":
        """The backward kernel with the fewest outputs that gives every gradient in `wanted` (a set
        of input symbols) that is not zero; None when all of those are zero."""
        wanted = wanted & set(self.gradients)
        if not wanted:
            return None
        fits = [b for b in self.backwards if wanted <= set(b.kernel.gradient_of)]
        return min(fits, key=lambda b: len(b.kernel.gradient_of))


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
        symbols = kernel.element_inputs + kernel.sample_inputs
        wanted = {symbol for symbol, needed in zip(symbols, ctx.needs_input_grad[4:]) if needed}
        backward_kernel = ctx.compiled.backward_for(wanted)
        if backward_kernel is None:  # nothing upstream needs a gradient this kernel gives
            return (None,) * (4 + len(symbols))
        inputs = ctx.saved_tensors
        n_elem = len(kernel.element_inputs)
        elem_in, samp_in = inputs[:n_elem], inputs[n_elem:]
        n_elem_out = len(kernel.element_outputs)
        cotangents = [g if g is not None else ctx.like.new_zeros((B, N) if i < n_elem_out else (B,))
                      for i, g in enumerate(grads)]
        g_elem, g_samp = cotangents[:n_elem_out], cotangents[n_elem_out:]
        args = (*elem_in, *g_elem, *samp_in, *g_samp)
        if torch.is_grad_enabled():  # create_graph: the backward must itself be differentiable
            results = KernelFunction.apply(backward_kernel, ctx.like, B, N, *args)
        else:  # a plain backward: no autograd node to build for it
            results = backward_kernel.fn(ctx.like, B, N, *args)
        by_symbol = dict(zip(backward_kernel.kernel.gradient_of, results))
        input_grads = [by_symbol.get(symbol) if symbol in wanted else None for symbol in symbols]
        return (None, None, None, None, *input_grads)


def run_kernel(compiled: CompiledKernel, like: torch.Tensor, B: int, N: int, inputs: list[torch.Tensor]):
    if not compiled.gradients:  # every input reaches the outputs through sg only: no graph to build
        return tuple(out.detach() for out in compiled.fn(like, B, N, *inputs))
    return KernelFunction.apply(compiled, like, B, N, *inputs)
