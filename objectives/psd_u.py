"""PSD-U — progressive self-distillation, γ ~ U[0, 1] (docs/math.md §2):
``v̂_{s,t}(I_s) − sg(γ·v̂_{s,u}(I_s) + (1 − γ)·v̂_{u,t}(X̂_{s,u}(I_s)))``, ``u = s + γ(t − s)``.

The semigroup X_{u,t} ∘ X_{s,u} = X_{s,t} divided by (t − s); three forward passes, no derivatives.
"""
from __future__ import annotations

from flowcore.lang import Objective, between, s, t, u

from ._parts import ETA, assemble, gamma, psd_residual, upper_triangle


def build(eta: float = ETA, **defaults) -> Objective:
    return assemble("psd_u", "progressive self-distillation, uniform intermediate time", "docs/math.md §2, PSD",
                    psd_residual(), upper_triangle() & between(u, s, t, gamma), eta, **defaults)
