"""MeanFlow — consistency training along the interpolant (docs/math.md §2, special cases):
``v̂_{s,t}(I_s) − sg(İ_s + (t − s)·d/ds v̂_{s,t}(I_s))``.

``Ds(V(s, t, I(s)))`` is the TOTAL derivative, ∂_s v̂ + ∇v̂·İ_s: the Eulerian condition with the
teacher velocity replaced by the conditional velocity İ_s.
"""
from __future__ import annotations

from flowcore.lang import Ds, I, Objective, V, s, sg, sqnorm, t

from ._parts import ETA, assemble, upper_triangle

LOSS = sqnorm(V(s, t, I(s)) - sg(Ds(I(s)) + (t - s) * Ds(V(s, t, I(s)))))


def build(eta: float = ETA, **defaults) -> Objective:
    return assemble("meanflow", "MeanFlow: consistency training with the interpolant's velocity",
                    "docs/math.md §2, MeanFlow", LOSS, upper_triangle(), eta, **defaults)
