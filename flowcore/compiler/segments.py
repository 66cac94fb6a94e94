"""Pass `lower_segments`: cut each term at its network calls into kernels.

Per term and level, one *input* segment computes the inputs (x and its tangents) of that level's
calls from the sources and earlier calls' outputs; one *loss* segment computes the per-sample loss
from everything. An input that is already a leaf (x0, or a call's output) needs no kernel.

`program_kernels` lists what a backend builds for a program: every segment's kernel and the
backward kernels of it that a training step or a gradient check runs (`backward_kernels`).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from ..lang import nodes as n
from .kernel import Kernel, backward
from .lower import leaf_symbol, lower_segment
from .plan import Call, Plan

SOURCES = {name: leaf_symbol(name) for name in ("x0", "x1", "z")}


def output_name(call: Call, output: tuple) -> str:
    return call.name + ("_d" + "d".join(map(str, output)) if output else "")


def input_names(call: Call) -> list[str]:
    names = [] if call.x is None else [f"{call.name}_x"]
    return names + [f"{call.name}_dx{i}" for i, (_, _, dx) in enumerate(call.directions) if dx is not None]


@dataclass(frozen=True)
class Segment:
    """A kernel and where its values come from and go: symbol names ↔ runtime values."""

    term: int
    level: int  # the level of the calls it feeds; -1 for the loss
    kernel: Kernel | None
    passthrough: tuple[tuple[str, str], ...]  # (input name, leaf name) needing no kernel


@dataclass(frozen=True)
class Program:
    """Everything the runtime needs: the plan, the segments, and the leaf symbols of each node."""

    name: str
    plan: Plan
    segments: tuple[Segment, ...]
    leaf_names: dict  # node -> symbol name, for sources and every call output

    def segments_at(self, term: int, level: int) -> list[Segment]:
        return [seg for seg in self.segments if seg.term == term and seg.level == level]


def lower_segments(name: str, plan: Plan) -> Program:
    leaves: dict[n.Expr, sympy.Symbol] = {n.Source(k): v for k, v in SOURCES.items()}
    for term in plan.terms:
        for call in term.calls:
            for output, jet in zip(call.outputs, call.jets):
                leaves[jet] = leaf_symbol(output_name(call, output))
    segments = []
    for index, term in enumerate(plan.terms):
        for level in sorted({call.level for call in term.calls}):
            computed, passthrough = [], []
            for call in (c for c in term.calls if c.level == level):
                for input_name, expr in zip(input_names(call), call.inputs()):
                    if expr in leaves:
                        passthrough.append((input_name, leaves[expr].name))
                    else:
                        computed.append((input_name, expr))
            kernel = lower_segment(f"{name}_t{index}_level{level}", computed, leaves) if computed else None
            segments.append(Segment(index, level, kernel, tuple(passthrough)))
        loss_kernel = lower_segment(f"{name}_t{index}_loss", [("loss", term.loss)], leaves)
        segments.append(Segment(index, -1, loss_kernel, ()))
    return Program(name, plan, tuple(segments), {node: sym.name for node, sym in leaves.items()})


def backward_kernels(kernel: Kernel) -> list[Kernel]:
    """The backward kernels built with `kernel`, the one giving every non-zero gradient first.

    None when no input has a gradient (its outputs need no autograd node). When some gradients
    are w.r.t. the sources (x0, x1, z: data, which a training step does not differentiate) and
    others are not, a second kernel gives only the others, so training neither computes nor
    stores the data's gradients (docs/design.md, runtime).
    """
    full = backward(kernel)
    if not full.gradient_of:
        return []
    without_sources = tuple(sym for sym in full.gradient_of if sym not in SOURCES.values())
    if without_sources and without_sources != full.gradient_of:
        return [full, backward(kernel, without_sources)]
    return [full]


def program_kernels(program: Program) -> list[Kernel]:
    """Every kernel a backend builds for `program`: the segments' kernels, then their backward kernels."""
    forward = [segment.kernel for segment in program.segments if segment.kernel is not None]
    return forward + [derived for kernel in forward for derived in backward_kernels(kernel)]
