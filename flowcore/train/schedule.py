"""Learning-rate schedules: the learning rate at optimizer step k is a pure function of k.

* ``paper``: ``lr0 / sqrt(max(k / k0, 1))`` — constant for k0 steps, then inverse square root
  (docs/math.md §3: lr0 = 1e-3 for 2-D, k0 = 35000, no warm-up).
* ``constant``: ``lr0``.
* ``cosine``: from ``lr0`` at k = 0 to ``min_lr`` at the last step.

Because nothing else is kept, the "scheduler state" of a checkpoint is the step count.
"""
from __future__ import annotations

import math

from .config import OptimConfig


def learning_rate(optim: OptimConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based) of `total_steps`."""
    if optim.schedule == "paper":
        return optim.lr / math.sqrt(max(step / optim.decay_start, 1.0))
    if optim.schedule == "constant":
        return optim.lr
    if optim.schedule == "cosine":
        progress = min(step / max(total_steps - 1, 1), 1.0)
        return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {optim.schedule!r}")
