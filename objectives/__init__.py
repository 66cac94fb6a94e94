"""The built-in objectives, one declaration per file (installed as ``flowcore.objectives``).

``get(name, **options)`` builds one; ``BUILTINS`` maps every name to its builder. Names accept
dashes for underscores (``psd-u``).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from flowcore.lang import Objective

from . import consistency, emd, esd, fm, lmd, lsd, meanflow, pfmm, psd_m, psd_u, shortcut

BUILTINS: dict[str, Callable[..., Objective]] = {
    "fm": fm.build,
    "lsd": lsd.build,
    "esd": esd.build,
    "esd_none": partial(esd.build, stopgrad="none"),
    "esd_convex": partial(esd.build, stopgrad="convex"),
    "psd_u": psd_u.build,
    "psd_m": psd_m.build,
    "lmd": lmd.build,
    "emd": emd.build,
    "pfmm": pfmm.build,
    "meanflow": meanflow.build,
    "shortcut": shortcut.build,
    "consistency": consistency.build,
}


def names() -> list[str]:
    return list(BUILTINS)


def get(name: str, **options) -> Objective:
    """The built-in objective `name`, built with `options` (e.g. ``eta=0.5``, ``sigma=0.58``)."""
    key = name.strip().lower().replace("-", "_")
    if key not in BUILTINS:
        raise KeyError(f"unknown objective {name!r}; the built-ins are {', '.join(BUILTINS)}")
    return BUILTINS[key](**options)


__all__ = ["BUILTINS", "get", "names"]
