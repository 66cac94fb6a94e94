"""Interpolants ``I_τ = α(τ)·x0 + β(τ)·x1 (+ γ(τ)·z)`` with their boundary conditions (docs/math.md §1).

τ = 0 is noise and τ = 1 is data, so α(0) = 1, β(0) = 0, α(1) = 0, β(1) = 1, and the optional
γ of a stochastic interpolant vanishes at both ends. The checks are exact (sympy), at declaration.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from .errors import DeclarationError

TAU = sympy.Symbol("tau", real=True)


@dataclass(frozen=True)
class Interpolant:
    """α, β (and optionally γ) as sympy expressions of the single symbol `var`."""

    name: str
    alpha: sympy.Expr
    beta: sympy.Expr
    gamma: sympy.Expr = sympy.Integer(0)
    var: sympy.Symbol = TAU

    def __post_init__(self):
        for role in ("alpha", "beta", "gamma"):
            expr = sympy.sympify(getattr(self, role))
            object.__setattr__(self, role, expr)
            extra = expr.free_symbols - {self.var}
            if extra:
                twins = sorted(str(sym) for sym in extra if sym.name == self.var.name)
                hint = (f"; `{twins[0]}` there is a different symbol from the interpolant's variable (same name, "
                        "other assumptions): use flowcore.lang.interpolants.TAU, or pass var=" if twins else "")
                raise DeclarationError(expr, f"interpolant {self.name!r}: {role} may depend on "
                                             f"{self.var} only, found {sorted(map(str, extra))}{hint}")
        for role, at, want in (("alpha", 0, 1), ("beta", 0, 0), ("alpha", 1, 0), ("beta", 1, 1),
                               ("gamma", 0, 0), ("gamma", 1, 0)):
            got = sympy.simplify(getattr(self, role).subs(self.var, at))
            if sympy.simplify(got - want) != 0:
                symbol = {"alpha": "α", "beta": "β", "gamma": "γ"}[role]
                raise DeclarationError(getattr(self, role), f"interpolant {self.name!r} violates {symbol}({at}) = "
                                                            f"{want}: {symbol}({at}) = {got} (τ = 0 is noise, "
                                                            "τ = 1 is data)")

    @property
    def stochastic(self) -> bool:
        return self.gamma != 0

    def at(self, tau: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
        """(α(τ), β(τ), γ(τ)) with τ replaced by an expression of the times."""
        return tuple(e.subs(self.var, tau) for e in (self.alpha, self.beta, self.gamma))

    def __str__(self) -> str:
        from .printing import show

        text = f"{self.name}: α = {show(self.alpha)}, β = {show(self.beta)}"
        return text + (f", γ = {show(self.gamma)}" if self.stochastic else "")


def linear() -> Interpolant:
    """α = 1 − τ, β = τ: the interpolant of every experiment in the paper."""
    return Interpolant("linear", 1 - TAU, TAU)


def trig() -> Interpolant:
    """α = cos(πτ/2), β = sin(πτ/2): variance preserving for unit-variance x0, x1."""
    return Interpolant("trig", sympy.cos(sympy.pi * TAU / 2), sympy.sin(sympy.pi * TAU / 2))


def custom(alpha, beta, gamma=0, var: sympy.Symbol = TAU, name: str = "custom") -> Interpolant:
    """A user-given interpolant; `alpha`, `beta`, `gamma` are sympy expressions of `var`, or strings
    in which `var`'s name means `var` (``custom("1 - tau", "tau")``)."""
    return Interpolant(name, *(_parse(value, role, var, name) for role, value in
                               (("alpha", alpha), ("beta", beta), ("gamma", gamma))), var)


def _parse(value: object, role: str, var: sympy.Symbol, name: str) -> sympy.Expr:
    try:  # a string's `tau` is the interpolant's (real) variable, not a new plain symbol
        return sympy.sympify(value, locals={var.name: var} if isinstance(value, str) else None)
    except (sympy.SympifyError, SyntaxError, TypeError):
        raise DeclarationError(value, f"interpolant {name!r}: {role} {value!r} is not an expression of "
                                      f"{var}") from None


INTERPOLANTS = {"linear": linear, "trig": trig}
