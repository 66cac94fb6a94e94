"""Per-sample loss weights (docs/math.md §3): fixed, learned log-variance, adaptive."""
from __future__ import annotations

from . import nodes as n
from .constructors import ELEMENTWISE, sg
from .errors import DeclarationError
from .symbols import coefficient, s, t


def fixed(loss: n.Expr, weight) -> n.Expr:
    """``λ(s, t)·ℓ`` with λ a sympy expression of the times."""
    return n.scale(coefficient(weight, "a fixed weight"), loss)


def learned_logvar(loss: n.Expr, a=s, b=t) -> n.Expr:
    """EDM2's uncertainty weight ``exp(−w_{a,b})·ℓ + w_{a,b}``, w from the log-variance head."""
    w = n.LogVar(a, b)
    return ELEMENTWISE["exp"](-w) * loss + w


def adaptive(loss: n.Expr, c: float = 1e-3, p: float = 1.0) -> n.Expr:
    """``ℓ / sg(ℓ + c)^p``: down-weights samples with large residuals (p = 1 is ≈ a robust norm)."""
    if c <= 0:
        raise DeclarationError(c, "the adaptive weight's c must be > 0 (it keeps the denominator away from 0)")
    return loss * sg(loss + c) ** (-p)
