"""Rebuilding immutable nodes: the one helper every pass uses to map over children."""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable

from ..lang import nodes as n
from ..lang.analysis import free_vars


def _map_value(value, fn):
    if isinstance(value, n.Expr):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(_map_value(item, fn) for item in value)
    return value


def map_children(node: n.Expr, fn: Callable[[n.Expr], n.Expr]) -> n.Expr:
    """`node` with every child expression replaced by ``fn(child)`` (the node itself if none change)."""
    changes = {}
    for f in fields(node):
        old = getattr(node, f.name)
        new = _map_value(old, fn)
        if new is not old and new != old:
            changes[f.name] = new
    if not changes:
        return node
    if isinstance(node, n.Add):  # re-flatten and re-check kinds through the smart constructor
        total = changes["terms"][0]
        for term in changes["terms"][1:]:
            total = n.add(total, term)
        return total
    if isinstance(node, n.Scale):
        return n.scale(node.coef, changes["arg"])
    if isinstance(node, n.Bind):
        return rebind(changes.get("arg", node.arg), changes.get("bindings", node.bindings))
    return replace(node, **changes)


def rebind(arg: n.Expr, bindings: tuple) -> n.Expr:
    """``Bind(arg, bindings)`` keeping only the variables `arg` still uses (a rewrite may remove all)."""
    free = free_vars(arg)
    kept = tuple((var, value) for var, value in bindings if var.name in free)
    return n.Bind(arg, kept) if kept else arg


def memoized(transform: Callable[[n.Expr, Callable], n.Expr]) -> Callable[[n.Expr], n.Expr]:
    """Apply `transform(node, recurse)` bottom-up over a DAG, once per distinct node."""
    memo: dict[n.Expr, n.Expr] = {}

    def recurse(node: n.Expr) -> n.Expr:
        if node not in memo:
            memo[node] = transform(node, recurse)
        return memo[node]

    return recurse
