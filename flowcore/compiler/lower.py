"""Pass `lower`: the elementwise work of a segment becomes one sympy `Kernel`.

Each node between network calls maps to a per-element sympy expression of per-element inputs
(x0, x1, z, call outputs) and per-sample inputs (times, per-sample call outputs); ``sqnorm`` and
``dot`` become reduce steps; ``sg(e)`` becomes a let — a symbol differentiation treats as constant.
"""
from __future__ import annotations

import itertools

import sympy

from ..lang import nodes as n
from ..lang.functions import FUNCTIONS
from ..lang.symbols import Param, Time
from .ir import Zero
from .kernel import REDUCE, Kernel, Step


def leaf_symbol(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, real=True)


class SegmentLowering:
    """Lowers named output expressions over `leaves` (nodes computed elsewhere) into a Kernel."""

    def __init__(self, name: str, leaves: dict[n.Expr, sympy.Symbol]):
        self.name = name
        self.leaves = leaves
        self.element_inputs: dict[sympy.Symbol, None] = {}
        self.sample_inputs: dict[sympy.Symbol, None] = {}
        self.lets: list[tuple[sympy.Symbol, sympy.Expr]] = []
        self.steps: list[Step] = []
        self.memo: dict[n.Expr, sympy.Expr] = {}
        self.counter = itertools.count()

    def _use_times(self, expr: sympy.Expr) -> sympy.Expr:
        for symbol in sorted(expr.free_symbols, key=str):  # sorted: generated code must not vary by run
            if isinstance(symbol, (Time, Param)):
                self.sample_inputs.setdefault(symbol)
        return expr

    def to_sympy(self, node: n.Expr) -> sympy.Expr:
        if node not in self.memo:
            self.memo[node] = self._lower(node)
        return self.memo[node]

    def _lower(self, node: n.Expr) -> sympy.Expr:
        if node in self.leaves:
            symbol = self.leaves[node]
            (self.sample_inputs if node.kind != n.TENSOR else self.element_inputs).setdefault(symbol)
            return symbol
        if isinstance(node, n.Source):
            raise KeyError(f"lower: source `{node}` has no input symbol")
        if isinstance(node, Zero):
            return sympy.Integer(0)
        if isinstance(node, n.Coef):
            return self._use_times(node.value)
        if isinstance(node, n.Scale):
            return self._use_times(node.coef) * self.to_sympy(node.arg)
        if isinstance(node, n.Add):
            return sympy.Add(*(self.to_sympy(term) for term in node.terms))
        if isinstance(node, n.Mul):
            return self.to_sympy(node.left) * self.to_sympy(node.right)
        if isinstance(node, n.Pow):
            return self.to_sympy(node.base) ** node.exponent
        if isinstance(node, n.Func):
            return FUNCTIONS[node.name].sympy(self.to_sympy(node.arg))
        if isinstance(node, n.SqNorm):
            return self._reduce("sqnorm", self.to_sympy(node.arg) ** 2)
        if isinstance(node, n.Dot):
            return self._reduce("dot", self.to_sympy(node.left) * self.to_sympy(node.right))
        if isinstance(node, n.StopGrad):
            value = self.to_sympy(node.arg)
            if value.is_number:
                return value
            symbol = leaf_symbol(f"sg{next(self.counter)}")
            self.lets.append((symbol, value))
            return symbol
        raise TypeError(f"lower: `{node}` ({type(node).__name__}) is not elementwise; it should be a leaf here")

    def _reduce(self, role: str, body: sympy.Expr) -> sympy.Symbol:
        symbol = leaf_symbol(f"{role}{next(self.counter)}")
        self.steps.append(Step(symbol, REDUCE, body))
        return symbol

    def kernel(self, outputs: list[tuple[str, n.Expr]]) -> Kernel:
        element_outputs, sample_outputs = [], []
        for out_name, expr in outputs:
            value = self.to_sympy(expr)
            target = element_outputs if expr.kind == n.TENSOR else sample_outputs
            target.append((leaf_symbol(out_name), value))
        times = frozenset(sym for sym in self.sample_inputs if isinstance(sym, (Time, Param)))
        return Kernel(
            name=self.name,
            element_inputs=tuple(self.element_inputs),
            sample_inputs=tuple(self.sample_inputs),
            lets=tuple(self.lets),
            steps=tuple(self.steps),
            element_outputs=tuple(element_outputs),
            sample_outputs=tuple(sample_outputs),
            no_grad_inputs=times,
        )


def lower_segment(name: str, outputs: list[tuple[str, n.Expr]], leaves: dict[n.Expr, sympy.Symbol]) -> Kernel:
    """One kernel computing `outputs` (name, expression) from the `leaves`."""
    return SegmentLowering(name, leaves).kernel(outputs)
