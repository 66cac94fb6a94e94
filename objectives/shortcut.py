"""Shortcut models — PSD-M on a dyadic grid (docs/math.md §2, special cases):
step d = 2^-k, s on the grid of 2d, t = s + 2d, u = s + d: ``v̂_{s,t} − sg(½v̂_{s,u} + ½v̂_{u,t}(X̂_{s,u}))``.
"""
from __future__ import annotations

from flowcore.lang import Dyadic, Objective, between, s, t, u

from ._parts import ETA, assemble, gamma, psd_residual


def build(eta: float = ETA, levels: int = 7, **defaults) -> Objective:
    return assemble("shortcut", "shortcut model: midpoint self-consistency on a dyadic grid",
                    "docs/math.md §2, shortcut models", psd_residual(),
                    Dyadic(s, t, levels) & between(u, s, t, gamma, fixed=0.5), eta, **defaults)
