"""ESD — Eulerian self-distillation (docs/math.md §2): ``∂_s X̂_{s,t}(I_s) + sg(∇X̂_{s,t}(I_s) · v̂_{s,s}(I_s))``.

The Eulerian condition ∂_s X_{s,t} + ∇X_{s,t}·v_{s,s} = 0. ``∂_s`` is the PARTIAL derivative at
fixed x (the derivative is taken before x is bound to I_s). Stop-gradient placements:

- ``teacher`` (default, the paper's): sg on the whole transport term, gradient only through ∂_s X̂;
- ``none``: no stop-gradient at all;
- ``convex`` (r): sg on the velocity v̂_{s,s} only, so the residual is linear in X̂ and the loss
  convex in it. Both alternatives diverged on every image set tried (docs/math.md §2).
"""
from __future__ import annotations

from flowcore.lang import Ds, Dx, I, Objective, V, Var, X, s, sg, sqnorm, t

from ._parts import ETA, assemble, upper_triangle

x = Var("x")
_transport = {
    "teacher": sg(Dx(X(s, t, x), x, along=V(s, s, x))),
    "none": Dx(X(s, t, x), x, along=V(s, s, x)),
    "convex": Dx(X(s, t, x), x, along=sg(V(s, s, x))),
}
LOSSES = {name: sqnorm(Ds(X(s, t, x)) + transport).bind(x=I(s)) for name, transport in _transport.items()}


def build(eta: float = ETA, stopgrad: str = "teacher", **defaults) -> Objective:
    if stopgrad not in LOSSES:
        raise ValueError(f"esd: unknown stopgrad {stopgrad!r}; choose one of {', '.join(LOSSES)}")
    name = "esd" if stopgrad == "teacher" else f"esd_{stopgrad}"
    return assemble(name, f"Eulerian self-distillation (stop-gradient: {stopgrad})", "docs/math.md §2, ESD",
                    LOSSES[stopgrad], upper_triangle(), eta, **defaults)
