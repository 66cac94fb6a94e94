"""GEMM FLOPs of one training step, counted analytically from the net's shape and the objective's plan.

The unit of work is one *stream* through the network: one GEMM per layer over the stream's rows
(``2·rows·in·out`` FLOPs for a layer ``in → out``). The layers are the ``(in, out)`` list that the
network's kind registers with it (``flowcore.nn.registry.gemm_layers``; the MLP: its linear layers;
a layer ``(in, out, r)`` has r rows per sample: the UNet's convolutions, one per pixel).
A training step is, per planned call batch
(`flowcore.compiler.plan`: calls of one level with the same signature, run on their concatenated
rows ``R``):

forward streams
    the primal plus one stream per tangent the call's jets need: the closure under subsets of its
    output patterns. A primal alone is 1 stream; ``(v, ∂v·d)`` (a JVP) is 2 (the tangent
    ``ż = W·ḣ`` is a GEMM with the same W); a second-order jet ``∂²v[d1, d2]`` is 4
    (h, ḣ₁, ḣ₂, ḧ₁₂).
    Each stream costs one forward GEMM per layer: ``fwd`` of shape ``(k_f·R) × in → out`` (the
    streams share W, so a fused implementation stacks them into one GEMM; the bound assumes it).
backward streams
    only for calls that carry gradients (``call.grad``), and only through the outputs that are live
    (reachable from the loss outside ``sg``): the closure under subsets of the live patterns — a
    live tangent needs its own backward stream *and* the primal's (the tangent depends on the
    primal activations through ``σ'(z)``), a live primal with an sg'd tangent (MeanFlow) needs only
    the primal's. Each backward stream costs per layer
      - ``dgrad`` ``g·W`` (input gradient, ``(k_b·R) × out → in``), for every layer but the first
        — the first layer's input (s, t, x) carries no gradient unless the call's input is itself
        live (it never is in the built-ins: inputs are data; that GEMM is ≤ (dim+2)/width of a
        hidden one anyway);
      - ``wgrad`` ``gᵀ·h`` (weight gradient, ``out × (k_b·R) → in``), for the trained net only (a
        frozen teacher has no weight gradients, and no backward at all unless its input is live,
        as in LMD's ``b̂(X̂_{s,t})``).
    So backward ≈ 2 × forward per stream, as in docs/math.md §6 ("its backward ≈ 2 backwards").

Not counted: biases, activations, the loss kernels, the optimizer (all elementwise), the
log-variance head (no MLP). The count is the *minimal* GEMM work — the reference interpreter does
more (it recomputes shared values, e.g. LSD's ``X̂_{s,t}`` twice), which is part of what the
benchmark shows.

Sanity check against docs/math.md §6: FM is 1 forward + 2 backward = 3 units per row; LSD's
off-diagonal row is a JVP forward (2) + the sg'd teacher forward (1) + backward through primal and
tangent (4) = 7 units; with η = 0.75 LSD/FM = (0.75·3 + 0.25·7)/3 = 4/3 ≈ 1.33 (exactly so up to
the first layer's missing dgrad). ESD's off-diagonal row is one call with both tangents (3
forward streams: primal, ∂_s, the sg'd spatial JVP) + backward through primal and ∂_s (4) + 1
(V(s, s)) = 8 units; PSD-M 3 + 1 + 1 = 5; MeanFlow 2 + 2 = 4.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from ..compiler.driver import compile_program
from ..compiler.ir import LOGVAR, NET
from ..compiler.plan import Call, Plan, _live_jets
from ..lang.objective import Objective


@dataclass(frozen=True)
class Gemm:
    """One GEMM ``(m × k) @ (k × n)``: `kind` says which operand layout it has (see `measure.gemm_operands`)."""

    kind: str  # "fwd": x @ Wᵀ; "dgrad": g @ W; "wgrad": gᵀ @ h
    m: int
    k: int
    n: int
    call: str = ""  # the planned call batch it belongs to (names joined by "+")
    layer: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n

    @property
    def shape(self) -> tuple[str, int, int, int]:
        return (self.kind, self.m, self.k, self.n)


def _closure(patterns: Iterable[tuple]) -> set[tuple]:
    """Every sub-pattern (sub-multiset of directions) of the given jet patterns, the primal () included."""
    found = {()}
    for pattern in patterns:
        for size in range(1, len(pattern) + 1):
            found.update(tuple(sorted(c)) for c in itertools.combinations(pattern, size))
    return found


def call_streams(call: Call, live: set) -> tuple[int, int, bool]:
    """(forward streams, backward streams, whether the first layer needs its input gradient)."""
    forward = len(_closure(call.outputs))
    live_patterns = [pattern for pattern, jet in zip(call.outputs, call.jets) if jet in live] if call.grad else []
    backward = len(_closure(live_patterns)) if live_patterns else 0
    input_grad = backward > 0 and any(_live_jets(expr) for expr in call.inputs())
    if call.fn != NET and not input_grad:
        backward = 0  # a frozen model whose input carries no gradient needs no backward at all
    return forward, backward, input_grad


def plan_gemms(plan: Plan, counts: list[int], layers: list[tuple[int, int]],
               teacher_layers: list[tuple[int, int]] | None = None) -> list[Gemm]:
    """The GEMMs of one training step of `plan` with `counts[i]` samples in term i (see the module doc)."""
    live = [_live_jets(term.loss) for term in plan.terms]
    gemms: list[Gemm] = []
    for batch in plan.batches:
        calls = [call for call in batch if counts[call.term] > 0]
        if not calls or calls[0].fn == LOGVAR:
            continue
        rows = sum(counts[call.term] for call in calls)
        streams = [call_streams(call, live[call.term]) for call in calls]
        forward = max(f for f, _, _ in streams)  # one signature per batch: equal across its calls
        backward = max(b for _, b, _ in streams)
        input_grad = any(g for _, _, g in streams)
        trained = calls[0].fn == NET
        name = "+".join(call.name for call in calls)
        shapes = layers if trained else (teacher_layers or layers)
        for index, (fan_in, fan_out, *per_sample) in enumerate(shapes):
            m = rows * (per_sample[0] if per_sample else 1)   # a convolution: one GEMM row per pixel
            gemms.append(Gemm("fwd", forward * m, fan_in, fan_out, name, index))
            if backward:
                if index > 0 or input_grad:
                    gemms.append(Gemm("dgrad", backward * m, fan_out, fan_in, name, index))
                if trained:
                    gemms.append(Gemm("wgrad", fan_out, backward * m, fan_in, name, index))
    return gemms


def step_gemms(objective: Objective, batch: int, layers: list[tuple[int, int]],
               teacher_layers: list[tuple[int, int]] | None = None) -> list[Gemm]:
    """The GEMMs of one training step of `objective` on a batch of `batch` samples."""
    plan = compile_program(objective).program.plan
    return plan_gemms(plan, list(objective.split(batch)), layers, teacher_layers)


def count_flops(objective: Objective, batch: int, layers: list[tuple[int, int]],
                teacher_layers: list[tuple[int, int]] | None = None) -> int:
    """GEMM FLOPs of one training step (forward, JVP tangents, backward; see the module doc)."""
    return sum(g.flops for g in step_gemms(objective, batch, layers, teacher_layers))


def stream_units(objective: Objective, batch: int) -> dict[str, float]:
    """Per-term average stream units per sample (1 unit = a forward through every layer), for reports.

    Counts backward as 2 units per stream (dgrad + wgrad, the first layer's dgrad included): the
    docs/math.md §6 cost model, independent of the net's shape.
    """
    plan = compile_program(objective).program.plan
    counts = list(objective.split(batch))
    live = [_live_jets(term.loss) for term in plan.terms]
    units = {term.name: 0.0 for term in objective.terms}
    for term_plan, term, term_live in zip(plan.terms, objective.terms, live):
        for call in term_plan.calls:
            if call.fn == LOGVAR:
                continue
            forward, backward, _ = call_streams(call, term_live)
            units[term.name] += forward + (2 if call.fn == NET else 1) * backward
    total = sum(units[term.name] * count for term, count in zip(objective.terms, counts)) / max(batch, 1)
    return {**units, "mean": total}
