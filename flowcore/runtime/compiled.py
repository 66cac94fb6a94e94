"""`flowcore.compile`: a declaration becomes a `CompiledObjective` that runs its plan.

Per level, each term's input kernels compute the inputs of that level's network calls, then the
calls run (batched across terms, sg'd ones without autograd); finally each term's loss kernel
gives its per-sample losses. Every kernel is an autograd node with its generated backward.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from ..codegen import backends
from ..compiler.driver import Compilation, compile_program
from ..compiler.kernel import Kernel
from ..compiler.segments import program_kernels
from ..lang.interpolants import Interpolant
from ..lang.objective import Objective
from ..terms import (Evaluation, TermResult, check_models, complete_batch, dropout_seeds_for, reduce_loss,
                     term_slices, term_times)
from .netcalls import TermState, run_calls
from .segment_op import CompiledKernel, run_kernel

class CompiledObjective:
    """Call it like `flowcore.evaluate`: ``compiled(net, x1, x0=None, *, times=..., teacher=...)``."""

    def __init__(self, compilation: Compilation, backend: str):
        self.compilation = compilation
        self.objective = compilation.objective
        self.program = compilation.program
        self.backend = backend
        build = backends.get(backend).build
        title = f"objective {self.objective.name} ({compilation.interpolant.name} interpolant)"
        forward = [seg.kernel for seg in self.program.segments if seg.kernel is not None]
        start = time.perf_counter()
        self.library = build(title, compilation.digest, program_kernels(self.program))
        self.compile_seconds = time.perf_counter() - start

        def build_more(kernels: list[Kernel]) -> dict[str, Callable]:
            return build(title + " (derived)", compilation.digest, kernels).functions

        self.kernels = {k.name: CompiledKernel.from_library(k, self.library, build_more) for k in forward}

    @property
    def cache_hit(self) -> bool:
        return self.library.cache_hit

    def _run_segment(self, segment, state: TermState) -> None:
        for input_name, leaf in segment.passthrough:
            state.values[input_name] = state.values[leaf]
        if segment.kernel is None:
            return
        kernel = segment.kernel
        inputs = [state.values[s.name] for s in kernel.element_inputs]
        inputs += [state.times[s] if s in state.times else state.values[s.name] for s in kernel.sample_inputs]
        outputs = run_kernel(self.kernels[kernel.name], state.like, state.count, state.N, inputs)
        for (symbol, _), value in zip(kernel.element_outputs + kernel.sample_outputs, outputs):
            state.values[symbol.name] = value

    def __call__(self, net: Callable, x1: torch.Tensor, x0: torch.Tensor | None = None, *,
                 z: torch.Tensor | None = None, times: dict | None = None, generator: torch.Generator | None = None,
                 teacher: Callable | None = None, weight_net: Callable | None = None,
                 reduction: str | None = None, dropout_seeds: dict[str, int] | None = None) -> Evaluation:
        """As flowcore.reference.evaluate (same arguments, same draws, same masks), compiled."""
        objective = self.objective
        x0, z = complete_batch(objective, self.compilation.interpolant, x1, x0, z, generator)
        check_models(objective, teacher, weight_net)
        dims = tuple(x1.shape[1:])
        N = math.prod(dims)
        states = []
        for term, part in term_slices(objective, x1.shape[0]):
            count = part.stop - part.start
            like = x1.new_empty(count)
            values = {"x0": x0[part].reshape(count, N).contiguous(), "x1": x1[part].reshape(count, N).contiguous()}
            if z is not None:
                values["z"] = z[part].reshape(count, N).contiguous()
            drawn = term_times(term, times, count, generator, x1)
            term.check_weights(drawn)  # a weight sympy could not sign: checked at the first evaluation
            states.append(TermState(values, drawn, count, dims, like))
        dropout_seeds = dropout_seeds_for(objective, net, dropout_seeds, generator)
        seeds = {index: dropout_seeds[term.name] for index, term in enumerate(objective.terms)
                 if term.name in dropout_seeds}
        models = {"net": net, "teacher": teacher, "weight_net": weight_net, "dropout_seeds": seeds}
        plan = self.program.plan
        live = [index for index, state in enumerate(states) if state.count]  # a term may get no samples
        for level in range(plan.levels):
            for index in live:
                for segment in self.program.segments_at(index, level):
                    self._run_segment(segment, states[index])
            for batch in plan.batches:
                batch = tuple(call for call in batch if states[call.term].count)
                if batch and batch[0].level == level:
                    run_calls(batch, states, models)
        results = {}
        for index, (term, state) in enumerate(zip(objective.terms, states)):
            for segment in self.program.segments_at(index, -1) if state.count else ():
                self._run_segment(segment, state)
            per_sample = state.values["loss"] if state.count else state.like
            results[term.name] = TermResult(per_sample, state.times)
        loss = reduce_loss([r.per_sample for r in results.values()], x1.shape[0], reduction or objective.reduction)
        return Evaluation(loss=loss, terms=results)

    def __repr__(self) -> str:
        calls = sum(len(term.calls) for term in self.program.plan.terms)
        return (f"CompiledObjective({self.objective.name!r}, backend={self.backend!r}, kernels={len(self.kernels)}, "
                f"network calls={calls} in {len(self.program.plan.batches)} batches)")


def compile(objective: Objective | str, backend: str = "torch", interpolant: Interpolant | None = None,
            **options) -> CompiledObjective:
    """Compile `objective` (or a built-in's name) into fused kernels for `backend`.

    ``backend``: ``torch`` (emitted Python, no compiler needed), ``cpu`` (C++), ``cuda`` — the names
    registered in flowcore.codegen.backends. The interpolant's α, β become kernel coefficients;
    times stay data. `options` go to a built-in's builder (e.g. ``eta=0.5``).
    """
    if isinstance(objective, str):
        from ..catalog import load

        objective = load(objective, **options)
    elif options:
        objective = objective.with_options(**options)
    backends.get(backend)  # an unknown name fails here, before the symbolic passes
    return CompiledObjective(compile_program(objective, interpolant), backend)

