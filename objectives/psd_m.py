"""PSD-M — progressive self-distillation at the midpoint, γ = ½ (docs/math.md §2; the shortcut rule):
``v̂_{s,t}(I_s) − sg(½·v̂_{s,u}(I_s) + ½·v̂_{u,t}(X̂_{s,u}(I_s)))``, ``u = (s + t)/2``.
"""
from __future__ import annotations

from flowcore.lang import Objective, between, s, t, u

from ._parts import ETA, assemble, gamma, psd_residual, upper_triangle


def build(eta: float = ETA, **defaults) -> Objective:
    return assemble("psd_m", "progressive self-distillation, midpoint", "docs/math.md §2, PSD",
                    psd_residual(), upper_triangle() & between(u, s, t, gamma, fixed=0.5), eta, **defaults)
