"""The objective language (docs/design.md "The language"): times, tensors, calls, derivatives, terms."""
from .analysis import derivative_order, derivatives, free_vars, symbols_used, walk
from .constructors import ELEMENTWISE, D, Ds, Dt, Du, Dx, I, Teacher, TeacherMap, V, Var, X, dot, sg, sqnorm, x0, x1, z
from .errors import DeclarationError
from .interpolants import Interpolant, custom, linear, trig
from .nodes import Expr, bind
from .objective import REDUCTIONS, Objective, Term
from .printing import pretty
from .samplers import (Constant, Derived, Diagonal, Dyadic, Joint, Square, TimeSampler, Uniform, UpperTriangle,
                       between)
from .symbols import Param, Time, param, s, t, times, u
from .weights import adaptive, fixed, learned_logvar

globals().update(ELEMENTWISE)  # exp, log, …, one per entry of the function table (functions.py)

__all__ = [
    "D", "Ds", "Dt", "Du", "Dx", "I", "Teacher", "TeacherMap", "V", "Var", "X", "dot", "sg", "sqnorm", "x0", "x1", "z",
    "DeclarationError", "Interpolant", "custom", "linear", "trig", "Expr", "bind", "REDUCTIONS", "Objective", "Term",
    "pretty", "Constant", "Derived", "Diagonal", "Dyadic", "Joint",
    "Square", "TimeSampler", "Uniform", "UpperTriangle", "between", "Param", "Time", "param", "s", "t", "times", "u",
    "adaptive", "fixed", "learned_logvar", "derivative_order", "derivatives", "free_vars", "symbols_used", "walk",
    *ELEMENTWISE,
]
