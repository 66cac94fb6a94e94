"""Terms and objectives: what a declaration finally is.

A `Term` is a per-sample scalar loss, the sampler of its times and its share of the batch. An
`Objective` is named terms plus defaults (interpolant, σ, batch reduction). Both check the whole
declaration when built, so a malformed objective never reaches the interpreter or the compiler.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import cached_property

from . import analysis, ranges
from . import nodes as n
from .errors import DeclarationError
from .interpolants import Interpolant, linear
from .printing import pretty
from .samplers import Joint, TimeSampler

REDUCTIONS = {
    "batch": "Σ over every sample of ℓ / batch size (the official code; shares weight the terms)",
    "term_mean": "Σ over terms of the mean of ℓ over the term's samples (the paper's Algorithm 1)",
}


@dataclass(frozen=True, eq=False)
class Term:
    """One loss term: ``loss`` (a per-sample scalar), its time `sampler` and its batch `share`.

    `dropout`: whether the network's calls in this term use the network's dropout (a network with
    none ignores it). None follows the paper (docs/math.md §4): the terms that call the network only
    on the diagonal, i.e. flow matching, drop out; the self-distillation terms do not.
    """

    name: str
    loss: n.Expr
    sampler: TimeSampler
    share: float
    dropout: bool | None = None

    def __post_init__(self):
        _require_name(self.name, "a term")
        if not isinstance(self.loss, n.Expr):
            raise DeclarationError(self.loss, f"term {self.name!r}: the loss must be an expression of the language")
        if self.loss.kind != n.SCALAR:
            raise DeclarationError(self.loss, f"term {self.name!r}: a term's loss must be a per-sample scalar "
                                              f"(e.g. sqnorm(...) or dot(...)), this is a {self.loss.kind}")
        unbound = analysis.free_vars(self.loss)
        if unbound:
            var = sorted(unbound)[0]
            raise DeclarationError(self.loss, f"term {self.name!r}: free variable `{var}` is never bound; "
                                              f"bind it with .bind({var}=...)")
        if not isinstance(self.sampler, TimeSampler):
            raise DeclarationError(self.sampler, f"term {self.name!r}: the sampler must be a TimeSampler")
        if self.sampler.requires:
            part = self.sampler.unmet()[0] if isinstance(self.sampler, Joint) else self.sampler
            needs = ", ".join(sorted(map(str, self.sampler.requires)))
            raise DeclarationError(part, f"term {self.name!r}: this sampler needs {needs}, which no sampler "
                                         "before it produces (combine them in order with &)")
        missing = analysis.symbols_used(self.loss) - set(self.sampler.produces)
        if missing:
            symbol = sorted(missing, key=str)[0]
            raise DeclarationError(analysis.first_node_using(self.loss, symbol),
                                   f"term {self.name!r}: uses `{symbol}`, which its sampler ({self.sampler}) does "
                                   "not produce")
        if isinstance(self.share, bool) or not isinstance(self.share, numbers.Real):
            raise DeclarationError(self.share, f"term {self.name!r}: the share must be a number in (0, 1] (its "
                                               f"fraction of the batch), got {type(self.share).__name__} "
                                               f"{self.share!r}")
        if not 0 < self.share <= 1:
            raise DeclarationError(self.share, f"term {self.name!r}: a share must lie in (0, 1]")
        # times in [0, 1] and weights ≥ 0 on the sampled times; the weights sympy cannot sign wait
        # for the first evaluation (check_weights)
        object.__setattr__(self, "_unsigned_weights", ranges.check_term(self.name, self.loss, self.sampler))
        if self.dropout is None:
            object.__setattr__(self, "dropout", analysis.on_diagonal(self.loss))
        elif not isinstance(self.dropout, bool):
            raise DeclarationError(self.dropout, f"term {self.name!r}: dropout is True, False or None (the "
                                                 f"paper's default), got {self.dropout!r}")

    @property
    def derivatives(self) -> tuple[str, ...]:
        return analysis.derivatives(self.loss)

    def check_weights(self, times: dict) -> None:
        """At an evaluation, with the term's drawn times: raise DeclarationError if a weight sympy
        could not sign when the term was built is negative at them. Once passed, later calls are
        free (the reference and compiled objectives call it on every evaluation)."""
        if self._unsigned_weights and ranges.check_weights_at(self.name, self._unsigned_weights, times):
            object.__setattr__(self, "_unsigned_weights", ())

    def __str__(self) -> str:
        return pretty(self)


def _require_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise DeclarationError(repr(name), f"{what} needs a name (a non-empty string), got {name!r}")


@dataclass(frozen=True, eq=False)
class Objective:
    """Named terms and the defaults to evaluate them with (docs/math.md §2–3)."""

    name: str
    terms: tuple[Term, ...]
    description: str = ""
    interpolant: Interpolant = field(default_factory=linear)
    sigma: float = 1.0
    reduction: str = "batch"
    equation: str = ""

    def __post_init__(self):
        _require_name(self.name, "an objective")
        if isinstance(self.terms, Term) or not isinstance(self.terms, (list, tuple)):
            got = "one Term" if isinstance(self.terms, Term) else type(self.terms).__name__
            raise DeclarationError(self.name, f"objective {self.name!r}: terms must be a list of Term, got {got}; "
                                              "write terms=[Term(...), ...]")
        object.__setattr__(self, "terms", tuple(self.terms))
        for index, term in enumerate(self.terms):
            if not isinstance(term, Term):
                raise DeclarationError(term, f"objective {self.name!r}: terms must be Term(name, loss, sampler, "
                                             f"share) objects, item {index} is a {type(term).__name__}")
        if not self.terms:
            raise DeclarationError(self.name, "an objective needs at least one term")
        names = [term.name for term in self.terms]
        duplicate = next((name for name in names if names.count(name) > 1), None)
        if duplicate:
            raise DeclarationError(duplicate, f"objective {self.name!r}: two terms are named {duplicate!r}")
        total = sum(term.share for term in self.terms)
        if abs(total - 1) > 1e-9:
            raise DeclarationError(self.name, f"objective {self.name!r}: term shares sum to {total:g}, not 1")
        if not isinstance(self.reduction, str) or self.reduction not in REDUCTIONS:
            raise DeclarationError(self.reduction, f"unknown reduction; choose one of {', '.join(REDUCTIONS)}")
        if not isinstance(self.interpolant, Interpolant):
            raise DeclarationError(self.interpolant, "the interpolant must be a flowcore Interpolant")
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, numbers.Real) or not 0 < self.sigma < math.inf:
            raise DeclarationError(self.sigma, f"objective {self.name!r}: σ must be positive, a number (the noise's "
                                               f"scale), got {type(self.sigma).__name__} {self.sigma!r}")
        z = n.Source("z")
        for term in self.terms:
            if not self.interpolant.stochastic and z in analysis.walk(term.loss):
                raise DeclarationError(term.loss, f"objective {self.name!r}: term {term.name!r} uses z, but the "
                                                  f"interpolant {self.interpolant.name!r} has no γ·z part")

    def split(self, batch: int) -> tuple[int, ...]:
        """Samples per term for a batch of `batch`: shares rounded by largest remainder."""
        exact = [term.share * batch for term in self.terms]
        counts = [int(x) for x in exact]
        order = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
        for i in order[: batch - sum(counts)]:
            counts[i] += 1
        return tuple(counts)

    @property
    def derivatives(self) -> tuple[str, ...]:
        seen: list[str] = []
        for term in self.terms:
            seen.extend(d for d in term.derivatives if d not in seen)
        return tuple(seen)

    @cached_property  # walked on every call of a compiled objective; declarations are immutable
    def needs_teacher(self) -> bool:
        return any(analysis.uses(term.loss, n.TeacherCall) for term in self.terms)

    @cached_property
    def needs_weight_net(self) -> bool:
        return any(analysis.uses(term.loss, n.LogVar) for term in self.terms)

    def with_options(self, **changes) -> "Objective":
        """A copy with other defaults, e.g. ``obj.with_options(interpolant=trig(), sigma=0.5)``."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        unknown = sorted(set(changes) - set(values))
        if unknown:
            raise DeclarationError(unknown, f"unknown objective option(s); the options are {', '.join(values)}")
        values.update(changes)
        return Objective(**values)

    def __str__(self) -> str:
        """What ``flowcore show`` prints (`pretty`)."""
        return pretty(self)
