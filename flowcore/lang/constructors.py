"""The words of the language: what a user writes in a declaration.

    x = Var("x")
    lsd = sqnorm(Dt(X(s, t, x)) - sg(V(t, t, sg(X(s, t, x))))).bind(x=I(s))
"""
from __future__ import annotations

from typing import Callable

import sympy

from . import nodes as n
from .functions import FUNCTIONS
from .symbols import s, t, u

x0 = n.Source("x0")
x1 = n.Source("x1")
z = n.Source("z")
Var = n.Var


def I(tau) -> n.Interp:  # noqa: E743 - the paper's name for the interpolant
    """The interpolant sample ``I_τ = α(τ)·x0 + β(τ)·x1`` (docs/math.md §1)."""
    return n.Interp(tau)


def V(a, b, x) -> n.Net:
    """The network velocity ``v̂_{a,b}(x)``."""
    return n.Net(a, b, n.as_expr(x, "the input of V"))


def X(a, b, x) -> n.FlowMap:
    """The flow map ``X_{a,b}(x) = x + (b − a)·v̂_{a,b}(x)`` (docs/math.md §1)."""
    return n.FlowMap(a, b, n.as_expr(x, "the input of X"))


def Teacher(a, x) -> n.TeacherCall:
    """A frozen pretrained velocity ``b̂_a(x)``."""
    return n.TeacherCall(a, n.as_expr(x, "the input of Teacher"))


def TeacherMap(a, b, x) -> n.Expr:
    """One Euler step of the teacher, ``X̌_{a,b}(x) = x + (b − a)·b̂_a(x)`` (PFMM's initial teacher)."""
    x = n.as_expr(x, "the input of TeacherMap")
    return x + (sympy.sympify(b) - sympy.sympify(a)) * Teacher(a, x)


def D(e: n.Expr, tau) -> n.D:
    """Derivative of `e` in the time `tau`, every chain rule applied, x0/x1/free variables held."""
    return n.D(e, tau)


def Ds(e: n.Expr) -> n.D:
    return n.D(e, s)


def Dt(e: n.Expr) -> n.D:
    return n.D(e, t)


def Du(e: n.Expr) -> n.D:
    return n.D(e, u)


def Dx(e: n.Expr, x: n.Var, along: n.Expr) -> n.Dx:
    """Directional derivative ``∇_x e · along`` (a spatial JVP) in the free variable `x`."""
    return n.Dx(e, x, along)


def sg(e: n.Expr) -> n.StopGrad:
    """Stop-gradient: no gradient reaches parameters or inputs through `e`."""
    return n.StopGrad(n.as_expr(e, "the argument of sg"))


def sqnorm(e: n.Expr) -> n.SqNorm:
    """``|e|²`` summed over every data dimension of a sample."""
    return n.SqNorm(n.as_expr(e, "the argument of sqnorm"))


def dot(a: n.Expr, b: n.Expr) -> n.Dot:
    """Per-sample inner product over every data dimension."""
    return n.Dot(n.as_expr(a, "the left operand of dot"), n.as_expr(b, "the right operand of dot"))


def _function(name: str) -> Callable[[object], n.Expr]:
    to_sympy = FUNCTIONS[name].sympy

    def apply(e: object) -> n.Expr:
        e = n.as_expr(e, f"the argument of {name}")
        if isinstance(e, n.Coef):  # a function of the times stays a coefficient
            return n.Coef(to_sympy(e.value))
        return n.Func(name, e)

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = f"Elementwise {name} (flowcore.lang.functions); of a coefficient, a coefficient."
    return apply


#: one constructor per entry of the function table: ``exp(e)``, ``softplus(e)``, … (the package
#: exports each under its name)
ELEMENTWISE: dict[str, Callable[[object], n.Expr]] = {name: _function(name) for name in FUNCTIONS}
