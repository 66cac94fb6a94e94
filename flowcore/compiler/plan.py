"""Pass `plan`: which network calls to make, in what order, with or without autograd.

- deduplicate: identical jets are one node (structural hashing), so one computation;
- merge: all jets at one primal ``f(a, b, x)`` form one `Call` — a primal pass and its tangents —
  even when one of them must wait for an earlier call (ESD's ``∇X·v̂`` waits for ``v̂``, and its
  ``∂_s X`` waits with it: both tangents then share one primal pass). Only where a jet at a primal
  depends on another jet at the same primal (``∇v(x)·v(x)``) do the levels split them;
- order: a call's level is one more than the deepest call its inputs use;
- batch: calls of one level with the same function, derivative signature and liveness, across
  terms, run as one network call on the concatenated batch;
- live: an output reachable from the loss outside ``sg`` keeps a graph; the others are computed
  without one, and a call with no live output runs under no_grad.
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
    live: tuple[bool, ...]  # per output: reachable from the loss outside sg (it needs a graph)

    @property
    def grad(self) -> bool:
        """Whether the call runs with autograd at all."""
        return any(self.live)

    @property
    def signature(self) -> tuple:
        return (self.fn, self.live, len(self.directions), self.outputs,
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


class _Cycle(Exception):
    """A jet at some primal needs another jet at the same primal first."""


def _levels(deps: dict) -> dict:
    """Each node's level: one more than the deepest of its dependencies; raises _Cycle."""
    levels: dict = {}
    visiting: set = set()

    def visit(node) -> int:
        if node not in levels:
            if node in visiting:
                raise _Cycle
            visiting.add(node)
            levels[node] = 1 + max((visit(dep) for dep in deps[node]), default=-1)
            visiting.discard(node)
        return levels[node]

    for node in deps:
        visit(node)
    return levels


def _group_jets(jets: list[Jet]) -> dict[tuple, list[Jet]]:
    """Jets by call: one call per primal ``(fn, a, b, x)`` at the level its latest input allows; if
    that would make a call wait for itself (``∇v(x)·v(x)``), one call per primal and jet level."""
    needs = {jet: {inner for expr in _inputs(jet) for inner in _jets(expr)} for jet in jets}
    primal = {jet: (jet.fn, jet.a, jet.b, jet.x) for jet in jets}
    try:
        group_needs: dict[tuple, set] = {}
        for jet in jets:
            group_needs.setdefault(primal[jet], set()).update(primal[dep] for dep in needs[jet])
        levels = _levels(group_needs)
        key = {jet: primal[jet] + (levels[primal[jet]],) for jet in jets}
    except _Cycle:
        levels = _levels(needs)
        key = {jet: primal[jet] + (levels[jet],) for jet in jets}
    groups: dict[tuple, list[Jet]] = {}
    for jet in jets:
        groups.setdefault(key[jet], []).append(jet)
    return groups


def plan_term(index: int, loss: n.Expr, counter) -> TermPlan:
    live = _live_jets(loss)
    calls = []
    for (fn, a, b, x, lvl), jets in _group_jets(list(dict.fromkeys(_jets(loss)))).items():
        jets = sorted(jets, key=lambda j: (j.order, repr(j)))
        directions: list = []
        for jet in jets:
            for direction in jet.directions:
                if direction not in directions:
                    directions.append(direction)
        outputs = tuple(tuple(directions.index(d) for d in jet.directions) for jet in jets)
        calls.append(Call(f"{fn}{next(counter)}", index, fn, a, b, x, tuple(directions), outputs, tuple(jets), lvl,
                          tuple(jet in live for jet in jets)))
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
