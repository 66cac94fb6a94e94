"""Per-sample loss weights (docs/math.md §3): fixed, learned log-variance, adaptive."""
from __future__ import annotations

import math
import numbers

from . import nodes as n
from .constructors import ELEMENTWISE, sg
from .errors import DeclarationError
from .ranges import refuse_negative_constant
from .symbols import coefficient, s, t


def fixed(loss: n.Expr, weight) -> n.Expr:
    """``λ(s, t)·ℓ`` with λ ≥ 0 a sympy expression of the times (a negative constant is refused
    here, one of the times by its term, at the times its sampler draws: `ranges`)."""
    loss = n.as_expr(loss, "the loss of fixed()")
    weight = coefficient(weight, "a fixed weight")
    refuse_negative_constant(loss, weight)
    return n.scale(weight, loss)


def learned_logvar(loss: n.Expr, a=s, b=t) -> n.Expr:
    """EDM2's uncertainty weight ``exp(−w_{a,b})·ℓ + w_{a,b}``, w from the log-variance head."""
    w = n.LogVar(a, b)
    return ELEMENTWISE["exp"](-w) * loss + w


def adaptive(loss: n.Expr, c: float = 1e-3, p: float = 1.0) -> n.Expr:
    """``ℓ / sg(ℓ + c)^p``: down-weights samples with large residuals (p = 1 is ≈ a robust norm)."""
    for name, value in (("c", c), ("p", p)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise DeclarationError(f"adaptive(ℓ, {name}={value!r})", f"the adaptive weight's {name} must be a finite "
                                                                     f"number, got {type(value).__name__}")
    if c <= 0:
        raise DeclarationError(c, "the adaptive weight's c must be > 0 (it keeps the denominator away from 0)")
    return loss * sg(loss + c) ** (-p)
