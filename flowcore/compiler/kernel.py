"""`Kernel`: one segment of elementwise work between network calls, as sympy, and its backward.

A kernel runs per sample ``b`` of a batch: element inputs are ``(B, N)`` arrays (a sample's data
dimensions flattened), sample inputs are ``(B,)`` (times, per-sample scalars). It runs its *steps*
in order — a ``reduce`` step sums a per-element body over the sample's elements, an ``assign``
step computes a per-sample value — then writes per-element and per-sample outputs. *Lets* are
stop-gradient values: symbols whose value differentiation treats as a constant (they are only
substituted when printing).

`backward(kernel)` is derived by `sympy.diff` in reverse mode over the steps, and the result is
again a `Kernel` — which can itself be differentiated (double backward).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

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


def backward(kernel: Kernel) -> Kernel:
    """The vector-Jacobian product of `kernel`: inputs and output cotangents → input gradients.

    The forward steps are recomputed (nothing is saved). Adjoints run in reverse:
    ``adj_S = Σ_o g_o ∂S_o/∂S + Σ_later-assign adj_L ∂L/∂S + Σ_j (Σ_o g_oj ∂O_oj/∂S + Σ_later-reduce adj_L ∂body_Lj/∂S)``.
    """
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
        adjoint[symbol] = fresh(f"adj_{symbol.name}")
        steps.append(Step(adjoint[symbol], ASSIGN, per_sample(f"adj_{symbol.name}", s1 + s2, e1 + e2)))

    element_outputs, sample_outputs = [], []
    for symbol in kernel.differentiable_inputs:
        s1, e1 = direct(symbol)
        s2, e2 = through_steps(symbol, kernel.steps)
        grad = fresh(f"grad_{symbol.name}")
        if symbol in kernel.element_inputs:
            element_outputs.append((grad, e1 + e2 + s1 + s2))
        else:
            sample_outputs.append((grad, per_sample(f"grad_{symbol.name}", s1 + s2, e1 + e2)))

    return Kernel(
        name=f"{kernel.name}_backward",
        element_inputs=kernel.element_inputs + tuple(g_elem.values()),
        sample_inputs=kernel.sample_inputs + tuple(g_samp.values()),
        lets=kernel.lets,
        steps=tuple(steps),
        element_outputs=tuple(element_outputs),
        sample_outputs=tuple(sample_outputs),
        no_grad_inputs=kernel.no_grad_inputs,
    )
