"""LSD — Lagrangian self-distillation (docs/math.md §2): ``∂_t X̂_{s,t}(I_s) − sg(v̂_{t,t}(sg(X̂_{s,t}(I_s))))``.

The Lagrangian condition ∂_t X_{s,t} = v_{t,t}(X_{s,t}) with the diagonal as its own teacher; the
gradient flows only through ∂_t X̂, i.e. it backpropagates THROUGH a JVP in t. The paper's best.
"""
from __future__ import annotations

from flowcore.lang import Dt, I, Objective, V, Var, X, s, sg, sqnorm, t

from ._parts import ETA, assemble, upper_triangle

x = Var("x")
LOSS = sqnorm(Dt(X(s, t, x)) - sg(V(t, t, sg(X(s, t, x))))).bind(x=I(s))


def build(eta: float = ETA, **defaults) -> Objective:
    return assemble("lsd", "Lagrangian self-distillation", "docs/math.md §2, LSD", LOSS, upper_triangle(), eta,
                    **defaults)
