"""Per-sample scalar symbols: times (differentiable) and parameters (drawn, not differentiable).

Every sample of a batch carries its own value of each symbol. Times are what `D` differentiates
with respect to; parameters such as PSD's γ enter coefficients but are never differentiated.
Both are sympy symbols, so coefficient algebra (`(t - s)`, `cos(pi*t/2)`) is plain sympy.
"""
from __future__ import annotations

import sympy
import torch

from .errors import DeclarationError


class Time(sympy.Symbol):
    """A time symbol (one value per sample); `D(e, tau)` differentiates with respect to it."""


class Param(sympy.Symbol):
    """A per-sample parameter drawn by a sampler (e.g. PSD's γ); never differentiated."""


def times(names: str) -> tuple[Time, ...]:
    """Declare time symbols: ``s, t = times("s t")``."""
    split = names.replace(",", " ").split() if isinstance(names, str) else []
    if not split:
        raise DeclarationError(repr(names), "times() takes the names of the times in one string, e.g. times(\"s t\")")
    return tuple(Time(_symbol_name(name, "a time"), real=True) for name in split)


def param(name: str) -> Param:
    """Declare one per-sample parameter: ``gamma = param("gamma")``."""
    return Param(_symbol_name(name, "a parameter"), real=True)


def _symbol_name(name: object, what: str) -> str:
    # the name is printed in kernels and messages and parsed back by sympy: an identifier
    if not isinstance(name, str) or not name.isidentifier():
        raise DeclarationError(repr(name), f"the name of {what} must be a Python identifier, got {name!r}")
    return name


# The canonical times every built-in objective uses, and the helpers Dt, Ds, Du refer to.
s, t, u = times("s t u")


def coefficient(value: object, where: str) -> sympy.Expr:
    """Turn `value` into a sympy coefficient of the times, or say why it cannot be one."""
    if isinstance(value, torch.Tensor):  # a 1-element tensor would sympify silently, a longer one obscurely
        raise DeclarationError(f"tensor of shape {tuple(value.shape)}", f"{where} is a torch tensor: a declaration "
                               "holds numbers, sympy expressions of the times and the batch tensors x0, x1, z (given "
                               "at evaluation), never a torch tensor; write a number (tensor.item()) instead")
    try:
        expr = sympy.sympify(value, strict=True)
    except (sympy.SympifyError, TypeError):
        raise DeclarationError(value, f"{where} must be a number or a sympy expression of the times, "
                                      f"got {type(value).__name__}") from None
    unknown = sorted(str(sym) for sym in expr.free_symbols if not isinstance(sym, (Time, Param)))
    if unknown:
        raise DeclarationError(expr, f"unknown name(s) {', '.join(unknown)} in {where}: declare "
                                     "per-sample symbols with flowcore.times(...) or flowcore.param(...)")
    if expr.has(sympy.I):
        raise DeclarationError(expr, f"{where} is complex: `I` here is sympy's imaginary unit (√-1), not "
                                     "flowcore's interpolant I(τ); a coefficient must be real")
    if expr.has(sympy.zoo, sympy.oo, sympy.nan):
        raise DeclarationError(expr, f"{where} must be real and finite")
    return expr


def time_coefficient(value: object, where: str) -> sympy.Expr:
    """A coefficient used as a time: a constant one must lie in [0, 1] (0 is noise, 1 is data).

    A time that depends on the times is checked against the term's sampled times (`ranges`)."""
    expr = coefficient(value, where)
    if not expr.free_symbols and not 0 <= float(expr) <= 1:
        raise DeclarationError(value, f"{where} is {value}, outside [0, 1]: times run from 0 (noise) to 1 (data)")
    return expr


def symbols_of(expr: sympy.Expr) -> frozenset[sympy.Symbol]:
    return frozenset(sym for sym in expr.free_symbols if isinstance(sym, (Time, Param)))
