"""How flowcore words the counts it prints ("1 step", "4 steps"): one helper for every layer that talks
to the user (the trainer, the checks, the benchmark, the command), so it sits below all of them and
imports nothing."""
from __future__ import annotations

__all__ = ["counted"]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``counted(1, "step")`` is "1 step", ``counted(4, "step")`` "4 steps"; `plural` for irregular nouns."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
