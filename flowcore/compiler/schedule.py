"""Pass `schedule`: a kernel's computation as an ordered, CSE'd program every printer walks.

One `sympy.cse` per kernel names the shared subexpressions (``tmp0, tmp1, …``); each is placed
where it is first needed — per-sample temporaries once per sample, per-element ones inside the
loop over a sample's elements that uses them. Independent reductions share one loop.

The schedule holds no dead work, so no backend needs to prune it: a backward kernel recomputes
its forward's steps, and a step, temporary or loop that no output needs is dropped (before CSE,
and again once the phases are placed). A power ``(a + b)**2`` of a compound base gets the base as
a temporary, since printers write small powers as products that would repeat it.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from .kernel import ASSIGN, REDUCE, Kernel


@dataclass(frozen=True)
class Loop:
    """One pass over a sample's elements: temporaries, then sums and element outputs."""

    temps: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    sums: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    outputs: tuple[tuple[sympy.Symbol, sympy.Expr], ...]


@dataclass(frozen=True)
class Assign:
    """Per-sample statements (temporaries and assignments), in order."""

    statements: tuple[tuple[sympy.Symbol, sympy.Expr], ...]


@dataclass(frozen=True)
class Schedule:
    kernel: Kernel
    phases: tuple  # Assign | Loop, in order
    sample_outputs: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    element_symbols: frozenset  # symbols varying along the element axis


def _live_steps(steps: list, outputs: list) -> list:
    """The steps some output needs (a backward recomputes forward sums its adjoints may not use)."""
    live = set().union(*(e.free_symbols for e in outputs))
    kept = []
    for sym, expr, kind in reversed(steps):
        if sym in live:
            kept.append((sym, expr, kind))
            live |= expr.free_symbols
    return kept[::-1]


def _bind_power_bases(temps: list, exprs: list, names) -> tuple[list, list]:
    """`temps` and `exprs` with the compound base of every integer power ``|n| >= 2`` bound once
    to a temporary from `names`, defined just before its first use."""
    bound: dict = {}
    pending: list = []

    def bind(expr: sympy.Expr) -> sympy.Expr:
        if expr.is_Atom:
            return expr
        args = [bind(arg) for arg in expr.args]
        if any(new is not old for new, old in zip(args, expr.args)):
            expr = expr.func(*args)
        if expr.is_Pow and expr.exp.is_Integer and abs(int(expr.exp)) >= 2 and not expr.base.is_Atom:
            if expr.base not in bound:
                bound[expr.base] = next(names)
                pending.append((bound[expr.base], expr.base))
            return sympy.Pow(bound[expr.base], expr.exp)
        return expr

    placed: list = []
    for sym, value in temps:
        value = bind(value)
        placed += pending + [(sym, value)]
        pending.clear()
    exprs = [bind(e) for e in exprs]
    return placed + pending, exprs


def _without_dead_work(phases: list, sample_outputs: list) -> list:
    """`phases` less every statement, sum and loop temporary that no output needs (a temporary CSE
    shared with a dead step, a forward step a backward recomputes), and less any loop left empty."""
    live = set().union(*(e.free_symbols for _, e in sample_outputs))
    kept: list = []
    for phase in reversed(phases):
        if isinstance(phase, Assign):
            statements = []
            for sym, expr in reversed(phase.statements):
                if sym in live:
                    statements.append((sym, expr))
                    live |= expr.free_symbols
            if statements:
                kept.append(Assign(tuple(reversed(statements))))
            continue
        sums = tuple((sym, expr) for sym, expr in phase.sums if sym in live)
        if not sums and not phase.outputs:
            continue
        inner = set().union(*(e.free_symbols for _, e in sums + phase.outputs))
        temps = []
        for sym, expr in reversed(phase.temps):
            if sym in inner:
                temps.append((sym, expr))
                inner |= expr.free_symbols
        live |= inner
        kept.append(Loop(tuple(reversed(temps)), sums, phase.outputs))
    return kept[::-1]


def schedule(kernel: Kernel) -> Schedule:
    element_outputs = [(sym, kernel.substituted(e)) for sym, e in kernel.element_outputs]
    sample_outputs = [(sym, kernel.substituted(e)) for sym, e in kernel.sample_outputs]
    steps = _live_steps([(step.symbol, kernel.substituted(step.expr), step.kind) for step in kernel.steps],
                        [e for _, e in element_outputs + sample_outputs])
    expressions = [e for _, e, _ in steps] + [e for _, e in element_outputs] + [e for _, e in sample_outputs]
    temps, reduced = sympy.cse(expressions, symbols=sympy.numbered_symbols("tmp", real=True), order="none")
    taken = set().union(*(e.free_symbols for e in reduced), (sym for sym, _ in temps))
    temps, reduced = _bind_power_bases(temps, reduced, sympy.numbered_symbols("tmp", real=True, start=len(temps),
                                                                              exclude=taken))
    k = len(steps)
    steps = [(sym, reduced[i], kind) for i, (sym, _, kind) in enumerate(steps)]
    element_outputs = [(sym, reduced[k + i]) for i, (sym, _) in enumerate(element_outputs)]
    sample_outputs = [(sym, reduced[k + len(element_outputs) + i]) for i, (sym, _) in enumerate(sample_outputs)]

    definitions = dict(temps)
    element_level = set(kernel.element_inputs)
    for sym, value in temps:
        if value.free_symbols & element_level:
            element_level.add(sym)

    def needed(exprs) -> list[sympy.Symbol]:
        """Temporaries `exprs` use, with their dependencies, in definition order."""
        found: set = set()
        stack = [s for e in exprs for s in e.free_symbols if s in definitions]
        while stack:
            sym = stack.pop()
            if sym not in found:
                found.add(sym)
                stack.extend(s for s in definitions[sym].free_symbols if s in definitions)
        return [sym for sym, _ in temps if sym in found]

    def depends(expr: sympy.Expr) -> set:
        """Every symbol `expr` reads, through the temporaries it uses."""
        return set(expr.free_symbols).union(*(definitions[sym].free_symbols for sym in needed([expr])))

    phases: list = []
    hoisted: set = set()  # per-sample temporaries already computed

    def sample_statements(exprs) -> list:
        out = []
        for sym in needed(exprs):
            if sym not in element_level and sym not in hoisted:
                hoisted.add(sym)
                out.append((sym, definitions[sym]))
        return out

    def loop(sums, outputs) -> Loop:
        exprs = [e for _, e in sums] + [e for _, e in outputs]
        before = sample_statements(exprs)
        if before:
            phases.append(Assign(tuple(before)))
        local = tuple((sym, definitions[sym]) for sym in needed(exprs) if sym in element_level)
        return Loop(local, tuple(sums), tuple(outputs))

    wave: list = []
    for sym, expr, kind in steps:
        if kind == REDUCE:
            if depends(expr) & {s for s, _ in wave}:
                phases.append(loop(wave, ()))
                wave = []
            wave.append((sym, expr))
        else:
            assert kind == ASSIGN
            if wave:
                phases.append(loop(wave, ()))
                wave = []
            statements = sample_statements([expr]) + [(sym, expr)]
            phases.append(Assign(tuple(statements)))
    outputs_depend_on_wave = any(depends(e) & {s for s, _ in wave} for _, e in element_outputs)
    if wave and (outputs_depend_on_wave or not element_outputs):
        phases.append(loop(wave, ()))
        wave = []
    if wave or element_outputs:
        phases.append(loop(wave, element_outputs))
    before = sample_statements([e for _, e in sample_outputs])
    if before:
        phases.append(Assign(tuple(before)))
    phases = _without_dead_work(phases, sample_outputs)
    return Schedule(kernel, tuple(phases), tuple(sample_outputs), frozenset(element_level))
