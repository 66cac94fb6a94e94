"""Readable math for expressions: ``|∂_t[X(s, t, x)] - sg(V(t, t, sg(X(s, t, x))))|²[x := I(s)]``."""
from __future__ import annotations

import sympy

from . import nodes as n

# Binding strength: higher binds tighter; an operand weaker than its context gets parentheses.
_SUM, _PRODUCT, _POWER, _ATOM = 1, 2, 3, 4


def pretty(expr: n.Expr) -> str:
    return _print(expr)[0]


def show(value: sympy.Expr) -> str:
    """A coefficient as people write it: ``t - s``, ``1 - gamma``, ``s + gamma*(t - s)``."""
    return sympy.sstr(value, order="rev-lex", full_prec=False)


def _negative(value: sympy.Expr) -> bool:
    lead = value.args[0] if value.is_Mul else value
    return bool(lead.is_Number and lead < 0)


def _coef(value: sympy.Expr) -> tuple[str, int]:
    text = show(value)
    if isinstance(value, sympy.Add) or (value.is_Number and value < 0):
        return text, _SUM
    if isinstance(value, (sympy.Mul, sympy.Rational)) and not value.is_Integer:
        return text, _PRODUCT
    return text, _ATOM


def _wrap(expr: n.Expr, strength: int) -> str:
    text, own = _print(expr)
    return f"({text})" if own < strength else text


def _print(expr: n.Expr) -> tuple[str, int]:
    if isinstance(expr, (n.Source, n.Var)):
        return expr.name, _ATOM
    if isinstance(expr, n.Coef):
        return _coef(expr.value)
    if isinstance(expr, n.Interp):
        return f"I({show(expr.tau)})", _ATOM
    if isinstance(expr, n.Net):
        return f"V({show(expr.a)}, {show(expr.b)}, {pretty(expr.x)})", _ATOM
    if isinstance(expr, n.FlowMap):
        return f"X({show(expr.a)}, {show(expr.b)}, {pretty(expr.x)})", _ATOM
    if isinstance(expr, n.TeacherCall):
        return f"Teacher({show(expr.a)}, {pretty(expr.x)})", _ATOM
    if isinstance(expr, n.LogVar):
        return f"w({show(expr.a)}, {show(expr.b)})", _ATOM
    if isinstance(expr, n.Scale):
        if expr.coef == -1:
            return "-" + _wrap(expr.arg, _PRODUCT), _SUM
        text, strength = _coef(expr.coef)
        coef = f"({text})" if strength < _PRODUCT else text
        return f"{coef}·{_wrap(expr.arg, _PRODUCT)}", _PRODUCT
    if isinstance(expr, n.Add):
        parts = [pretty(expr.terms[0])]
        for term in expr.terms[1:]:
            if isinstance(term, n.Scale) and _negative(term.coef):
                parts.append("- " + _wrap(n.scale(-term.coef, term.arg), _PRODUCT))
            else:
                parts.append("+ " + pretty(term))
        return " ".join(parts), _SUM
    if isinstance(expr, n.Mul):
        return f"{_wrap(expr.left, _PRODUCT)} * {_wrap(expr.right, _POWER)}", _PRODUCT
    if isinstance(expr, n.Pow):
        return f"{_wrap(expr.base, _ATOM)}^{_coef(expr.exponent)[0] if expr.exponent >= 0 else f'({show(expr.exponent)})'}", _POWER
    if isinstance(expr, n.Func):
        return f"{expr.name}({pretty(expr.arg)})", _ATOM
    if isinstance(expr, n.SqNorm):
        return f"|{pretty(expr.arg)}|²", _ATOM
    if isinstance(expr, n.Dot):
        return f"⟨{pretty(expr.left)}, {pretty(expr.right)}⟩", _ATOM
    if isinstance(expr, n.D):
        return f"∂_{expr.tau}[{pretty(expr.arg)}]", _ATOM
    if isinstance(expr, n.Dx):
        return f"∇_{expr.var.name}[{pretty(expr.arg)}]·{_wrap(expr.along, _ATOM)}", _PRODUCT
    if isinstance(expr, n.StopGrad):
        return f"sg({pretty(expr.arg)})", _ATOM
    if isinstance(expr, n.Bind):
        assigned = ", ".join(f"{var.name} := {pretty(value)}" for var, value in expr.bindings)
        return f"{_wrap(expr.arg, _ATOM)}[{assigned}]", _ATOM
    if hasattr(expr, "pretty_parts"):  # nodes of later stages print themselves
        return expr.pretty_parts(pretty, show), _ATOM
    raise TypeError(f"no printing rule for {type(expr).__name__}")
