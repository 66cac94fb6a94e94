"""What a term's times and weights can be on its sampled times: times in [0, 1], weights ≥ 0.

A term is checked when it is built, at the points of its sampler's `support` (corners and a grid of
what it draws): a time that leaves [0, 1] there (a `Derived` time, the time of a call such as
`I(2*t)`) or a loss weight that is negative there (`fixed(ℓ, t - 2)`: the loss would be unbounded
below) is a DeclarationError with the offending point. A weight sympy can neither prove
nonnegative nor find negative at those points is checked again at the first evaluation, on the
times actually drawn (`check_weights_at`). See docs/design.md, "The language".
"""
from __future__ import annotations

import sympy
import torch

from . import analysis
from . import nodes as n
from .errors import DeclarationError
from .numeric import evaluate_sympy
from .printing import show
from .samplers import Derived, Draw, Joint, TimeSampler
from .symbols import Time

#: a time this far outside [0, 1] is float rounding (e.g. s + γ(t − s)), not a declaration error
TOLERANCE = 1e-9

_NETWORK_CALLS = (n.Net, n.FlowMap, n.LogVar, n.TeacherCall)


# -- which coefficients are loss weights ------------------------------------------------------------
def nonnegative(expr: n.Expr) -> bool:
    """Whether `expr` is ≥ 0 whatever its tensors hold (a conservative, structural proof)."""
    if isinstance(expr, n.SqNorm) or (isinstance(expr, n.Func) and expr.name in ("exp", "softplus", "sqrt")):
        return True
    if isinstance(expr, n.Coef):
        return bool(expr.value.is_nonnegative)
    if isinstance(expr, n.Scale):
        return bool(expr.coef.is_nonnegative) and nonnegative(expr.arg)
    if isinstance(expr, n.Pow):
        return bool(expr.exponent.is_even) or nonnegative(expr.base)
    if isinstance(expr, n.Mul):
        return nonnegative(expr.left) and nonnegative(expr.right)
    if isinstance(expr, n.Add):
        return all(nonnegative(term) for term in expr.terms)
    if isinstance(expr, (n.StopGrad, n.Bind)):
        return nonnegative(expr.arg)
    return False


def weights(loss: n.Expr) -> tuple[tuple[sympy.Expr, n.Expr], ...]:
    """The (weight, weighted loss) pairs of a term's loss: coefficients multiplying a nonnegative
    loss that trains something, at the top of the loss (through sums and bindings)."""
    if isinstance(loss, n.Add):
        return tuple(pair for term in loss.terms for pair in weights(term))
    if isinstance(loss, n.Bind):
        return weights(loss.arg)
    if isinstance(loss, n.Scale) and nonnegative(loss.arg) and analysis.uses(loss.arg, _NETWORK_CALLS):
        return ((loss.coef, loss.arg),)
    return ()


def refuse_negative_constant(loss: n.Expr, weight: sympy.Expr) -> None:
    """`fixed(ℓ, -2)`: refused where it is written (a weight of the times waits for its term's sampler)."""
    if not weight.free_symbols and weight < 0:
        raise DeclarationError(f"fixed({loss}, {_text(weight)})", f"the fixed weight {_text(weight)} is negative: "
                                                                  "a loss weight must be ≥ 0 (a negative one makes "
                                                                  "the loss unbounded below)")


# -- the checks a term runs when it is built ---------------------------------------------------------
def check_term(name: str, loss: n.Expr, sampler: TimeSampler) -> tuple[sympy.Expr, ...]:
    """Refuse times outside [0, 1] and negative weights at `sampler`'s support; return the weights
    left for the first evaluation (`check_weights_at`)."""
    points = sampler.support({})
    if points is None:  # a sampler that cannot say: the weights wait for real draws
        return tuple(weight for weight, _ in weights(loss) if weight.free_symbols)
    for part in sampler.parts if isinstance(sampler, Joint) else (sampler,):
        if isinstance(part, Derived) and isinstance(part.symbol, Time):
            _refuse_outside_unit_interval(name, points[part.symbol], points,
                                          f"the derived time `{part.symbol} = {show(part.expr)}`")
    checked = set()
    for node in analysis.walk(loss):
        for role, value in _call_times(node):
            if value.free_symbols and not isinstance(value, Time) and value not in checked:  # a time is in range
                checked.add(value)
                _refuse_outside_unit_interval(name, _values(value, points), points,
                                              f"the time `{show(value)}` of {role}")
    unsigned = []
    for weight, weighted in weights(loss):
        values = _values(weight, points)
        if values is None:  # a function the numerical evaluator lacks: the evaluation will say so
            continue
        _refuse_not_real(name, values, points, _text(weight), f"this weight of `{weighted}`")
        negative = torch.nonzero(values < 0).flatten()
        if negative.numel():
            raise DeclarationError(_text(weight), f"term {name!r}: this weight of `{weighted}` is negative on the "
                                                  f"sampled times ({_at(values, points, negative[0])}): a loss weight "
                                                  "must be ≥ 0 (a negative one makes the loss unbounded below)")
        if weight.free_symbols and not _provably_nonnegative(weight, points):
            unsigned.append(weight)
    return tuple(dict.fromkeys(unsigned))


def check_weights_at(name: str, unsigned: tuple[sympy.Expr, ...], times: dict) -> bool:
    """The first-evaluation check: each weight sympy could not sign, at the times actually drawn.
    False where there was nothing to check them at (a term given no samples of this batch)."""
    if not times or not next(iter(times.values())).numel():
        return False
    for weight in unsigned:
        values = _values(weight, times)
        negative = torch.nonzero(values < 0).flatten() if values is not None else ()
        if len(negative):
            raise DeclarationError(_text(weight), f"term {name!r}: this weight is negative at the times drawn for its "
                                                  f"first evaluation ({_at(values, times, negative[0])}): a loss "
                                                  "weight must be ≥ 0 (a negative one makes the loss unbounded below)")
    return True


def _values(expr: sympy.Expr, points: Draw) -> torch.Tensor | None:
    """`expr` at every point; None where flowcore's evaluator has no rule for one of its functions."""
    try:
        return evaluate_sympy(expr, points, _like(points))
    except (NotImplementedError, KeyError):
        return None


def _call_times(node: n.Expr) -> tuple[tuple[str, sympy.Expr], ...]:
    if isinstance(node, n.Interp):
        return ((f"`{node}`", node.tau),)
    if isinstance(node, (n.Net, n.FlowMap, n.LogVar)):
        return ((f"`{node}`", node.a), (f"`{node}`", node.b))
    if isinstance(node, n.TeacherCall):
        return ((f"`{node}`", node.a),)
    return ()


def _refuse_outside_unit_interval(name: str, values: torch.Tensor | None, points: Draw, what: str) -> None:
    if values is None:
        return
    _refuse_not_real(name, values, points, what.split("`")[1], what)
    outside = torch.nonzero((values < -TOLERANCE) | (values > 1 + TOLERANCE)).flatten()
    if outside.numel():
        raise DeclarationError(what.split("`")[1], f"term {name!r}: {what} leaves [0, 1] on the sampled times "
                                                   f"({_at(values, points, outside[0])}): times run from 0 (noise) "
                                                   "to 1 (data)")


def _refuse_not_real(name: str, values: torch.Tensor, points: Draw, where: str, what: str) -> None:
    """NaN at most points (`sqrt(-t)`); a NaN at a few is a removable singularity (sin(t)/t at 0)."""
    nan = torch.isnan(values)
    if nan.double().mean() > 0.5:
        raise DeclarationError(where, f"term {name!r}: {what} is not a real number on most of the sampled times "
                                      f"({_at(values, points, torch.nonzero(nan).flatten()[0])})")


def _provably_nonnegative(weight: sympy.Expr, points: Draw) -> bool:
    """sympy's proof that `weight` ≥ 0 on the box its symbols span at `points` (each symbol
    written as low + (high − low)·p/(1 + p) with p ≥ 0)."""
    substitutions = {}
    for symbol in weight.free_symbols:
        if symbol not in points:
            return False
        low, high = float(points[symbol].min()), float(points[symbol].max())
        p = sympy.Dummy(nonnegative=True)
        substitutions[symbol] = sympy.nsimplify(low) + sympy.nsimplify(high - low) * p / (1 + p)
    return bool(sympy.together(weight.subs(substitutions)).is_nonnegative)


def _text(value: sympy.Expr) -> str:
    return sympy.sstr(value, full_prec=False)  # `t - 2`, `-2.0`


def _like(points: Draw) -> torch.Tensor:
    return next(iter(points.values())) if points else torch.zeros(1, dtype=torch.float64)


def _at(values: torch.Tensor, points: Draw, index: torch.Tensor) -> str:
    where = ", ".join(f"{symbol} = {float(value[index]):.6g}" for symbol, value in sorted(points.items(), key=str))
    return f"{float(values[index]):.6g} at {where}"
