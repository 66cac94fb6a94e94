"""Read-only questions about expressions: what they contain, what they need."""
from __future__ import annotations

from collections.abc import Iterator

import sympy

from . import nodes as n
from .nodes import free_vars
from .symbols import symbols_of

__all__ = ["walk", "free_vars", "coefficients", "symbols_used", "first_node_using", "derivative_order",
           "derivatives", "uses", "on_diagonal"]


def walk(expr: n.Expr) -> Iterator[n.Expr]:
    """Every node of `expr`, parents before children."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children()))


def coefficients(node: n.Expr) -> tuple[sympy.Expr, ...]:
    """The sympy expressions a single node holds (times of calls, coefficients, derivative times)."""
    if isinstance(node, n.Coef):
        return (node.value,)
    if isinstance(node, n.Interp):
        return (node.tau,)
    if isinstance(node, (n.Net, n.FlowMap, n.LogVar)):
        return (node.a, node.b)
    if isinstance(node, n.TeacherCall):
        return (node.a,)
    if isinstance(node, n.Scale):
        return (node.coef,)
    if isinstance(node, n.D):
        return (node.tau,)
    return ()


def symbols_used(expr: n.Expr) -> frozenset[sympy.Symbol]:
    """Every time and parameter symbol the expression needs a value for."""
    return frozenset().union(*(symbols_of(c) for node in walk(expr) for c in coefficients(node)))


def first_node_using(expr: n.Expr, symbol: sympy.Symbol) -> n.Expr:
    """The outermost node whose own coefficients mention `symbol` (for error messages)."""
    return next(node for node in walk(expr) if any(symbol in c.free_symbols for c in coefficients(node)))


def derivative_order(expr: n.Expr) -> int:
    """The deepest nesting of D / Dx (0: no derivatives, 2: second order)."""
    inner = max((derivative_order(child) for child in expr.children()), default=0)
    return inner + 1 if isinstance(expr, (n.D, n.Dx)) else inner


_CALLS = (n.Net, n.FlowMap, n.TeacherCall, n.LogVar)


def derivatives(expr: n.Expr) -> tuple[str, ...]:
    """The network derivatives `expr` takes (JVPs), e.g. ``("∂_t", "∇_x·")``.

    Derivatives of the interpolant alone (İ_t) are analytic and not listed.
    """
    names = []
    for node in walk(expr):
        if not _network_derivative(node):
            continue
        name = f"∂_{node.tau}" if isinstance(node, n.D) else f"∇_{node.var.name}·"
        if name not in names:
            names.append(name)
    if _network_order(expr) > 1:
        names.append("2nd order")
    return tuple(names)


def _network_derivative(node: n.Expr) -> bool:
    return isinstance(node, (n.D, n.Dx)) and any(isinstance(inner, _CALLS) for inner in walk(node.arg))


def _network_order(expr: n.Expr) -> int:
    inner = max((_network_order(child) for child in expr.children()), default=0)
    return inner + 1 if _network_derivative(expr) else inner


def uses(expr: n.Expr, node_type: type) -> bool:
    return any(isinstance(node, node_type) for node in walk(expr))


def on_diagonal(expr: n.Expr) -> bool:
    """Whether `expr` calls the network, and only on the diagonal ``s = t`` (``V(t, t, ·)``): the
    flow-matching calls, the only ones that drop out by default (docs/math.md §4)."""
    calls = [node for node in walk(expr) if isinstance(node, (n.Net, n.FlowMap))]
    return bool(calls) and all(sympy.simplify(node.a - node.b) == 0 for node in calls)
