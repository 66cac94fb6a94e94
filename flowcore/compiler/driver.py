"""The compiler driver: named passes over the immutable IR, in order, each testable alone.

    expand → differentiate → bind_values → plan_calls → lower_segments

`compile_program` runs them and returns the `Program` the code generators print; with
``trace=True`` the IR after every pass is kept, for tests and ``flowcore compile --emit``.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Callable

from ..lang.interpolants import Interpolant
from ..lang.objective import Objective
from ..lang.printing import pretty
from .differentiate import bind_values, eliminate_derivatives
from .expand import expand
from .plan import plan_calls
from .segments import Program, lower_segments


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable


PASSES = (
    Pass("expand", lambda losses, ctx: [expand(loss, ctx["interpolant"]) for loss in losses]),
    Pass("differentiate", lambda losses, ctx: [eliminate_derivatives(loss) for loss in losses]),
    Pass("bind_values", lambda losses, ctx: [bind_values(loss) for loss in losses]),
    Pass("plan_calls", lambda losses, ctx: plan_calls(losses)),
    Pass("lower_segments", lambda plan, ctx: lower_segments(ctx["name"], plan)),
)


@dataclass(frozen=True)
class Compilation:
    objective: Objective
    interpolant: Interpolant
    program: Program
    digest: str  # content hash of the declaration, the interpolant and the compiler version
    trace: dict = field(default_factory=dict)


COMPILER_VERSION = "1"


def identifier(name: str) -> str:
    return re.sub(r"\W", "_", name) or "objective"


def declaration_digest(objective: Objective, interpolant: Interpolant) -> str:
    text = "\n".join([COMPILER_VERSION, objective.name, str(interpolant)] +
                     [f"{term.name}|{pretty(term.loss)}|{term.share}" for term in objective.terms])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compile_program(objective: Objective, interpolant: Interpolant | None = None, trace: bool = False) -> Compilation:
    """Run every pass on `objective`'s terms; the result is ready for a code generator."""
    interpolant = interpolant or objective.interpolant
    ctx = {"interpolant": interpolant, "name": identifier(objective.name)}
    state = [term.loss for term in objective.terms]
    stages = {}
    for compiler_pass in PASSES:
        state = compiler_pass.run(state, ctx)
        if trace:
            stages[compiler_pass.name] = state
    return Compilation(objective, interpolant, state, declaration_digest(objective, interpolant), stages)
