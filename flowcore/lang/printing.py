"""Readable math for declarations: ``|∂_t[X(s, t, x)] - sg(V(t, t, sg(X(s, t, x))))|²[x := I(s)]``.

`pretty` prints an expression, a `Term`, or a whole `Objective` as ``flowcore show`` prints it.
Rules are found by the class name of the node (``_print_Add`` prints an `Add`), as sympy's
printers and the reference interpreter find theirs, so this module needs nothing from `nodes`
(which import it for their repr). Nodes of later stages print themselves (``pretty_parts``).
"""
from __future__ import annotations

import sympy

# Binding strength: higher binds tighter; an operand weaker than its context gets parentheses.
_SUM, _PRODUCT, _POWER, _ATOM = 1, 2, 3, 4


def pretty(value: object) -> str:
    """`value` in readable math: an expression of the language, a `Term` (its name, share, sampler
    and loss) or an `Objective` (its description, defaults and every term; ``flowcore show``)."""
    if type(value).__name__ == "Objective":
        return _objective(value)
    if type(value).__name__ == "Term":
        return _term(value)
    return _print(value)[0]


def show(value: sympy.Expr) -> str:
    """A coefficient as people write it: ``t - s``, ``1 - gamma``, ``s + gamma*(t - s)``."""
    return sympy.sstr(value, order="rev-lex", full_prec=False)


def _objective(objective) -> str:
    lines = [f"{objective.name}: {objective.description}".rstrip(": ")]
    if objective.equation:
        lines.append(f"  ({objective.equation})")
    lines.append(f"  interpolant {objective.interpolant}; σ = {objective.sigma:g}; reduction: {objective.reduction}")
    lines.extend("  " + _term(term) for term in objective.terms)
    return "\n".join(lines)


def _term(term) -> str:
    dropout = "; dropout" if getattr(term, "dropout", False) else ""
    return f"{term.name} (share {term.share:g}; {term.sampler}{dropout}):\n    {pretty(term.loss)}"


def _print(expr) -> tuple[str, int]:
    rule = globals().get("_print_" + type(expr).__name__)
    if rule is not None:
        return rule(expr)
    if hasattr(expr, "pretty_parts"):  # nodes of later stages print themselves
        return expr.pretty_parts(pretty, show), _ATOM
    raise TypeError(f"no printing rule for {type(expr).__name__}")


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


def _wrap(expr, strength: int) -> str:
    text, own = _print(expr)
    return f"({text})" if own < strength else text


def _product(coef: sympy.Expr, arg) -> tuple[str, int]:
    """``coef·arg``, or ``-arg`` for the coefficient -1."""
    if coef == -1:
        return "-" + _wrap(arg, _PRODUCT), _SUM
    text, strength = _coef(coef)
    coef_text = f"({text})" if strength < _PRODUCT else text
    return f"{coef_text}·{_wrap(arg, _PRODUCT)}", _PRODUCT


# -- one rule per node class ---------------------------------------------------------------------
def _print_Source(expr):
    return expr.name, _ATOM


_print_Var = _print_Source


def _print_Coef(expr):
    return _coef(expr.value)


def _print_Interp(expr):
    return f"I({show(expr.tau)})", _ATOM


def _print_Net(expr):
    return f"V({show(expr.a)}, {show(expr.b)}, {pretty(expr.x)})", _ATOM


def _print_FlowMap(expr):
    return f"X({show(expr.a)}, {show(expr.b)}, {pretty(expr.x)})", _ATOM


def _print_TeacherCall(expr):
    return f"Teacher({show(expr.a)}, {pretty(expr.x)})", _ATOM


def _print_LogVar(expr):
    return f"w({show(expr.a)}, {show(expr.b)})", _ATOM


def _print_Scale(expr):
    return _product(expr.coef, expr.arg)


def _print_Add(expr):
    parts = [pretty(expr.terms[0])]
    for term in expr.terms[1:]:
        if type(term).__name__ == "Scale" and _negative(term.coef):  # a - c·b, not a + (-c)·b
            text, strength = _print(term.arg) if term.coef == -1 else _product(-term.coef, term.arg)
            parts.append("- " + (f"({text})" if strength < _PRODUCT else text))
        else:
            parts.append("+ " + pretty(term))
    return " ".join(parts), _SUM


def _print_Mul(expr):
    return f"{_wrap(expr.left, _PRODUCT)} * {_wrap(expr.right, _POWER)}", _PRODUCT


def _print_Pow(expr):
    exponent = _coef(expr.exponent)[0] if expr.exponent >= 0 else f"({show(expr.exponent)})"
    return f"{_wrap(expr.base, _ATOM)}^{exponent}", _POWER


def _print_Func(expr):
    return f"{expr.name}({pretty(expr.arg)})", _ATOM


def _print_SqNorm(expr):
    return f"|{pretty(expr.arg)}|²", _ATOM


def _print_Dot(expr):
    return f"⟨{pretty(expr.left)}, {pretty(expr.right)}⟩", _ATOM


def _print_D(expr):
    return f"∂_{expr.tau}[{pretty(expr.arg)}]", _ATOM


def _print_Dx(expr):
    return f"∇_{expr.var.name}[{pretty(expr.arg)}]·{_wrap(expr.along, _ATOM)}", _PRODUCT


def _print_StopGrad(expr):
    return f"sg({pretty(expr.arg)})", _ATOM


def _print_Bind(expr):
    assigned = ", ".join(f"{var.name} := {pretty(value)}" for var, value in expr.bindings)
    return f"{_wrap(expr.arg, _ATOM)}[{assigned}]", _ATOM

