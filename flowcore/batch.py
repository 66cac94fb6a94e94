"""Batch plumbing shared by the reference interpreter and compiled objectives.

How a batch is completed (x0, z draws), split among terms, given its times and reduced to a loss
(MATH.md §3) must be identical for both, or a comparison between them would test the plumbing.
"""
from __future__ import annotations

import torch

from dataclasses import dataclass

from .lang.interpolants import Interpolant
from .lang.objective import Objective, Term


@dataclass(frozen=True)
class TermResult:
    """One term's per-sample losses and the times they were evaluated at."""

    per_sample: torch.Tensor
    times: dict

    @property
    def count(self) -> int:
        return self.per_sample.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.per_sample.mean() if self.count else self.per_sample.sum()


@dataclass(frozen=True)
class Evaluation:
    """The reduced loss and the per-term diagnostics."""

    loss: torch.Tensor
    terms: dict[str, TermResult]


def _normal_like(x1: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x1.device
    return torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=device).to(x1.device)


def complete_batch(objective: Objective, interpolant: Interpolant, x1: torch.Tensor, x0: torch.Tensor | None,
                   z: torch.Tensor | None, generator: torch.Generator | None):
    """(x0, z) for a batch of data x1: σ·N(0, I) noise unless given, and z for a stochastic interpolant."""
    if not isinstance(x1, torch.Tensor) or x1.ndim < 2:
        shape = tuple(x1.shape) if isinstance(x1, torch.Tensor) else type(x1).__name__
        raise ValueError(f"x1 must be a batch tensor shaped (B, *dims), got {shape}")
    if x0 is None:
        x0 = objective.sigma * _normal_like(x1, generator)
    if x0.shape != x1.shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)} but x1 has {tuple(x1.shape)}")
    if interpolant.stochastic and z is None:
        z = _normal_like(x1, generator)
    if z is not None and z.shape != x1.shape:
        raise ValueError(f"z has shape {tuple(z.shape)} but x1 has {tuple(x1.shape)}")
    return x0, z


def check_models(objective: Objective, teacher, weight_net) -> None:
    if objective.needs_teacher and teacher is None:
        raise ValueError(f"objective {objective.name!r} distils a teacher: pass teacher=<callable (t, x) -> velocity>")
    if objective.needs_weight_net and weight_net is None:
        raise ValueError(f"objective {objective.name!r} has a learned weight: pass weight_net=<module (s, t) -> (B,)>")


def term_slices(objective: Objective, batch: int) -> list[tuple[Term, slice]]:
    """Each term's consecutive share of the batch, in declaration order."""
    slices, start = [], 0
    for term, count in zip(objective.terms, objective.split(batch)):
        slices.append((term, slice(start, start + count)))
        start += count
    return slices


def _name(symbol) -> str:
    """A time's name: a string as is, a symbol's ``.name`` (``str()`` would run sympy's printer, slow
    enough to show in a training step; so it is not getattr's default, which is evaluated first)."""
    if isinstance(symbol, str):
        return symbol
    name = getattr(symbol, "name", None)
    return name if isinstance(name, str) else str(symbol)


def term_times(term: Term, given: dict | None, count: int, generator: torch.Generator | None,
               like: torch.Tensor) -> dict:
    """The term's per-sample times: `given[term.name]` (keyed by symbol or name) or sampled."""
    if given is None or term.name not in given:
        return term.sampler.sample(count, generator, like.dtype, like.device)
    by_name = {_name(sym): sym for sym in term.sampler.produces}
    times = {}
    for key, value in given[term.name].items():
        sym = by_name.get(_name(key))
        if sym is None:
            raise ValueError(f"term {term.name!r}: got times for `{key}`, which its sampler does not produce "
                             f"({', '.join(by_name)})")
        value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
        if value.shape != (count,):
            raise ValueError(f"term {term.name!r}: times for `{key}` have shape {tuple(value.shape)}, "
                             f"expected ({count},)")
        times[sym] = value
    missing = sorted(set(by_name) - {_name(key) for key in given[term.name]})
    if missing:
        raise ValueError(f"term {term.name!r}: no times given for {', '.join(missing)}")
    return times


def reduce_loss(per_term: list[torch.Tensor], batch: int, reduction: str) -> torch.Tensor:
    """``batch``: Σ ℓ / B (the official code); ``term_mean``: Σ_terms mean ℓ (Algorithm 1)."""
    if reduction == "batch":
        return sum(losses.sum() for losses in per_term) / batch
    return sum(losses.mean() for losses in per_term if losses.numel())
