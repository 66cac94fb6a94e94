"""Continuous-time consistency (docs/math.md §2, special cases; Align Your Flow):
``v̂_{s,t}(x) − sg(b + (t − s)(∂_s v̂_{s,t}(x) + ∇v̂_{s,t}(x)·b))`` at x = I_s.

It is the Eulerian condition solved for v: with X = x + (t − s)v, ∂_s X + ∇X·b = 0 reads
v = b + (t − s)(∂_s v + ∇v·b). ``mode="distillation"`` takes b = b̂_s(x), a frozen teacher;
``mode="training"`` takes b = İ_s, the conditional velocity (MeanFlow, written with the partial
derivative and the spatial JVP separately instead of one total derivative).
"""
from __future__ import annotations

from flowcore.lang import Ds, Dx, I, Objective, Teacher, V, Var, s, sg, sqnorm, t

from ._parts import ETA, assemble, flow_matching_term, teacher_diagonal_term, upper_triangle

x = Var("x")


def _loss(b):
    return sqnorm(V(s, t, x) - sg(b + (t - s) * (Ds(V(s, t, x)) + Dx(V(s, t, x), x, along=b)))).bind(x=I(s))


LOSSES = {"distillation": _loss(Teacher(s, x)), "training": _loss(Ds(I(s)))}


def build(eta: float = ETA, mode: str = "distillation", **defaults) -> Objective:
    if mode not in LOSSES:
        raise ValueError(f"consistency: unknown mode {mode!r}; choose one of {', '.join(LOSSES)}")
    diagonal = teacher_diagonal_term if mode == "distillation" else flow_matching_term
    return assemble("consistency", f"continuous-time consistency {mode}", "docs/math.md §2, consistency", LOSSES[mode],
                    upper_triangle(), eta, diagonal=diagonal, **defaults)
