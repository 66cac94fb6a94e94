"""LMD — Lagrangian map distillation (docs/math.md §2, Flow map matching):
``∂_t X̂_{s,t}(I_s) − b̂_t(sg(X̂_{s,t}(I_s)))`` with a frozen teacher velocity b̂.

The diagonal is distilled from the teacher too: ``|v̂_{t,t}(I_t) − b̂_t(I_t)|²``.
"""
from __future__ import annotations

from flowcore.lang import Dt, I, Objective, Teacher, Var, X, s, sg, sqnorm, t

from ._parts import ETA, assemble, teacher_diagonal_term, upper_triangle

x = Var("x")
LOSS = sqnorm(Dt(X(s, t, x)) - Teacher(t, sg(X(s, t, x)))).bind(x=I(s))


def build(eta: float = ETA, **defaults) -> Objective:
    return assemble("lmd", "Lagrangian map distillation of a teacher velocity", "docs/math.md §2, LMD", LOSS,
                    upper_triangle(), eta, diagonal=teacher_diagonal_term, **defaults)
