"""Numerical evaluation of sympy coefficients with torch ops, per sample.

Used by the samplers (derived times) and the reference interpreter. It only evaluates; it never
differentiates — derivatives of coefficients are whatever autograd makes of these torch ops.
"""
from __future__ import annotations

import math

import sympy
import torch

from .functions import FUNCTIONS

# sympy class name -> torch function: the language's functions (their table), and the sympy
# functions only a coefficient of the times may contain.
_FUNCTIONS = {
    **{f.sympy_name: f.torch_function for f in FUNCTIONS.values()},
    "tan": torch.tan, "sinh": torch.sinh, "cosh": torch.cosh, "atan": torch.atan, "asin": torch.asin,
    "acos": torch.acos, "erf": torch.erf, "Abs": torch.abs,
}


def evaluate_sympy(expr: sympy.Expr, values: dict[sympy.Symbol, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """`expr` at the per-sample values of its symbols, as a tensor shaped, typed and placed like `like`."""
    result = _eval(sympy.sympify(expr), values)
    if isinstance(result, torch.Tensor):
        return result.expand_as(like) if result.shape != like.shape else result
    return torch.full_like(like, float(result))


def _eval(expr: sympy.Expr, values):
    if expr.is_Symbol:
        try:
            return values[expr]
        except KeyError:
            raise KeyError(f"no value for the symbol `{expr}` (known: {sorted(map(str, values))})") from None
    if expr.is_Number or expr.is_NumberSymbol:
        return float(expr)
    if expr.is_Add:
        parts = [_eval(arg, values) for arg in expr.args]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total
    if expr.is_Mul:
        parts = [_eval(arg, values) for arg in expr.args]
        total = parts[0]
        for part in parts[1:]:
            total = total * part
        return total
    if expr.is_Pow:
        base, exponent = expr.args
        b = _eval(base, values)
        if exponent == sympy.Rational(1, 2):
            return torch.sqrt(b) if isinstance(b, torch.Tensor) else math.sqrt(b)
        if exponent.is_Integer:
            return b ** int(exponent)
        return b ** _eval(exponent, values)
    func = _FUNCTIONS.get(type(expr).__name__)
    if func is not None:
        arg = _eval(expr.args[0], values)
        return func(arg) if isinstance(arg, torch.Tensor) else func(torch.tensor(arg, dtype=torch.float64)).item()
    raise NotImplementedError(f"flowcore cannot evaluate `{expr}` numerically: {type(expr).__name__} is not one of "
                              f"{', '.join(sorted(_FUNCTIONS))}, +, *, **")
