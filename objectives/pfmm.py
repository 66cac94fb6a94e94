"""PFMM — progressive flow map matching (docs/math.md §2, Flow map matching):
``X̂_{s,t}(I_s) − sg(X̌_{u,t}(X̌_{s,u}(I_s)))``, u = s + γ(t − s), γ ~ U[0, 1].

The teacher map X̌ starts as one Euler step of the teacher velocity, ``x + (b − a)·b̂_a(x)``
(``teacher="euler"``); later in training the model becomes its own teacher (``teacher="self"``,
X̌ = X̂ under sg).
"""
from __future__ import annotations

from flowcore.lang import I, Objective, TeacherMap, Var, X, between, s, sg, sqnorm, t, u

from ._parts import ETA, assemble, gamma, teacher_diagonal_term, upper_triangle

x = Var("x")
LOSSES = {
    "euler": sqnorm(X(s, t, x) - sg(TeacherMap(u, t, TeacherMap(s, u, x)))).bind(x=I(s)),
    "self": sqnorm(X(s, t, x) - sg(X(u, t, X(s, u, x)))).bind(x=I(s)),
}


def build(eta: float = ETA, teacher: str = "euler", **defaults) -> Objective:
    if teacher not in LOSSES:
        raise ValueError(f"pfmm: unknown teacher {teacher!r}; choose one of {', '.join(LOSSES)}")
    return assemble("pfmm", f"progressive flow map matching (teacher map: {teacher})", "docs/math.md §2, PFMM",
                    LOSSES[teacher], upper_triangle() & between(u, s, t, gamma), eta,
                    diagonal=teacher_diagonal_term, **defaults)
