"""Per-term evaluation helpers shared by the reference interpreter and compiled objectives.

How a batch is completed (x0, z draws), split among terms, given its times and reduced to a loss
(docs/math.md §3) must be identical for both, or a comparison between them would test the plumbing.
:func:`draw_noise_and_times` is the one place a batch's random inputs are drawn: the trainer's
batch stream and the benchmark's steps call it too, so every consumer sees the same stream.
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


def _draw_device(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    """Where a draw happens: on the generator's device (a generator only draws there), else beside `like`."""
    return generator.device if generator is not None else like.device


def _normal_like(x1: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=_draw_device(generator, x1)).to(x1.device)


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
    """The term's per-sample times: `given[term.name]` (keyed by symbol or name) or sampled (on the
    generator's device, returned on `like`'s)."""
    if given is None or term.name not in given:
        drawn = term.sampler.sample(count, generator, like.dtype, _draw_device(generator, like))
        return {symbol: value.to(like.device) for symbol, value in drawn.items()}
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


@dataclass(frozen=True)
class NoiseAndTimes:
    """A batch's random inputs besides the data: noise `x0`, the stochastic interpolant's `z` (None
    for a deterministic one) and each term's times, one dict per term in declaration order, keyed
    by time symbol; the term owns the rows of its :func:`term_slices` slice."""

    x0: torch.Tensor
    z: torch.Tensor | None
    times: list[dict]


def draw_noise_and_times(objective: Objective, x1: torch.Tensor, generator: torch.Generator | None, *,
                         x0: torch.Tensor | None = None, z: torch.Tensor | None = None, times: dict | None = None,
                         interpolant: Interpolant | None = None) -> NoiseAndTimes:
    """The random inputs of a batch of data `x1` (B, *dims), drawn from `generator` in one fixed
    order: ``x0 = σ·N(0, I)`` unless given, then z (stochastic interpolant) unless given, then each
    term's times in declaration order unless `times` gives them (``{term: {symbol or name: (count,)}}``,
    see :func:`term_times`). Draws happen on the generator's device and land on x1's. The reference
    interpreter and compiled objectives draw with these same steps, so one seed gives one stream
    everywhere (docs/design.md)."""
    x0, z = complete_batch(objective, interpolant or objective.interpolant, x1, x0, z, generator)
    drawn = [term_times(term, times, part.stop - part.start, generator, x1)
             for term, part in term_slices(objective, x1.shape[0])]
    return NoiseAndTimes(x0, z, drawn)


def wants_dropout(net) -> bool:
    """Whether `net` takes a ``dropout_seed`` now: it declares a ``dropout_rate`` > 0 (the network
    protocol, flowcore.nn.protocol) and, being a module, is in training mode."""
    rate = getattr(net, "dropout_rate", 0.0)
    return isinstance(rate, (int, float)) and rate > 0 and getattr(net, "training", True)


def draw_dropout_seeds(objective: Objective, net, generator: torch.Generator | None) -> dict[str, int]:
    """One seed per dropout term (``Term.dropout``; by default the diagonal, flow-matching terms,
    docs/math.md §4), keyed by term name, drawn from `generator` after the batch's other draws — or
    none, without touching the stream, when `net` has no dropout to apply. Every network call of
    such a term passes its seed, so the reference interpreter and a compiled objective apply the
    same masks, and a call's primal and JVP passes too."""
    terms = [term.name for term in objective.terms if term.dropout]
    if not terms or not wants_dropout(net):
        return {}
    device = generator.device if generator is not None else torch.device("cpu")
    drawn = torch.randint(0, 2**62, (len(terms),), generator=generator, device=device).tolist()
    return dict(zip(terms, drawn))


def dropout_seeds_for(objective: Objective, net, given: dict[str, int] | None,
                      generator: torch.Generator | None) -> dict[str, int]:
    """The seeds a batch's dropout terms use: `given` (``{term name: int}``, e.g. the trainer's
    shard seeds) restricted to dropout terms, else drawn; none for a network without dropout."""
    if given is None:
        return draw_dropout_seeds(objective, net, generator)
    if not wants_dropout(net):
        return {}
    return {term.name: int(given[term.name]) for term in objective.terms if term.dropout and term.name in given}


def shard_seeds(seeds: dict[str, int], index: int) -> dict[str, int]:
    """The seeds of shard `index` of a batch: distinct per shard (each rank and micro-batch drops out
    independently), the batch's own for shard 0."""
    return {name: (seed + 0x9E3779B97F4A7C15 * index) % 2**62 for name, seed in seeds.items()}


def reduce_loss(per_term: list[torch.Tensor], batch: int, reduction: str) -> torch.Tensor:
    """``batch``: Σ ℓ / B (the official code); ``term_mean``: Σ_terms mean ℓ (Algorithm 1)."""
    if reduction == "batch":
        return sum(losses.sum() for losses in per_term) / batch
    return sum(losses.mean() for losses in per_term if losses.numel())
