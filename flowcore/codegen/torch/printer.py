"""sympy → torch expressions. Python float constants adopt the tensor's dtype (weak typing), so
no constant silently promotes a float32 kernel to float64."""
from __future__ import annotations

import sympy
from sympy.printing.pytorch import TorchPrinter

from ...lang.functions import BY_SYMPY_NAME


class KernelTorchPrinter(TorchPrinter):
    def _print_Symbol(self, expr):
        return expr.name

    def _print_Function(self, expr):
        if expr.is_number:  # a constant like exp(2): a Python float, never a tensor op on a number
            return repr(float(expr))
        entry = BY_SYMPY_NAME.get(type(expr).__name__)
        if entry is not None:  # the function table's torch spelling
            return f"{entry.torch}({self._print(expr.args[0])})"
        return super()._print_Function(expr)

    def _print_Pow(self, expr):
        if expr.is_number:
            return repr(float(expr))
        base, exponent = expr.args
        if exponent == sympy.Rational(1, 2):
            return f"torch.sqrt({self._print(base)})"
        if exponent.is_Integer and 1 < int(exponent) <= 4:  # a product, parenthesized: it may divide
            factor = self.parenthesize(base, 100)
            return "(" + "*".join([factor] * int(exponent)) + ")"
        return super()._print_Pow(expr)

    def _print_NumberSymbol(self, expr):
        return repr(float(expr))


_printer = KernelTorchPrinter()


def torch_code(expr: sympy.Expr) -> str:
    if expr.is_number:
        return repr(float(expr))
    return _printer.doprint(expr)
