"""hypothesis strategies: interpolants, batches with hard times, and random well-formed objectives."""
from __future__ import annotations

import math

import sympy
import torch
from hypothesis import strategies as st

from .. import lang as L
from ..lang.constructors import ELEMENTWISE
from ..lang.functions import FUNCTIONS, Function
from ..lang.interpolants import TAU

SHAPES = [(2,), (3,), (1, 2, 2), (2, 2, 3)]


def interpolants() -> st.SearchStrategy:
    """Linear, trigonometric and two custom interpolants (all satisfy the boundary conditions)."""
    return st.sampled_from([
        L.linear(),
        L.trig(),
        L.custom(1 - TAU**2, TAU**2, name="quadratic"),
        L.custom((1 - TAU) * sympy.cos(TAU), TAU + TAU * (1 - TAU) / 2, name="wobbly"),
    ])


@st.composite
def time_values(draw, symbols: tuple, count: int) -> dict:
    """Per-sample values in [0, 1] for `symbols`, often with coincidences: s = t exactly, or
    |t − s| < 1e-6, the places where flow-map objectives are most fragile."""
    unit = st.floats(0.0, 1.0, allow_nan=False)
    values = {sym: [draw(unit) for _ in range(count)] for sym in symbols}
    times = [sym for sym in symbols if isinstance(sym, L.Time)]
    if len(times) >= 2 and count:
        first, second = times[0], times[1]
        for i in range(count):
            mode = draw(st.sampled_from(["free", "equal", "near"]))
            if mode == "equal":
                values[second][i] = values[first][i]
            elif mode == "near":
                values[second][i] = min(1.0, values[first][i] + draw(st.floats(0.0, 1e-6)))
    return {str(sym): torch.tensor(v, dtype=torch.float64) for sym, v in values.items()}


@st.composite
def batches(draw, objective: L.Objective, max_batch: int = 9, shapes=None) -> dict:
    """A batch for `objective`: x0, x1 of a drawn shape, seeds, and explicit per-term times."""
    batch = draw(st.integers(1, max_batch))
    shape = draw(st.sampled_from(shapes or SHAPES))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    x1 = torch.randn(batch, *shape, generator=gen, dtype=torch.float64)
    x0 = torch.randn(batch, *shape, generator=gen, dtype=torch.float64)
    times = {term.name: draw(time_values(term.sampler.produces, count))
             for term, count in zip(objective.terms, objective.split(batch))}
    return {"x0": x0, "x1": x1, "times": times, "shape": shape, "seed": seed}


# -- random well-formed objectives ------------------------------------------------------------------
_s, _t, _u = L.s, L.t, L.u
_COEFS = [sympy.Integer(1), _t - _s, sympy.cos(_t), 2 * _s + _u, sympy.Rational(1, 2), _s / (1 + _t) ** 2]


def _function_of(function: Function, arg: L.Expr) -> L.Expr:
    """`function` of a drawn expression, kept finite however deep the nesting: the argument is squashed
    into (-1, 1) by tanh, then into (1/2, 5/2) for a function of positive arguments (log, sqrt)."""
    squashed = L.tanh(arg)
    return ELEMENTWISE[function.name](squashed + sympy.Rational(3, 2) if function.positive_domain else squashed)


def _tensors(depth: int, scope: tuple) -> st.SearchStrategy:
    leaves = [st.just(L.x0), st.just(L.x1), st.sampled_from([L.I(_s), L.I(_t), L.I(_u)])]
    leaves += [st.just(var) for var in scope]
    if depth == 0:
        return st.one_of(leaves)
    inner = _tensors(depth - 1, scope)
    times = st.sampled_from([_s, _t, _u])
    compound = [
        st.builds(L.V, times, times, inner),
        st.builds(L.X, times, times, inner),
        st.builds(lambda a, b: a + b, inner, inner),
        st.builds(lambda c, a: c * a, st.sampled_from(_COEFS), inner),
        st.builds(lambda a, b: a * b, inner, inner),
        st.builds(L.sg, inner),
        st.builds(_function_of, st.sampled_from(list(FUNCTIONS.values())), inner),
        st.builds(L.D, inner, times),
    ]
    if scope:
        compound.append(st.builds(lambda e, w, x: L.Dx(e, x, along=w), inner, inner, st.sampled_from(scope)))
    return st.one_of(leaves + compound)


@st.composite
def objectives(draw, max_depth: int = 3) -> L.Objective:
    """A random objective: sums, products, sg, every function of the table, D (nested too), Dx over
    V, X and I, reduced by sqnorm or dot, optionally weighted, with a bound variable x := I(s)."""
    x = L.Var("x")
    depth = draw(st.integers(1, max_depth))
    use_var = draw(st.booleans())
    scope = (x,) if use_var else ()
    first, second = draw(_tensors(depth, scope)), draw(_tensors(depth - 1, scope))
    loss = draw(st.sampled_from([
        L.sqnorm(first - second),
        L.dot(first, second),
        L.sqnorm(first) + L.fixed(L.dot(first, second), _t - _s),
        L.adaptive(L.sqnorm(first), c=0.5),
    ]))
    if "x" in L.free_vars(loss):
        loss = loss.bind(x=L.I(_s))
    sampler = L.Square(_s, _t) & L.Uniform(_u)
    return L.Objective("random", [L.Term("random", loss, sampler, 1.0)])


def finite(value: torch.Tensor) -> bool:
    return bool(torch.isfinite(value).all()) and math.isfinite(float(value.abs().max()) if value.numel() else 0.0)
