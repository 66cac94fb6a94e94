"""Pass `plan`: which network calls to make, in what order, with or without autograd.

- deduplicate: identical jets are one node (structural hashing), so one computation;
- merge: all jets at one primal ``f(a, b, x)`` form one `Call` — a primal pass and its tangents;
- order: a call's level is one more than the deepest call its inputs use;
- batch: calls of one level with the same function, derivative signature and autograd mode, across
  terms, run as one network call on the concatenated batch;
- grad: a call none of whose outputs is reachable from the loss outside ``sg`` runs under no_grad.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from ..lang import nodes as n
from ..lang.analysis import walk
from .ir import Jet


@dataclass(frozen=True)
class Call:
    """One network evaluation: a primal and the jets wanted at it, for one term's samples."""

    name: str
    term: int
    fn: str
    a: sympy.Expr
    b: sympy.Expr
    x: n.Expr | None
    directions: tuple  # distinct directions (da, db, dx) used by the jets
    outputs: tuple  # per output: tuple of direction indices; () is the primal
    jets: tuple[Jet, ...]  # the jet each output is
    level: int
    grad: bool

    @property
    def signature(self) -> tuple:
        return (self.fn, self.grad, len(self.directions), self.outputs,
                tuple(dx is None for _, _, dx in self.directions), self.x is None)

    def inputs(self) -> list[n.Expr]:
        """The tensor expressions this call consumes (its x and the tangents of x)."""
        found = [] if self.x is None else [self.x]
        return found + [dx for _, _, dx in self.directions if dx is not None]


@dataclass(frozen=True)
class TermPlan:
    loss: n.Expr
    calls: tuple[Call, ...]


@dataclass(frozen=True)
class Plan:
    terms: tuple[TermPlan, ...]
    batches: tuple[tuple[Call, ...], ...]  # in execution order (by level)

    @property
    def levels(self) -> int:
        return 1 + max((call.level for term in self.terms for call in term.calls), default=-1)


def _jets(expr: n.Expr) -> list[Jet]:
    return [node for node in walk(expr) if isinstance(node, Jet)]


def _live_jets(loss: n.Expr) -> set[Jet]:
    """Jets reachable from the loss without crossing a stop-gradient."""
    live, stack, seen = set(), [loss], set()
    while stack:
        node = stack.pop()
        if node in seen or isinstance(node, n.StopGrad):
            continue
        seen.add(node)
        if isinstance(node, Jet):
            live.add(node)
        stack.extend(node.children())
    return live


def _inputs(jet: Jet) -> list[n.Expr]:
    return ([] if jet.x is None else [jet.x]) + [dx for _, _, dx in jet.directions if dx is not None]


def plan_term(index: int, loss: n.Expr, counter) -> TermPlan:
    live = _live_jets(loss)
    levels: dict[Jet, int] = {}

    def level(jet: Jet) -> int:
        """One more than the deepest jet among its inputs. A jet whose direction uses its own primal
        (``∇v(x)·v(x)``) is a level above that primal: the two cannot share one call."""
        if jet not in levels:
            deps = {inner for expr in _inputs(jet) for inner in _jets(expr)}
            levels[jet] = 1 + max((level(dep) for dep in deps), default=-1)
        return levels[jet]

    groups: dict[tuple, list[Jet]] = {}
    for jet in dict.fromkeys(_jets(loss)):
        groups.setdefault((jet.fn, jet.a, jet.b, jet.x, level(jet)), []).append(jet)
    calls = []
    for (fn, a, b, x, lvl), jets in groups.items():
        jets = sorted(jets, key=lambda j: (j.order, repr(j)))
        directions: list = []
        for jet in jets:
            for direction in jet.directions:
                if direction not in directions:
                    directions.append(direction)
        outputs = tuple(tuple(directions.index(d) for d in jet.directions) for jet in jets)
        calls.append(Call(f"{fn}{next(counter)}", index, fn, a, b, x, tuple(directions), outputs, tuple(jets), lvl,
                          any(jet in live for jet in jets)))
    calls.sort(key=lambda call: call.level)
    return TermPlan(loss, tuple(calls))


def plan_calls(losses: list[n.Expr]) -> Plan:
    """Plan every term's calls and batch compatible calls of one level across terms."""
    import itertools

    counter = itertools.count()
    terms = tuple(plan_term(i, loss, counter) for i, loss in enumerate(losses))
    buckets: dict[tuple, list[Call]] = {}
    for term in terms:
        for call in term.calls:
            buckets.setdefault((call.level, call.signature), []).append(call)
    batches = tuple(tuple(calls) for (lvl, _), calls in sorted(buckets.items(), key=lambda item: item[0][0]))
    return Plan(terms, batches)
