"""EMD — Eulerian map distillation (docs/math.md §2, Flow map matching):
``∂_s X̂_{s,t}(I_s) + sg(∇X̂_{s,t}(I_s) · b̂_s(I_s))`` with a frozen teacher velocity b̂.
"""
from __future__ import annotations

from flowcore.lang import Ds, Dx, I, Objective, Teacher, Var, X, s, sg, sqnorm, t

from ._parts import ETA, assemble, teacher_diagonal_term, upper_triangle

x = Var("x")
LOSS = sqnorm(Ds(X(s, t, x)) + sg(Dx(X(s, t, x), x, along=Teacher(s, x)))).bind(x=I(s))


def build(eta: float = ETA, **defaults) -> Objective:
    return assemble("emd", "Eulerian map distillation of a teacher velocity", "docs/math.md §2, EMD", LOSS,
                    upper_triangle(), eta, diagonal=teacher_diagonal_term, **defaults)
