"""Time samplers: how each term draws its per-sample times (docs/math.md §3).

A sampler produces a value per sample for each symbol it names. Samplers combine with ``&``; a
`Derived` sampler computes a symbol from ones produced before it (``u = s + γ(t − s)``). All draws
go through an optional `torch.Generator`, on the generator's device, so a seed reproduces the same
times on any device they are then moved to.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import sympy
import torch

from .errors import DeclarationError
from .numeric import evaluate_sympy
from .printing import show
from .symbols import Param, Time, coefficient, symbols_of

Draw = dict[sympy.Symbol, torch.Tensor]


def _uniform(n: int, generator: torch.Generator | None, dtype: torch.dtype, device) -> torch.Tensor:
    where = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, dtype=dtype, device=where).to(device)


def _symbol(value: object, role: str) -> sympy.Symbol:
    if not isinstance(value, (Time, Param)):
        raise DeclarationError(value, f"{role} must be a time (flowcore.times) or a parameter (flowcore.param)")
    return value


def _number(value: object, where: str, role: str) -> float:
    """A finite real number given to a sampler (a bound, a constant), or a named error."""
    if isinstance(value, sympy.Expr) and value.is_number and value.is_real:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise DeclarationError(where, f"{role} must be a finite number, got {type(value).__name__} {value!r}")
    return value


def _in_unit_interval(symbol: sympy.Symbol, low: float, high: float, where: str) -> None:
    """Times run from 0 (noise) to 1 (data); a parameter (e.g. PSD's γ) may take any value."""
    if isinstance(symbol, Time) and not 0 <= low <= high <= 1:
        drawn = f"would be drawn from [{low:g}, {high:g}]" if low != high else f"is fixed at {low:g}"
        raise DeclarationError(where, f"the time `{symbol}` {drawn}, outside [0, 1]: times run from 0 (noise) to 1 "
                                      "(data)")


#: the points per symbol at which a declaration's times and weights are checked (`support`)
GRID_POINTS = 9


def _grid(low: float, high: float, count: int = GRID_POINTS) -> torch.Tensor:
    return torch.linspace(low, high, count, dtype=torch.float64)


def _product(known: Draw, own: Draw) -> Draw:
    """Every known point paired with every point of `own` (all tensors (N,) and (M,) → (N·M,))."""
    if not known:
        return dict(own)
    n, m = next(iter(known.values())).shape[0], next(iter(own.values())).shape[0]
    return {**{sym: value.repeat_interleave(m) for sym, value in known.items()},
            **{sym: value.repeat(n) for sym, value in own.items()}}


class TimeSampler:
    """Base: `produces` names the symbols, `draw` fills them for `n` samples."""

    produces: tuple[sympy.Symbol, ...] = ()
    requires: frozenset[sympy.Symbol] = frozenset()

    def draw(self, n: int, generator: torch.Generator | None, dtype: torch.dtype, device, known: Draw) -> Draw:
        raise NotImplementedError(f"{type(self).__name__} must implement draw()")

    def sample(self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
               device: str | torch.device = "cpu") -> Draw:
        """Draw `n` samples of every produced symbol."""
        return self.draw(n, generator, dtype, torch.device(device), {})

    def support(self, known: Draw) -> Draw | None:
        """Points of what `draw` can produce (its corners and a grid), each paired with every `known`
        point, in float64 on the CPU: where a declaration's times and weights are checked when it is
        built (`flowcore.lang.ranges`). None where the sampler cannot say (a user's subclass)."""
        return None

    def __and__(self, other: "TimeSampler") -> "Joint":
        return Joint(*_parts(self), *_parts(other))


def _parts(sampler: TimeSampler) -> tuple[TimeSampler, ...]:
    return sampler.parts if isinstance(sampler, Joint) else (sampler,)


@dataclass(frozen=True)
class Uniform(TimeSampler):
    """Each symbol independently ~ U[low, high]. ``Uniform(t)`` is the FM term's sampler."""

    symbols: tuple[sympy.Symbol, ...]
    low: float = 0.0
    high: float = 1.0

    def __init__(self, *symbols, low: float = 0.0, high: float = 1.0):
        object.__setattr__(self, "symbols", tuple(_symbol(sym, "a sampled symbol") for sym in symbols))
        where = f"Uniform({', '.join(map(str, self.symbols))}, low={low}, high={high})"
        if not self.symbols:
            raise DeclarationError(where, "Uniform draws the symbols it is given, and was given none: Uniform(t)")
        object.__setattr__(self, "low", _number(low, where, "low"))
        object.__setattr__(self, "high", _number(high, where, "high"))
        if self.low > self.high:
            raise DeclarationError(where, f"low={low} > high={high}: give the interval in order (it is not swapped)")
        twice = sorted({str(sym) for sym in self.symbols if self.symbols.count(sym) > 1})
        if twice:
            raise DeclarationError(where, f"{', '.join(twice)} given twice: each symbol is drawn once")
        for sym in self.symbols:
            _in_unit_interval(sym, self.low, self.high, where)

    @property
    def produces(self):
        return self.symbols

    def draw(self, n, generator, dtype, device, known):
        span = self.high - self.low
        return {sym: self.low + span * _uniform(n, generator, dtype, device) for sym in self.symbols}

    def __str__(self):
        return ", ".join(f"{sym} ~ U[{self.low:g}, {self.high:g}]" for sym in self.symbols)

    def support(self, known):
        count = GRID_POINTS if len(self.symbols) <= 2 else 3  # a few hundred points at most
        axes = torch.meshgrid(*(_grid(self.low, self.high, count) for _ in self.symbols), indexing="ij")
        return _product(known, {sym: axis.flatten() for sym, axis in zip(self.symbols, axes)})


@dataclass(frozen=True)
class _Pair(TimeSampler):
    """A sampler of the pair (s, t)."""

    s: sympy.Symbol
    t: sympy.Symbol

    def __post_init__(self):
        _symbol(self.s, "the first time of a pair sampler")
        _symbol(self.t, "the second time of a pair sampler")
        if self.s == self.t:
            raise DeclarationError(f"{type(self).__name__}({self.s}, {self.t})",
                                   f"`{self.s}` given twice: a pair sampler draws two different symbols")

    @property
    def produces(self):
        return (self.s, self.t)


@dataclass(frozen=True)
class Diagonal(_Pair):
    """t ~ U[0, 1] and s = t: the diagonal of the (s, t) square."""


    def draw(self, n, generator, dtype, device, known):
        t = _uniform(n, generator, dtype, device)
        return {self.s: t, self.t: t.clone()}

    def __str__(self):
        return f"{self.t} ~ U[0, 1], {self.s} = {self.t}"

    def support(self, known):
        return _product(known, {self.s: _grid(0, 1), self.t: _grid(0, 1)})


@dataclass(frozen=True)
class UpperTriangle(_Pair):
    """s = min(U, U'), t = max(U, U'): uniform on the triangle s ≤ t."""


    def draw(self, n, generator, dtype, device, known):
        a, b = _uniform(n, generator, dtype, device), _uniform(n, generator, dtype, device)
        return {self.s: torch.minimum(a, b), self.t: torch.maximum(a, b)}

    def __str__(self):
        return f"{self.s} = min(U, U'), {self.t} = max(U, U')"

    def support(self, known):
        s, t = torch.meshgrid(_grid(0, 1), _grid(0, 1), indexing="ij")
        upper = s <= t
        return _product(known, {self.s: s[upper], self.t: t[upper]})


@dataclass(frozen=True)
class Square(_Pair):
    """s, t independently ~ U[0, 1]: the full square (backward maps included)."""


    def draw(self, n, generator, dtype, device, known):
        return {self.s: _uniform(n, generator, dtype, device), self.t: _uniform(n, generator, dtype, device)}

    def __str__(self):
        return f"{self.s}, {self.t} ~ U[0, 1] independently"

    def support(self, known):
        s, t = torch.meshgrid(_grid(0, 1), _grid(0, 1), indexing="ij")
        return _product(known, {self.s: s.flatten(), self.t: t.flatten()})


@dataclass(frozen=True)
class Dyadic(_Pair):
    """Shortcut models' grid: d = 2^-k with k ~ U{1..levels}; t − s = 2d and s ~ U{0, 2d, 4d, .., 1 − 2d}."""

    levels: int = 7

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.levels, bool) or not isinstance(self.levels, numbers.Integral) or self.levels < 1:
            raise DeclarationError(f"Dyadic({self.s}, {self.t}, levels={self.levels!r})",
                                   "Dyadic needs at least one level (levels: a whole number ≥ 1), got "
                                   f"{type(self.levels).__name__}")

    def draw(self, n, generator, dtype, device, known):
        k = 1 + (_uniform(n, generator, torch.float64, device) * self.levels).floor().clamp(max=self.levels - 1)
        d = torch.pow(2.0, -k)
        slots = (1 / (2 * d)).round()  # the number of 2d-steps on [0, 1]
        j = (_uniform(n, generator, torch.float64, device) * slots).floor().clamp(max=slots - 1)
        s = j * 2 * d
        return {self.s: s.to(dtype), self.t: (s + 2 * d).to(dtype)}

    def __str__(self):
        return f"{self.s} on a dyadic grid of step 2d, d = 2^-k, k ∈ 1..{self.levels}, {self.t} = {self.s} + 2d"

    def support(self, known):
        # the first and the last step of every level: the grid's extremes
        steps = [2.0 ** (1 - k) for k in range(1, self.levels + 1)]
        s = torch.tensor([start for step in steps for start in (0.0, 1.0 - step)], dtype=torch.float64)
        t = s + torch.tensor([step for step in steps for _ in (0, 1)], dtype=torch.float64)
        return _product(known, {self.s: s, self.t: t})


@dataclass(frozen=True)
class Constant(TimeSampler):
    """A symbol fixed to one value for every sample (e.g. γ = ½ for PSD-M)."""

    symbol: sympy.Symbol
    value: float

    def __post_init__(self):
        _symbol(self.symbol, "a constant's symbol")
        where = f"Constant({self.symbol}, {self.value})"
        object.__setattr__(self, "value", _number(self.value, where, "the value"))
        _in_unit_interval(self.symbol, self.value, self.value, where)

    @property
    def produces(self):
        return (self.symbol,)

    def draw(self, n, generator, dtype, device, known):
        return {self.symbol: torch.full((n,), float(self.value), dtype=dtype, device=device)}

    def __str__(self):
        return f"{self.symbol} = {self.value:g}"

    def support(self, known):
        return _product(known, {self.symbol: torch.tensor([float(self.value)], dtype=torch.float64)})


@dataclass(frozen=True)
class Derived(TimeSampler):
    """A symbol computed from symbols drawn before it, e.g. ``Derived(u, s + gamma*(t - s))``."""

    symbol: sympy.Symbol
    expr: sympy.Expr

    def __post_init__(self):
        _symbol(self.symbol, "a derived symbol")
        object.__setattr__(self, "expr", coefficient(self.expr, f"the definition of {self.symbol}"))

    @property
    def produces(self):
        return (self.symbol,)

    @property
    def requires(self):
        return symbols_of(self.expr)

    def draw(self, n, generator, dtype, device, known):
        like = torch.empty(n, dtype=dtype, device=device)
        return {self.symbol: evaluate_sympy(self.expr, known, like).clone()}

    def __str__(self):
        return f"{self.symbol} = {show(self.expr)}"

    def support(self, known):
        if self.requires - set(known):
            return None
        like = next(iter(known.values())) if known else torch.zeros(1, dtype=torch.float64)
        try:
            return {**known, self.symbol: evaluate_sympy(self.expr, known, like)}
        except NotImplementedError:  # drawing it will say so
            return None


@dataclass(frozen=True)
class Joint(TimeSampler):
    """Samplers drawn in order; each may use what the ones before it produced."""

    parts: tuple[TimeSampler, ...]

    def __init__(self, *parts: TimeSampler):
        object.__setattr__(self, "parts", tuple(parts))
        seen: set[sympy.Symbol] = set()
        for part in parts:
            if not isinstance(part, TimeSampler):
                raise DeclarationError(part, "a joint sampler combines TimeSampler objects only")
            twice = sorted(str(sym) for sym in part.produces if sym in seen)
            if twice:
                raise DeclarationError(part, f"{', '.join(twice)} produced twice")
            seen.update(part.produces)

    @property
    def requires(self):
        """What the parts need that no earlier part produces (a complete sampler needs nothing)."""
        needed, seen = set(), set()
        for part in self.parts:
            needed |= part.requires - seen
            seen.update(part.produces)
        return frozenset(needed)

    def unmet(self) -> tuple[TimeSampler, frozenset] | None:
        """The first part whose requirements no earlier part produces, with what it misses."""
        seen: set = set()
        for part in self.parts:
            if part.requires - seen:
                return part, part.requires - seen
            seen.update(part.produces)
        return None

    @property
    def produces(self):
        return tuple(sym for part in self.parts for sym in part.produces)

    def draw(self, n, generator, dtype, device, known):
        drawn = dict(known)
        for part in self.parts:
            drawn.update(part.draw(n, generator, dtype, device, drawn))
        return {sym: drawn[sym] for sym in self.produces}

    def __str__(self):
        return "; ".join(str(part) for part in self.parts)

    def support(self, known):
        points = dict(known)
        for part in self.parts:
            points = part.support(points)
            if points is None:
                return None
        return points


def between(u: sympy.Symbol, s: sympy.Symbol, t: sympy.Symbol, gamma: sympy.Symbol,
            fixed: float | None = None) -> Joint:
    """γ ~ U[0, 1] (or fixed) and ``u = s + γ(t − s)``: the intermediate time of PSD."""
    draw_gamma = Uniform(gamma) if fixed is None else Constant(gamma, fixed)
    return Joint(draw_gamma, Derived(u, s + gamma * (t - s)))
