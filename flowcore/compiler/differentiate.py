"""Pass `differentiate`: symbolic forward mode, pushed down to the network calls.

Every ``D(e, τ)`` and ``Dx(e, x, along=w)`` is replaced by the directional derivative of e along a
`Tangent` — unit speed in τ, or w in the variable x. The rules are the usual forward-mode ones;
coefficients are differentiated by sympy; at a network call the derivative becomes a higher
`Jet` (a JVP, or a second-order mixed partial when derivatives nest):

    d ∂^k f[d_1..d_k] = ∂^{k+1} f[d_1..d_k, (ȧ, ḃ, ẋ)] + Σ_i ∂^k f[.., d(d_i), ..]

A bound variable's derivative is the derivative of its value in the binding's scope (the chain
rule of a total derivative), while a derivative taken INSIDE the binding holds it fixed — the
semantics of docs/design.md. Stop-gradient commutes: ``d sg(e) = sg(d e)``. This module is the
compiler's own differentiation; the reference interpreter never uses it.

`None` stands for a structural zero while differentiating; `bind_values` finally substitutes the
(uniquely named, see `expand`) bound variables.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from ..lang import nodes as n
from ..lang.functions import BY_SYMPY_NAME, FUNCTIONS
from .ir import Jet, Zero, jet
from .rewrite import map_children, memoized, rebind


@dataclass(frozen=True)
class Tangent:
    """A direction: speeds of time symbols and tangents of free variables."""

    times: dict = field(default_factory=dict)
    vars: dict = field(default_factory=dict)

    def coefficient(self, c: sympy.Expr) -> sympy.Expr:
        return sympy.Add(*(sympy.diff(c, tau) * speed for tau, speed in self.times.items()))


def _sum(*parts):
    present = [p for p in parts if p is not None]
    if not present:
        return None
    total = present[0]
    for part in present[1:]:
        total = n.add(total, part)
    return total


def _scale(c: sympy.Expr, e):
    if e is None or c == 0:
        return None
    return n.scale(c, e)


def _mul(left, right):
    if left is None or right is None:
        return None
    return n.mul(left, right)


_U = sympy.Dummy("u")


def _func_derivative(name: str, arg: n.Expr) -> n.Expr:
    """f'(arg): the function table's derivative rule f'(u), written in the language at u = arg."""
    return _in_language(FUNCTIONS[name].derivative(_U), arg)


def _in_language(expr: sympy.Expr, arg: n.Expr) -> n.Expr:
    """The sympy expression `expr` of u as an expression of the language, with `arg` for u."""
    if expr == _U:
        return arg
    if not expr.has(_U):
        return n.Coef(expr)
    if expr.is_Add:
        return _sum(*(_in_language(term, arg) for term in expr.args))
    if expr.is_Mul:
        constant = sympy.Mul(*(f for f in expr.args if not f.has(_U)))
        factors = [_in_language(f, arg) for f in expr.args if f.has(_U)]
        product = factors[0]
        for factor in factors[1:]:
            product = n.mul(product, factor)
        return n.scale(constant, product)
    if expr.is_Pow and not expr.exp.has(_U):
        return n.power(_in_language(expr.base, arg), expr.exp)
    entry = BY_SYMPY_NAME.get(type(expr).__name__)
    if entry is not None:
        return n.Func(entry.name, _in_language(expr.args[0], arg))
    raise ValueError(f"differentiate: the derivative rule `{expr}` uses `{type(expr).__name__}`, which is neither "
                     f"+, *, a constant power nor a function of the table ({', '.join(FUNCTIONS)})")


def derive(expr: n.Expr, tangent: Tangent):
    """The directional derivative of a D/Dx-free expression along `tangent` (None: zero)."""
    memo: dict = {}

    def d(node: n.Expr):
        if node not in memo:
            memo[node] = _derive_node(node, tangent, d)
        return memo[node]

    return d(expr)


def _derive_node(node: n.Expr, tangent: Tangent, d):
    if isinstance(node, (n.Source, Zero)):
        return None
    if isinstance(node, n.Var):
        return tangent.vars.get(node.name)
    if isinstance(node, n.Coef):
        dc = tangent.coefficient(node.value)
        return None if dc == 0 else n.Coef(dc)
    if isinstance(node, n.Scale):
        return _sum(_scale(tangent.coefficient(node.coef), node.arg), _scale(node.coef, d(node.arg)))
    if isinstance(node, n.Add):
        return _sum(*(d(term) for term in node.terms))
    if isinstance(node, n.Mul):
        return _sum(_mul(d(node.left), node.right), _mul(node.left, d(node.right)))
    if isinstance(node, n.Pow):
        return _mul(n.scale(node.exponent, n.power(node.base, node.exponent - 1)), d(node.base))
    if isinstance(node, n.Func):
        return _mul(_func_derivative(node.name, node.arg), d(node.arg))
    if isinstance(node, n.SqNorm):
        dx = d(node.arg)
        return None if dx is None else n.scale(2, n.Dot(node.arg, dx))
    if isinstance(node, n.Dot):
        dl, dr = d(node.left), d(node.right)
        return _sum(None if dl is None else n.Dot(dl, node.right), None if dr is None else n.Dot(node.left, dr))
    if isinstance(node, n.StopGrad):
        inner = d(node.arg)
        return None if inner is None else n.StopGrad(inner)
    if isinstance(node, Jet):
        return _derive_jet(node, tangent, d)
    if isinstance(node, n.Bind):
        inner_vars = dict(tangent.vars)
        for var, value in node.bindings:
            dv = d(value)
            if dv is None:
                inner_vars.pop(var.name, None)
            else:
                inner_vars[var.name] = dv
        inner = derive(node.arg, Tangent(tangent.times, inner_vars))
        return None if inner is None else rebind(inner, node.bindings)
    raise TypeError(f"differentiate: no rule for {type(node).__name__} in `{node}` (D/Dx must be eliminated first)")


def _derive_jet(node: Jet, tangent: Tangent, d):
    new = (tangent.coefficient(node.a), tangent.coefficient(node.b), None if node.x is None else d(node.x))
    parts = []
    if new[0] != 0 or new[1] != 0 or new[2] is not None:
        parts.append(jet(node.fn, node.a, node.b, node.x, node.directions + (new,)))
    for i, (da, db, dx) in enumerate(node.directions):
        moved = (tangent.coefficient(da), tangent.coefficient(db), None if dx is None else d(dx))
        if moved[0] != 0 or moved[1] != 0 or moved[2] is not None:
            directions = node.directions[:i] + (moved,) + node.directions[i + 1:]
            parts.append(jet(node.fn, node.a, node.b, node.x, directions))
    return _sum(*parts)


def eliminate_derivatives(expr: n.Expr) -> n.Expr:
    """`expr` with every D and Dx replaced by its symbolic derivative (innermost first)."""

    def transform(node: n.Expr, recurse) -> n.Expr:
        if isinstance(node, n.D):
            result = derive(recurse(node.arg), Tangent(times={node.tau: sympy.Integer(1)}))
        elif isinstance(node, n.Dx):
            result = derive(recurse(node.arg), Tangent(vars={node.var.name: recurse(node.along)}))
        else:
            return map_children(node, recurse)
        return Zero(node.kind) if result is None else result

    return memoized(transform)(expr)


def bind_values(expr: n.Expr) -> n.Expr:
    """Substitute every bound variable by its value (names are unique after `expand`)."""
    values: dict[str, n.Expr] = {}

    def transform(node: n.Expr, recurse) -> n.Expr:
        if isinstance(node, n.Bind):
            for var, value in node.bindings:
                values[var.name] = recurse(value)
            return recurse(node.arg)
        if isinstance(node, n.Var):
            if node.name not in values:
                raise ValueError(f"bind_values: variable `{node.name}` is not bound")
            return values[node.name]
        return map_children(node, recurse)

    return memoized(transform)(expr)
