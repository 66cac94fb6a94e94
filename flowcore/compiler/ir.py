"""Nodes the compiler adds to the language's: network jets and structural zeros.

After `differentiate`, an objective is algebra over `Jet`s: every derivative has been pushed down
to the network calls, and a call together with its directional derivatives is one node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import sympy

from ..lang import nodes as n

NET, TEACHER, LOGVAR = "net", "teacher", "logvar"

# One direction of a directional derivative of a call f(a, b, x): (ȧ, ḃ, ẋ); ẋ None means zero.
Direction = tuple  # (sympy.Expr, sympy.Expr, Optional[n.Expr])


@dataclass(frozen=True, eq=False, repr=False)
class Jet(n.Expr):
    """``∂^k f(a, b, x)[d_1, …, d_k]``: the k-th mixed directional derivative of a network call.

    k = 0 is the call's value; `f` is the network (``net``), the frozen teacher (``teacher``, b is
    ignored) or the log-variance head (``logvar``, x is None). Directions are kept sorted by
    content so that equal mixed partials are one node.
    """

    fn: str
    a: sympy.Expr
    b: sympy.Expr
    x: Optional[n.Expr]
    directions: tuple

    def __post_init__(self):
        object.__setattr__(self, "directions", tuple(sorted(self.directions, key=_direction_key)))

    @property
    def kind(self) -> str:  # type: ignore[override]
        return n.SCALAR if self.fn == LOGVAR else n.TENSOR

    @property
    def order(self) -> int:
        return len(self.directions)

    @property
    def primal(self) -> "Jet":
        return Jet(self.fn, self.a, self.b, self.x, ())

    def pretty_parts(self, pretty, show) -> str:
        name = {NET: "V", TEACHER: "Teacher", LOGVAR: "w"}[self.fn]
        args = [show(self.a)] + ([] if self.fn == TEACHER else [show(self.b)])
        args += [] if self.x is None else [pretty(self.x)]
        ticks = "'" * self.order
        dirs = "".join(f"[{show(da)}, {show(db)}, {'0' if dx is None else pretty(dx)}]" for da, db, dx in self.directions)
        return f"{name}{ticks}({', '.join(args)}){dirs}"


def jet(fn: str, a, b, x, directions: tuple = ()) -> Jet:
    return Jet(fn, sympy.sympify(a), sympy.sympify(b), x, tuple(directions))


def _direction_key(direction: Direction) -> str:
    da, db, dx = direction
    return f"{sympy.srepr(da)}|{sympy.srepr(db)}|{hash(dx) if dx is not None else ''}|{dx!r}"


@dataclass(frozen=True, eq=False, repr=False)
class Zero(n.Expr):
    """A structural zero of a given kind: what derivatives of constants are."""

    of: str

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.of

    def pretty_parts(self, pretty, show) -> str:
        return "0"
