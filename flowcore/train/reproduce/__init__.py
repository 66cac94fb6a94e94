"""``flowcore reproduce TARGET``: one of the paper's tables, retrained with a budget (docs/math.md §5).

Targets (each a :class:`~flowcore.train.reproduce.runner.Target` record in a module of its own):

* ``checkerboard`` (checkerboard.py): the checkerboard KL of LSD, ESD, PSD-U and PSD-M;
* ``digits`` (digits.py): the FD-digits table of LSD, PSD-M, PSD-U and FM on the digits UNet.

    report = reproduce("digits", "small", out="runs/reproduce-digits-small")

A new target is one module defining a Target plus one entry of :data:`TARGETS`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .checkerboard import CHECKERBOARD
from .digits import DIGITS
from .runner import Target, run

TARGETS: dict[str, Target] = {target.name: target for target in (CHECKERBOARD, DIGITS)}


def reproduce(target: str | Target = "checkerboard", budget: str = "small", out: str | Path | None = None,
              objectives: Sequence[str] | None = None, overrides: Sequence[str] = (),
              echo: Callable[[str], None] = print) -> dict:
    """Train `objectives` (default: the target's) with `budget` in ``out/<objective>/`` (default
    ``runs/reproduce-<target>-<budget>``) and write the target's report there; returns its contents.
    An interrupted call continues where it stopped when called again (runner.py)."""
    if isinstance(target, str):
        if target not in TARGETS:
            raise ValueError(f"unknown reproduce target {target!r}; choose one of {', '.join(TARGETS)}")
        target = TARGETS[target]
    out = Path(out if out is not None else f"runs/reproduce-{target.name}-{budget}")
    return run(target, budget, out, tuple(objectives or target.objectives), overrides, echo)


__all__ = ["TARGETS", "Target", "reproduce"]
