"""FM — flow matching on the diagonal only: ``|v̂_{t,t}(I_t) − İ_t|²`` (docs/math.md §1, L_b).

It learns the velocity b_t = v_{t,t}; off the diagonal the map is untrained, so it needs many
sampling steps. It is the building block every other objective adds a term to.
"""
from __future__ import annotations

from flowcore.lang import Objective

from ._parts import flow_matching_term


def build(**defaults) -> Objective:
    return Objective("fm", (flow_matching_term(1.0),), description="flow matching on the diagonal (velocity only)",
                     equation="docs/math.md §1, L_b", **defaults)
