"""The optimizer of a run, by name: ``optim.name`` in a training config (docs/math.md §3: RAdam, no
weight decay, is the recipe; Adam and AdamW are there to compare against).

Every optimizer takes ``lr``, ``betas``, ``eps`` and ``weight_decay`` from the config and runs its
multi-tensor (``foreach``) update: one kernel per step over all tensors instead of a Python loop per
tensor, which torch picks by itself only on CUDA.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "radam": torch.optim.RAdam,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def make_optimizer(params: Iterable[torch.nn.Parameter], config: Any) -> torch.optim.Optimizer:
    """The optimizer `config.name` over `params`; `config` is a run's optim section
    (flowcore.train.config.OptimConfig: name, lr, betas, eps, weight_decay)."""
    if config.name not in OPTIMIZERS:
        raise ValueError(f"optim.name = {config.name!r}: unknown optimizer; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[config.name](params, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                                   weight_decay=config.weight_decay, foreach=True)
