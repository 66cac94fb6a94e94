"""The language's elementwise functions: ONE table that every layer reads.

An entry says everything a layer needs about one function f:

- ``sympy``: f on sympy expressions. The language constructors apply it to a coefficient of the
  times, `lower` to a kernel's per-element expression, and kernel differentiation (`sympy.diff`)
  takes its derivative from sympy.
- ``derivative``: f'(u) as a sympy expression of u. The compiler's `differentiate` writes it in the
  language at the argument (docs/design.md, the passes); a sympy function defined here (see `softplus`)
  differentiates by it too. The reference interpreter never reads it: it differentiates ``torch``
  with autograd, so the two stay independent and the tests compare them.
- ``torch``: the dotted name of the torch function: the reference interpreter and numerical
  coefficients call it, the torch backend's generated code spells it.
- ``c``: the wrapper of ``codegen/cxx/include/flowcore_kernel.h`` that C++ and CUDA kernels call.
  The header defines one overload per accumulator type (float for float, half and bfloat16
  kernels; double for double), so a float kernel never computes in double.
- ``positive_domain``: f is only defined (or only smooth) for positive arguments; test strategies
  and domain checks feed it positive values.

Adding a function is one entry here. Where sympy has no such function, a small `sympy.Function`
subclass goes next to the table (as `softplus`: its derivative is the entry's, numbers evaluate by
its formula); where C has no such function, one ``fc_<name>`` definition goes into
flowcore_kernel.h (as ``fc_softplus``). Nothing else changes: constructors, reference, compiler,
printers and tests are generated from the table.

sympy functions that only appear inside coefficients of the times (``tan``, ``Abs``, …) are not
language functions: the numerical evaluator (`numeric`) and the C++ printer list those themselves.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property, reduce
from typing import Callable

import sympy

Rule = Callable[[sympy.Expr], sympy.Expr]


class softplus(sympy.Function):  # noqa: N801 - sympy's convention: functions are lower-case classes
    """``softplus(u) = log(1 + eᵘ)`` as one sympy function, so kernels call the overflow-free
    ``fc_softplus`` instead of ``log(1 + exp(u))`` (which is inf for u ≳ 89 in float)."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return FUNCTIONS["softplus"].derivative(self.args[0])

    def _eval_evalf(self, prec: int) -> sympy.Expr:
        return sympy.log(1 + sympy.exp(self.args[0]))._eval_evalf(prec)

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real


@dataclass(frozen=True)
class Function:
    """One elementwise function of the language; see the module docstring for what reads each field."""

    name: str
    sympy: Rule
    derivative: Rule
    torch: str
    c: str
    positive_domain: bool = False

    @cached_property
    def torch_function(self) -> Callable:
        """The torch function ``torch`` names (resolved on first use)."""
        module, *path = self.torch.split(".")
        return reduce(getattr, path, importlib.import_module(module))

    @property
    def sympy_name(self) -> str:
        """The name of the sympy class an application of ``sympy`` builds (how printers find it)."""
        return self.sympy.__name__


FUNCTIONS: dict[str, Function] = {f.name: f for f in (
    Function("exp", sympy.exp, lambda u: sympy.exp(u), "torch.exp", "fc_exp"),
    Function("log", sympy.log, lambda u: 1 / u, "torch.log", "fc_log", positive_domain=True),
    Function("sin", sympy.sin, lambda u: sympy.cos(u), "torch.sin", "fc_sin"),
    Function("cos", sympy.cos, lambda u: -sympy.sin(u), "torch.cos", "fc_cos"),
    Function("tanh", sympy.tanh, lambda u: 1 - sympy.tanh(u) ** 2, "torch.tanh", "fc_tanh"),
    # sympy writes sqrt(u) as the power u**(1/2); every printer prints that power as sqrt.
    Function("sqrt", sympy.sqrt, lambda u: 1 / (2 * sympy.sqrt(u)), "torch.sqrt", "fc_sqrt", positive_domain=True),
    Function("softplus", softplus, lambda u: 1 / (1 + sympy.exp(-u)), "torch.nn.functional.softplus",
             "fc_softplus"),
)}

#: sympy class name -> entry, for the layers that meet the functions as sympy expressions
BY_SYMPY_NAME: dict[str, Function] = {f.sympy_name: f for f in FUNCTIONS.values()}
