"""Exponential moving averages of the parameters, several decays at once (docs/math.md §3: 0.999 and
0.9999). Samples and evaluations use an EMA; the self-distillation teacher is the CURRENT weights.

With ``warmup`` the decay of update n (0-based) is ``min(decay, (1 + n) / (10 + n))``, so the
average of a short run is not dominated by the initial weights; without it, the plain EMA.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, module: nn.Module, decays: list[float], warmup: bool = True):
        self.decays = [float(d) for d in decays]
        self.warmup = warmup
        self.updates = 0
        params = [p.detach() for p in module.parameters()]
        self.shadows = {d: [p.clone() for p in params] for d in self.decays}

    def decay_at(self, decay: float) -> float:
        return min(decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else decay

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        params = [p.detach() for p in module.parameters()]
        for decay, shadow in self.shadows.items():
            torch._foreach_lerp_(shadow, params, 1.0 - self.decay_at(decay))
        self.updates += 1

    def parameters(self, decay: float) -> list[torch.Tensor]:
        if decay not in self.shadows:
            raise KeyError(f"no EMA with decay {decay}; tracked: {', '.join(map(str, self.decays))}")
        return self.shadows[decay]

    @torch.no_grad()
    def copy_of(self, module: nn.Module, decay: float) -> nn.Module:
        """A frozen copy of `module` holding the EMA weights of `decay` (0: the module's own weights)."""
        averaged = copy.deepcopy(module).requires_grad_(False).eval()
        if decay:
            for target, source in zip(averaged.parameters(), self.parameters(decay)):
                target.copy_(source)
        return averaged

    def state_dict(self) -> dict:
        return {"decays": list(self.decays), "updates": self.updates, "warmup": self.warmup,
                "shadows": {repr(d): list(s) for d, s in self.shadows.items()}}

    def load_state_dict(self, state: dict) -> None:
        decays = [float(d) for d in state["decays"]]
        if sorted(decays) != sorted(self.decays):
            raise ValueError(f"the checkpoint tracks EMA decays {decays}, this run {self.decays}")
        self.updates = int(state["updates"])
        for d in self.decays:
            saved = state["shadows"][repr(d)]
            if len(saved) != len(self.shadows[d]):
                raise ValueError(f"EMA {d}: the checkpoint holds {len(saved)} tensors, the network has "
                                 f"{len(self.shadows[d])}")
            for target, source in zip(self.shadows[d], saved):
                target.copy_(source)
