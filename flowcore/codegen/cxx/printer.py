"""sympy → C++ expressions in the accumulator type ``acc_t`` (shared by the `cpu` and `cuda` backends).

Stock sympy printers write double constants (``3.0/2.0``, ``M_PI``) and ``std::pow`` into code that
may be instantiated for float; this printer casts EVERY constant to ``acc_t`` (``acc_t(2)``,
``acc_t(0.5)``, ``acc_t(1)/acc_t(3)``), folds constant subexpressions (``sqrt(2)``, ``pi/2``)
to one cast literal, writes small integer powers as multiplications, and calls the header's
per-precision wrappers (``fc_exp``, ``fc_sqrt``, …) — so a float kernel does float math only.
"""
from __future__ import annotations

import math
import re

import sympy
from sympy.printing.cxx import CXX17CodePrinter
from sympy.printing.precedence import PRECEDENCE

from ...lang.functions import FUNCTIONS as LANGUAGE_FUNCTIONS

ACC = "acc_t"

#: sympy function class name -> the header's wrapper (flowcore_kernel.h): the language's functions
#: (their table), and the sympy functions coefficients of the times and their derivatives contain
FUNCTIONS = {
    **{f.sympy_name: f.c for f in LANGUAGE_FUNCTIONS.values()},
    "tan": "fc_tan", "sinh": "fc_sinh", "cosh": "fc_cosh", "asin": "fc_asin", "acos": "fc_acos",
    "atan": "fc_atan", "asinh": "fc_asinh", "acosh": "fc_acosh", "atanh": "fc_atanh", "erf": "fc_erf",
    "erfc": "fc_erfc", "Abs": "fc_abs", "sign": "fc_sign", "floor": "fc_floor", "ceiling": "fc_ceil",
    "Heaviside": "fc_heaviside", "atan2": "fc_atan2",
}

#: integer powers up to this are written as products
MAX_PRODUCT_POWER = 8

_FLOAT_LITERAL = re.compile(r"(?<![\w.])(?:\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][-+]?\d+)[fFlL]?(?![\w.])")


def float_literal(value: float) -> str:
    """A C++ double literal that round-trips `value` exactly (``0.5``, ``1e-05``, ``3.0``)."""
    if math.isnan(value):
        return f"fc_nan<{ACC}>()"
    if math.isinf(value):
        return f"fc_inf<{ACC}>()" if value > 0 else f"(-fc_inf<{ACC}>())"
    text = repr(float(value))
    return text if any(c in text for c in ".e") else text + ".0"


def cast(value) -> str:
    """``acc_t(<value>)`` for an int or a float; inf/nan through the header's helpers."""
    if isinstance(value, int):
        return f"{ACC}({value})"
    literal = float_literal(value)
    return literal if literal.startswith(("fc_", "(-fc_")) else f"{ACC}({literal})"


class KernelCxxPrinter(CXX17CodePrinter):
    """Prints one expression of a kernel; `names` maps symbols to their C++ variable names."""

    def __init__(self, names: dict[sympy.Symbol, str] | None = None):
        super().__init__({"strict": False})
        self.names = names or {}

    # -- leaves -----------------------------------------------------------------------------------
    def _print_Symbol(self, expr):
        return self.names.get(expr, expr.name)

    def _print_Integer(self, expr):
        return cast(int(expr))

    _print_Zero = _print_One = _print_NegativeOne = _print_Integer

    def _print_Rational(self, expr):
        p, q = int(expr.p), int(expr.q)
        if q & (q - 1) == 0:  # a power of two: the decimal is exact in binary
            return cast(p / q)
        return f"({cast(p)}/{cast(q)})"

    _print_Half = _print_Rational

    def _print_Float(self, expr):
        return cast(float(expr))

    def _print_NumberSymbol(self, expr):  # pi, E, EulerGamma, ...
        return cast(float(expr))

    _print_Pi = _print_Exp1 = _print_EulerGamma = _print_GoldenRatio = _print_Catalan = _print_NumberSymbol

    def _print_Infinity(self, expr):
        return f"fc_inf<{ACC}>()"

    def _print_NegativeInfinity(self, expr):
        return f"(-fc_inf<{ACC}>())"

    def _print_NaN(self, expr):
        return f"fc_nan<{ACC}>()"

    def _print(self, expr, **kwargs):
        # A constant subexpression other than a plain integer/rational (sqrt(2), pi/2, cos(1)) is
        # folded to one correctly rounded double, cast to acc_t.
        if isinstance(expr, sympy.Expr) and expr.is_number and not expr.is_Rational and expr.is_finite is not False:
            value = complex(expr.evalf(20))
            if value.imag != 0:
                raise ValueError(f"flowcore: the constant `{expr}` is not real; it cannot appear in a kernel")
            return cast(value.real)
        return super()._print(expr, **kwargs)

    # -- operators --------------------------------------------------------------------------------
    def _print_Mul(self, expr):
        # The numeric factors (a rational coefficient, pi, sqrt(2), ...) become ONE leading
        # constant; the rest prints as sympy would (numerator/denominator).
        factors = sympy.Mul.make_args(expr)
        numeric = [f for f in factors if f.is_number]
        if not numeric:
            return super()._print_Mul(expr)
        rest = sympy.Mul(*[f for f in factors if not f.is_number])
        coeff = sympy.Mul(*numeric)
        if not coeff.is_Rational:
            value = complex(coeff.evalf(20))
            if value.imag != 0:
                raise ValueError(f"flowcore: the constant `{coeff}` is not real; it cannot appear in a kernel")
            coeff = sympy.Float(value.real, 17)
        sign = "-" if coeff < 0 else ""
        coeff = -coeff if coeff < 0 else coeff
        body = self._print(rest) if rest.is_Mul else self.parenthesize(rest, PRECEDENCE["Mul"])
        if coeff == 1:
            return sign + body
        if coeff.is_Rational and coeff.q != 1 and coeff.q & (coeff.q - 1) != 0:
            numerator = body if coeff.p == 1 else f"{cast(int(coeff.p))}*{body}"
            return f"{sign}{numerator}/{cast(int(coeff.q))}"
        return f"{sign}{self._print(coeff)}*{body}"

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        b = self.parenthesize(base, 100)  # tighter than any binary operator
        if exponent.is_Integer:
            n = int(exponent)
            if n == 0:
                return cast(1)
            if abs(n) <= MAX_PRODUCT_POWER:
                product = "*".join([b] * abs(n))
                product = product if abs(n) == 1 else f"({product})"
                return product if n > 0 else f"({cast(1)}/{product})"
            return f"fc_pow({self._print(base)}, {cast(n)})"
        if exponent == sympy.Rational(1, 2):
            return f"fc_sqrt({self._print(base)})"
        if exponent == sympy.Rational(-1, 2):
            return f"({cast(1)}/fc_sqrt({self._print(base)}))"
        return f"fc_pow({self._print(base)}, {self._print(exponent)})"

    # -- functions --------------------------------------------------------------------------------
    def _print_Function(self, expr):
        name = type(expr).__name__
        if name in FUNCTIONS:
            return f"{FUNCTIONS[name]}({', '.join(self._print(arg) for arg in expr.args)})"
        raise NotImplementedError(
            f"flowcore's C++ printer has no translation for `{name}` (in `{expr}`); supported: "
            f"{', '.join(sorted(FUNCTIONS))}, Max, Min, +, *, **")

    _print_exp = _print_log = _print_sin = _print_cos = _print_tan = _print_Function
    _print_sinh = _print_cosh = _print_tanh = _print_asin = _print_acos = _print_atan = _print_Function
    _print_asinh = _print_acosh = _print_atanh = _print_erf = _print_erfc = _print_Function
    _print_Abs = _print_sign = _print_floor = _print_ceiling = _print_Heaviside = _print_atan2 = _print_Function

    def _print_DiracDelta(self, expr):
        # d/dx of sign/Abs/Heaviside: zero almost everywhere, as autograd has it.
        return cast(0)

    def _minmax(self, expr, wrapper):
        args = [self._print(arg) for arg in expr.args]
        out = args[0]
        for arg in args[1:]:
            out = f"{wrapper}({out}, {arg})"
        return out

    def _print_Max(self, expr):
        return self._minmax(expr, "fc_max")

    def _print_Min(self, expr):
        return self._minmax(expr, "fc_min")

    def _print_Piecewise(self, expr):
        raise NotImplementedError(f"flowcore's C++ printer does not support Piecewise (in `{expr}`)")


def cxx_code(expr: sympy.Expr, names: dict[sympy.Symbol, str] | None = None) -> str:
    """`expr` as a C++ expression of type acc_t."""
    return KernelCxxPrinter(names).doprint(sympy.sympify(expr))


def double_literals(text: str) -> list[str]:
    """Floating-point literals in `text` that are NOT the direct argument of an ``acc_t(...)`` cast.

    Comments are ignored. An empty list means every floating constant is cast to the kernel's
    accumulator type (so a float kernel contains no double arithmetic).
    """
    code = re.sub(r"//[^\n]*", "", text)
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.DOTALL)
    code = re.sub(rf"\b{ACC}\(\s*-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?\s*\)", f"{ACC}(C)", code)
    return _FLOAT_LITERAL.findall(code)
