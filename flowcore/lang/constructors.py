"""The words of the language: what a user writes in a declaration.

    x = Var("x")
    lsd = sqnorm(Dt(X(s, t, x)) - sg(V(t, t, sg(X(s, t, x))))).bind(x=I(s))
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import sympy

from . import nodes as n
from .errors import DeclarationError
from .functions import FUNCTIONS
from .printing import show
from .symbols import coefficient, s, t, u

x0 = n.Source("x0")
x1 = n.Source("x1")
z = n.Source("z")
Var = n.Var


def _arity(constructor: Callable) -> Callable:
    """Turn a wrong number (or name) of arguments into a DeclarationError naming the call as written:
    Python's bare TypeError names neither the call nor what the arguments mean (docs/design.md,
    "The language")."""
    signature = inspect.signature(constructor)
    expected = ", ".join(signature.parameters)

    @functools.wraps(constructor)
    def checked(*args, **kwargs):
        try:
            signature.bind(*args, **kwargs)
        except TypeError as error:
            name = constructor.__name__
            written = ", ".join([*map(str, args), *(f"{key}={value}" for key, value in kwargs.items())])
            unknown = [key for key in kwargs if key not in signature.parameters]
            if unknown:
                reason = f"{name} has no argument named {unknown[0]!r}; its arguments are ({expected})"
            else:
                reason = (f"{name} takes {len(signature.parameters)} argument{'s' * (len(signature.parameters) > 1)} "
                          f"({expected}), got {len(args) + len(kwargs)} ({error})")
            raise DeclarationError(f"{name}({written})", reason) from None
        return constructor(*args, **kwargs)

    return checked


@_arity
def I(tau) -> n.Interp:  # noqa: E743 - the paper's name for the interpolant
    """The interpolant sample ``I_τ = α(τ)·x0 + β(τ)·x1`` (docs/math.md §1)."""
    return n.Interp(tau)


@_arity
def V(a, b, x) -> n.Net:
    """The network velocity ``v̂_{a,b}(x)``."""
    return n.Net(a, b, n.as_expr(x, "the input of V"))


@_arity
def X(a, b, x) -> n.FlowMap:
    """The flow map ``X_{a,b}(x) = x + (b − a)·v̂_{a,b}(x)`` (docs/math.md §1)."""
    return n.FlowMap(a, b, n.as_expr(x, "the input of X"))


@_arity
def Teacher(a, x) -> n.TeacherCall:
    """A frozen pretrained velocity ``b̂_a(x)``."""
    return n.TeacherCall(a, n.as_expr(x, "the input of Teacher"))


@_arity
def TeacherMap(a, b, x) -> n.Expr:
    """One Euler step of the teacher, ``X̌_{a,b}(x) = x + (b − a)·b̂_a(x)`` (PFMM's initial teacher)."""
    x = n.as_expr(x, "the input of TeacherMap")
    return x + (sympy.sympify(b) - sympy.sympify(a)) * Teacher(a, x)


@_arity
def D(e: n.Expr, tau) -> n.D:
    """Derivative of `e` in the time `tau`, every chain rule applied, x0/x1/free variables held."""
    return n.D(e, tau)


def Ds(e: n.Expr) -> n.D:
    return n.D(e, s)


def Dt(e: n.Expr) -> n.D:
    return n.D(e, t)


def Du(e: n.Expr) -> n.D:
    return n.D(e, u)


@_arity
def Dx(e: n.Expr, x: n.Var, along: n.Expr) -> n.Dx:
    """Directional derivative ``∇_x e · along`` (a spatial JVP) in the free variable `x`."""
    return n.Dx(e, x, along)


@_arity
def sg(e: n.Expr) -> n.StopGrad:
    """Stop-gradient: no gradient reaches parameters or inputs through `e`."""
    return n.StopGrad(n.as_expr(e, "the argument of sg"))


@_arity
def sqnorm(e: n.Expr) -> n.SqNorm:
    """``|e|²`` summed over every data dimension of a sample."""
    return n.SqNorm(n.as_expr(e, "the argument of sqnorm"))


@_arity
def dot(a: n.Expr, b: n.Expr) -> n.Dot:
    """Per-sample inner product over every data dimension."""
    return n.Dot(n.as_expr(a, "the left operand of dot"), n.as_expr(b, "the right operand of dot"))


def _function(name: str) -> Callable[[object], n.Expr]:
    to_sympy = FUNCTIONS[name].sympy

    def apply(e: object) -> n.Expr:
        e = n.as_expr(e, f"the argument of {name}")
        if isinstance(e, n.Coef):  # a function of the times stays a coefficient
            try:
                return n.Coef(coefficient(to_sympy(e.value), f"{name}({show(e.value)})"))
            except DeclarationError as error:  # name the application, not sympy's result (`I` for sqrt(-1))
                raise DeclarationError(f"{name}({show(e.value)})", error.reason) from None
        return n.Func(name, e)

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = f"Elementwise {name} (flowcore.lang.functions); of a coefficient, a coefficient."
    return apply


#: one constructor per entry of the function table: ``exp(e)``, ``softplus(e)``, … (the package
#: exports each under its name)
ELEMENTWISE: dict[str, Callable[[object], n.Expr]] = {name: _function(name) for name in FUNCTIONS}
