"""`Kernel`: one segment of elementwise work between network calls, as sympy, and its backward.

A kernel runs per sample ``b`` of a batch: element inputs are ``(B, N)`` arrays (a sample's data
dimensions flattened), sample inputs are ``(B,)`` (times, per-sample scalars). It runs its *steps*
in order — a ``reduce`` step sums a per-element body over the sample's elements, an ``assign``
step computes a per-sample value — then writes per-element and per-sample outputs. *Lets* are
stop-gradient values: symbols whose value differentiation treats as a constant (they are only
substituted when printing).

`backward(kernel)` is derived by `sympy.diff` in reverse mode over the steps, and the result is
again a `Kernel` — which can itself be differentiated (double backward). A gradient that is
structurally zero (the input reaches the outputs only through lets, or its derivative is 0) is no
output of it: `gradient_of` says which input each output belongs to, and a kernel none of whose
inputs has a gradient has no backward to build or run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, cached_property

import sympy

ELEMENT, SAMPLE = "element", "sample"
REDUCE, ASSIGN = "reduce", "assign"
ZERO = sympy.Integer(0)


@dataclass(frozen=True)
class Step:
    symbol: sympy.Symbol
    kind: str  # REDUCE: symbol = Σ_j expr ; ASSIGN: symbol = expr (per sample)
    expr: sympy.Expr


@dataclass(frozen=True)
class Kernel:
    name: str
    element_inputs: tuple[sympy.Symbol, ...]
    sample_inputs: tuple[sympy.Symbol, ...]
    lets: tuple[tuple[sympy.Symbol, sympy.Expr], ...]  # stop-gradient values, in dependency order
    steps: tuple[Step, ...]
    element_outputs: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    sample_outputs: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    no_grad_inputs: frozenset = field(default_factory=frozenset)  # times: never differentiated
    gradient_of: tuple[sympy.Symbol, ...] = ()  # of a backward kernel: the input each output is the gradient of

    @cached_property
    def element_symbols(self) -> frozenset[sympy.Symbol]:
        """Symbols that vary along the element axis: element inputs and the lets that use them."""
        found = set(self.element_inputs)
        for symbol, value in self.lets:
            if value.free_symbols & found:
                found.add(symbol)
        return frozenset(found)

    def level(self, expr: sympy.Expr) -> str:
        return ELEMENT if expr.free_symbols & self.element_symbols else SAMPLE

    def substituted(self, expr: sympy.Expr) -> sympy.Expr:
        """`expr` with every let replaced by its value (lets only matter to differentiation)."""
        for symbol, value in reversed(self.lets):
            if symbol in expr.free_symbols:
                expr = expr.xreplace({symbol: value})
        return expr

    @property
    def differentiable_inputs(self) -> tuple[sympy.Symbol, ...]:
        return tuple(sym for sym in self.element_inputs + self.sample_inputs if sym not in self.no_grad_inputs)


def _namer(kernel: Kernel):
    """Fresh symbol names: a backward of a backward must not reuse its forward's names."""
    used = {sym.name for sym in kernel.element_inputs + kernel.sample_inputs}
    used |= {sym.name for sym, _ in kernel.lets + kernel.element_outputs + kernel.sample_outputs}
    used |= {step.symbol.name for step in kernel.steps}

    def fresh(base: str) -> sympy.Symbol:
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return sympy.Symbol(name, real=True)

    return fresh


@cache
def backward(kernel: Kernel, wrt: tuple[sympy.Symbol, ...] | None = None) -> Kernel:
    """The vector-Jacobian product of `kernel`: inputs and output cotangents → input gradients.

    The forward steps are recomputed (nothing is saved). Adjoints run in reverse:
    ``adj_S = Σ_o g_o ∂S_o/∂S + Σ_later-assign adj_L ∂L/∂S + Σ_j (Σ_o g_oj ∂O_oj/∂S + Σ_later-reduce adj_L ∂body_Lj/∂S)``.
    An adjoint that is structurally zero is 0, not a step, so zeros propagate. Outputs: the
    gradients w.r.t. `wrt` (default: every differentiable input) that are not structurally zero,
    in input order, named by `gradient_of`. A `wrt` subset names the kernel ``<name>_backward_wrt_<inputs>``.
    """
    if wrt is not None:
        unknown = [sym for sym in wrt if sym not in kernel.differentiable_inputs]
        if unknown:
            raise ValueError(f"backward of kernel {kernel.name!r}: {', '.join(map(str, unknown))} is not one of "
                             f"its differentiable inputs ({', '.join(map(str, kernel.differentiable_inputs))})")
    fresh = _namer(kernel)
    g_elem = {out: fresh(f"g_{out.name}") for out, _ in kernel.element_outputs}
    g_samp = {out: fresh(f"g_{out.name}") for out, _ in kernel.sample_outputs}

    def direct(symbol: sympy.Symbol) -> tuple[sympy.Expr, sympy.Expr]:
        """(per-sample, per-element) parts of ∂F/∂symbol through the outputs."""
        sample_part = sum((g_samp[o] * sympy.diff(e, symbol) for o, e in kernel.sample_outputs), ZERO)
        element_part = sum((g_elem[o] * sympy.diff(e, symbol) for o, e in kernel.element_outputs), ZERO)
        return sample_part, element_part

    def through_steps(symbol: sympy.Symbol, steps) -> tuple[sympy.Expr, sympy.Expr]:
        sample_part, element_part = ZERO, ZERO
        for step in steps:
            d = sympy.diff(step.expr, symbol)
            if d == 0:
                continue
            if step.kind == REDUCE:
                element_part += adjoint[step.symbol] * d
            else:
                sample_part += adjoint[step.symbol] * d
        return sample_part, element_part

    steps = list(kernel.steps)
    adjoint: dict[sympy.Symbol, sympy.Symbol] = {}

    def per_sample(name: str, sample_part: sympy.Expr, element_part: sympy.Expr) -> sympy.Expr:
        """A per-sample total: the element part is summed by a new reduce step."""
        if element_part != 0:
            accumulated = fresh(f"sum_{name}")
            steps.append(Step(accumulated, REDUCE, element_part))
            sample_part += accumulated
        return sample_part

    for index in reversed(range(len(kernel.steps))):
        symbol = kernel.steps[index].symbol
        s1, e1 = direct(symbol)
        s2, e2 = through_steps(symbol, kernel.steps[index + 1:])
        if s1 + s2 == ZERO and e1 + e2 == ZERO:
            adjoint[symbol] = ZERO
            continue
        adjoint[symbol] = fresh(f"adj_{symbol.name}")
        steps.append(Step(adjoint[symbol], ASSIGN, per_sample(f"adj_{symbol.name}", s1 + s2, e1 + e2)))

    element_outputs, sample_outputs, gradient_of = [], [], []
    for symbol in kernel.differentiable_inputs if wrt is None else [s for s in kernel.differentiable_inputs if s in wrt]:
        s1, e1 = direct(symbol)
        s2, e2 = through_steps(symbol, kernel.steps)
        if s1 + s2 == ZERO and e1 + e2 == ZERO:
            continue
        grad = fresh(f"grad_{symbol.name}")
        gradient_of.append(symbol)
        if symbol in kernel.element_inputs:
            element_outputs.append((grad, e1 + e2 + s1 + s2))
        else:
            sample_outputs.append((grad, per_sample(f"grad_{symbol.name}", s1 + s2, e1 + e2)))

    suffix = "" if wrt is None else "_wrt_" + "_".join(sym.name for sym in gradient_of)
    return Kernel(
        name=f"{kernel.name}_backward{suffix}",
        element_inputs=kernel.element_inputs + tuple(g_elem.values()),
        sample_inputs=kernel.sample_inputs + tuple(g_samp.values()),
        lets=kernel.lets,
        steps=tuple(steps),
        element_outputs=tuple(element_outputs),
        sample_outputs=tuple(sample_outputs),
        no_grad_inputs=kernel.no_grad_inputs,
        gradient_of=tuple(gradient_of),
    )


def gradient_inputs(kernel: Kernel) -> tuple[sympy.Symbol, ...]:
    """The inputs of `kernel` whose gradient is not structurally zero (none: it needs no backward)."""
    return backward(kernel).gradient_of
