"""Pass `expand`: the language's aliases become core nodes.

- ``I(τ)``      → ``α(τ)·x0 + β(τ)·x1 (+ γ(τ)·z)`` for the chosen interpolant;
- ``X(a, b, x)`` → ``x + (b − a)·V(a, b, x)``;
- ``V``, ``Teacher``, ``w`` → `Jet`s of order 0;
- every bound variable gets a fresh, unique name, so later passes can substitute and move
  expressions across scopes without capturing a variable.
"""
from __future__ import annotations

import itertools

import sympy

from ..lang import nodes as n
from ..lang.interpolants import Interpolant
from .ir import LOGVAR, NET, TEACHER, jet
from .rewrite import map_children


def interpolant_sample(tau: sympy.Expr, interpolant: Interpolant) -> n.Expr:
    alpha, beta, gamma = interpolant.at(tau)
    parts = [n.scale(c, n.Source(name)) for c, name in ((alpha, "x0"), (beta, "x1"), (gamma, "z")) if c != 0]
    total = parts[0]
    for part in parts[1:]:
        total = n.add(total, part)
    return total


def expand(expr: n.Expr, interpolant: Interpolant) -> n.Expr:
    """`expr` with aliases expanded and bound variables renamed apart."""
    fresh = itertools.count()
    memo: dict = {}

    def visit(node: n.Expr, names: tuple) -> n.Expr:
        key = (node, names)
        if key not in memo:
            memo[key] = _expand_node(node, dict(names), names, visit, fresh, interpolant)
        return memo[key]

    return visit(expr, ())


def _expand_node(node, env, names, visit, fresh, interpolant):
    recurse = lambda child: visit(child, names)  # noqa: E731
    if isinstance(node, n.Var):
        return n.Var(env.get(node.name, node.name))
    if isinstance(node, n.Interp):
        return interpolant_sample(node.tau, interpolant)
    if isinstance(node, n.FlowMap):
        x = recurse(node.x)
        return n.add(x, n.scale(node.b - node.a, jet(NET, node.a, node.b, x)))
    if isinstance(node, n.Net):
        return jet(NET, node.a, node.b, recurse(node.x))
    if isinstance(node, n.TeacherCall):
        return jet(TEACHER, node.a, node.a, recurse(node.x))
    if isinstance(node, n.LogVar):
        return jet(LOGVAR, node.a, node.b, None)
    if isinstance(node, n.Dx):
        return n.Dx(recurse(node.arg), n.Var(env.get(node.var.name, node.var.name)), recurse(node.along))
    if isinstance(node, n.Bind):
        renamed = dict(env)
        bindings = []
        for var, value in node.bindings:
            new_name = f"{var.name}_{next(fresh)}"
            bindings.append((n.Var(new_name), recurse(value)))
            renamed[var.name] = new_name
        inner = tuple(sorted(renamed.items()))
        return n.Bind(visit(node.arg, inner), tuple(bindings))
    return map_children(node, recurse)
