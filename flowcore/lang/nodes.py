"""Immutable expression nodes of the objective language.

Every node has a *kind*: ``tensor`` (one ``(*dims)`` array per sample, the data's shape),
``scalar`` (one number per sample, e.g. ``sqnorm(...)``) or ``coef`` (a sympy expression of the
per-sample times, which broadcasts against both). Nodes are frozen, compare structurally and hash
by content, so identical sub-expressions are recognised wherever they occur.

Construction checks what it can see locally (operand kinds, that `D` is taken in a time, that `Dx`
is taken in a variable along a tensor, that a binding names a free variable) and raises
`DeclarationError` naming the offending sub-expression. Checks that need the whole term (unbound
variables, times a sampler must produce) live in `objective.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from typing import ClassVar

import sympy

from .errors import DeclarationError
from .functions import FUNCTIONS
from .printing import pretty
from .symbols import Param, Time, coefficient, time_coefficient

TENSOR, SCALAR, COEF = "tensor", "scalar", "coef"

SOURCES = ("x0", "x1", "z")


def as_expr(value: object, where: str = "an operand") -> "Expr":
    """An `Expr` as it is, a number or sympy expression of the times as a `Coef`."""
    if isinstance(value, Expr):
        return value
    return Coef(coefficient(value, where))


@dataclass(frozen=True, eq=False, repr=False)
class Expr:
    """Base of all nodes: structural equality, cached hash, arithmetic, readable repr."""

    kind: ClassVar[str] = TENSOR

    def children(self) -> tuple["Expr", ...]:
        return tuple(v for f in fields(self) for v in _flatten(getattr(self, f.name)) if isinstance(v, Expr))

    def key(self) -> tuple:
        return (type(self).__name__,) + tuple(getattr(self, f.name) for f in fields(self))

    @cached_property
    def _hash(self) -> int:
        return hash(self.key())

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return type(self) is type(other) and self._hash == other._hash and self.key() == other.key()

    def __repr__(self) -> str:
        return pretty(self)

    # -- arithmetic ---------------------------------------------------------------------------
    def __add__(self, other):
        return add(self, as_expr(other))

    def __radd__(self, other):
        return add(as_expr(other), self)

    def __sub__(self, other):
        return add(self, scale(-1, as_expr(other)))

    def __rsub__(self, other):
        return add(as_expr(other), scale(-1, self))

    def __neg__(self):
        return scale(-1, self)

    def __mul__(self, other):
        return mul(self, as_expr(other))

    def __rmul__(self, other):
        return mul(as_expr(other), self)

    def __truediv__(self, other):
        other = as_expr(other, "a divisor")
        if isinstance(other, Coef):
            if other.value == 0:
                raise DeclarationError(f"{self} / 0", "division by zero")
            return scale(1 / other.value, self)
        return mul(self, power(other, -1))

    def __rtruediv__(self, other):
        return mul(as_expr(other), power(self, -1))

    def __pow__(self, exponent):
        return power(self, exponent)


def _flatten(value):
    if isinstance(value, tuple):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def _require(node: Expr, kinds: tuple[str, ...], role: str, where: object) -> None:
    if node.kind not in kinds:
        raise DeclarationError(where, f"shape-incompatible operand: {role} `{node}` is a {node.kind}, "
                                      f"expected a {' or '.join(kinds)}")


# -- leaves --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class Source(Expr):
    """A batch tensor: ``x0`` (noise), ``x1`` (data) or ``z`` (the stochastic interpolant's noise)."""

    name: str

    def __post_init__(self):
        if self.name not in SOURCES:
            raise DeclarationError(self.name, f"unknown source tensor; the sources are {', '.join(SOURCES)}")


@dataclass(frozen=True, eq=False, repr=False)
class Var(Expr):
    """A free tensor variable, bound later with ``expr.bind(x=...)``."""

    name: str

    def __post_init__(self):
        if not self.name.isidentifier():
            raise DeclarationError(self.name, "a variable name must be a Python identifier")


@dataclass(frozen=True, eq=False, repr=False)
class Coef(Expr):
    """A sympy expression of the per-sample times; broadcasts over scalars and tensors."""

    kind: ClassVar[str] = COEF
    value: sympy.Expr


# -- calls ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class Interp(Expr):
    """``I(τ) = α(τ)·x0 + β(τ)·x1 (+ γ(τ)·z)`` for the objective's interpolant (docs/math.md §1)."""

    tau: sympy.Expr

    def __post_init__(self):
        object.__setattr__(self, "tau", time_coefficient(self.tau, f"the time of I({self.tau})"))


@dataclass(frozen=True, eq=False, repr=False)
class _TwoTimeCall(Expr):
    """A call at times (a, b) on a tensor x."""

    a: sympy.Expr
    b: sympy.Expr
    x: Expr

    def __post_init__(self):
        _call_times(self, ("a", "b"))
        _require(self.x, (TENSOR,), "the input", self)


@dataclass(frozen=True, eq=False, repr=False)
class Net(_TwoTimeCall):
    """``V(a, b, x)``: the network's velocity v̂_{a,b}(x)."""


@dataclass(frozen=True, eq=False, repr=False)
class FlowMap(_TwoTimeCall):
    """``X(a, b, x) = x + (b − a)·V(a, b, x)``: the flow map's parameterisation (docs/math.md §1)."""


@dataclass(frozen=True, eq=False, repr=False)
class TeacherCall(Expr):
    """``Teacher(a, x)``: a frozen pretrained velocity b̂_a(x) (distillation objectives)."""

    a: sympy.Expr
    x: Expr

    def __post_init__(self):
        _call_times(self, ("a",))
        _require(self.x, (TENSOR,), "the input", self)


@dataclass(frozen=True, eq=False, repr=False)
class LogVar(Expr):
    """``w(a, b)``: the learned log-variance head's per-sample output (docs/math.md §3)."""

    kind: ClassVar[str] = SCALAR
    a: sympy.Expr
    b: sympy.Expr

    def __post_init__(self):
        _call_times(self, ("a", "b"))


def _call_times(node: Expr, names: tuple[str, ...]) -> None:
    for name in names:
        object.__setattr__(node, name, time_coefficient(getattr(node, name), f"the time argument `{name}`"))


# -- algebra -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class Scale(Expr):
    """``c·e`` with c a sympy coefficient of the times."""

    coef: sympy.Expr
    arg: Expr

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.arg.kind


@dataclass(frozen=True, eq=False, repr=False)
class Add(Expr):
    """A sum of operands of one kind (coefficients broadcast)."""

    terms: tuple[Expr, ...]

    @property
    def kind(self) -> str:  # type: ignore[override]
        kinds = {term.kind for term in self.terms} - {COEF}
        return kinds.pop() if kinds else COEF


@dataclass(frozen=True, eq=False, repr=False)
class Mul(Expr):
    """Elementwise product; a per-sample scalar broadcasts over a tensor."""

    left: Expr
    right: Expr

    @property
    def kind(self) -> str:  # type: ignore[override]
        return TENSOR if TENSOR in (self.left.kind, self.right.kind) else SCALAR


@dataclass(frozen=True, eq=False, repr=False)
class Pow(Expr):
    """``e ** n`` with a constant exponent n."""

    base: Expr
    exponent: sympy.Expr

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.base.kind


@dataclass(frozen=True, eq=False, repr=False)
class Func(Expr):
    """An elementwise function of the table in `functions` (exp, log, sin, …), by its name."""

    name: str
    arg: Expr

    def __post_init__(self):
        if self.name not in FUNCTIONS:
            raise DeclarationError(self.name, f"unknown function; the language has {', '.join(FUNCTIONS)}")

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.arg.kind


def scale(coef: object, arg: Expr) -> Expr:
    c = coefficient(coef, "a coefficient")
    if isinstance(arg, Coef):
        return Coef(c * arg.value)
    if isinstance(arg, Scale):
        return scale(c * arg.coef, arg.arg)
    return arg if c == 1 else Scale(c, arg)


def add(left: Expr, right: Expr) -> Expr:
    if isinstance(left, Coef) and isinstance(right, Coef):
        return Coef(left.value + right.value)
    kinds = {left.kind, right.kind} - {COEF}
    if len(kinds) > 1:
        raise DeclarationError(f"{left} + {right}", f"shape-incompatible operands: cannot add the "
                                                      f"{left.kind} `{left}` and the {right.kind} `{right}`")
    terms = tuple(left.terms if isinstance(left, Add) else (left,)) + tuple(
        right.terms if isinstance(right, Add) else (right,))
    return Add(terms)


def mul(left: Expr, right: Expr) -> Expr:
    if isinstance(left, Coef):
        return scale(left.value, right)
    if isinstance(right, Coef):
        return scale(right.value, left)
    return Mul(left, right)


def power(base: Expr, exponent: object) -> Expr:
    n = coefficient(exponent, "an exponent")
    if n.free_symbols:
        raise DeclarationError(f"({base})^({n})", "an exponent must be a constant, not a function of the times")
    if isinstance(base, Coef):
        return Coef(base.value ** n)
    return base if n == 1 else Pow(base, n)


# -- reductions ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class SqNorm(Expr):
    """``|e|²``: the per-sample sum of squares over all data dimensions."""

    kind: ClassVar[str] = SCALAR
    arg: Expr

    def __post_init__(self):
        _require(self.arg, (TENSOR,), "the argument of sqnorm", self.arg)


@dataclass(frozen=True, eq=False, repr=False)
class Dot(Expr):
    """``⟨a, b⟩``: the per-sample inner product over all data dimensions."""

    kind: ClassVar[str] = SCALAR
    left: Expr
    right: Expr

    def __post_init__(self):
        _require(self.left, (TENSOR,), "the left operand of dot", f"dot({self.left}, {self.right})")
        _require(self.right, (TENSOR,), "the right operand of dot", f"dot({self.left}, {self.right})")


# -- derivatives and stop-gradient ----------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class D(Expr):
    """Total derivative in the time `tau`, holding x0, x1, z and free variables fixed."""

    arg: Expr
    tau: Time

    def __post_init__(self):
        object.__setattr__(self, "arg", as_expr(self.arg, "the argument of D"))
        tau = self.tau
        if isinstance(tau, Param):
            raise DeclarationError(f"D({self.arg}, {tau})", f"`{tau}` is a per-sample parameter, not a time: "
                                                            "derivatives are taken in times only")
        if not isinstance(tau, Time):
            raise DeclarationError(f"D({self.arg}, {tau})", f"the derivative must be taken in a time symbol "
                                                            f"(flowcore.times), got `{tau}`")

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.arg.kind


@dataclass(frozen=True, eq=False, repr=False)
class Dx(Expr):
    """Directional derivative of `arg` in the free variable `var` along the tensor `along`."""

    arg: Expr
    var: Var
    along: Expr

    def __post_init__(self):
        where = f"Dx({self.arg}, {self.var}, along={self.along})"
        if not isinstance(self.var, Var):
            raise DeclarationError(where, f"Dx differentiates in a free variable (flowcore.Var), got `{self.var}`")
        if not isinstance(self.along, Expr) or self.along.kind != TENSOR:
            kind = self.along.kind if isinstance(self.along, Expr) else type(self.along).__name__
            raise DeclarationError(where, f"Dx must be taken along a tensor, `{self.along}` is a {kind}")

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.arg.kind


@dataclass(frozen=True, eq=False, repr=False)
class StopGrad(Expr):
    """``sg(e)``: e's value (and its time derivatives) with no gradient to parameters or inputs."""

    arg: Expr

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.arg.kind


@dataclass(frozen=True, eq=False, repr=False)
class Bind(Expr):
    """``e[x := value]``: evaluate e with free variables bound to tensors of the enclosing scope.

    Derivatives inside e hold x fixed (partial); derivatives of the whole Bind see the chain through
    the bound value (total).
    """

    arg: Expr
    bindings: tuple[tuple[Var, Expr], ...]

    def __post_init__(self):
        free = free_vars(self.arg)
        for var, value in self.bindings:
            if var.name not in free:
                raise DeclarationError(self.arg, f"unknown variable `{var.name}` in bind(): it is not a free "
                                                 f"variable of this expression (free: {sorted(free) or 'none'})")
            _require(value, (TENSOR,), f"the value bound to `{var.name}`", self)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.arg.kind


def free_vars(expr: Expr) -> frozenset[str]:
    """Names of the variables used in `expr` and not bound inside it (here, not in `analysis`:
    a `Bind` checks its names against them when it is built)."""
    if isinstance(expr, Var):
        return frozenset({expr.name})
    if isinstance(expr, Bind):
        inner = free_vars(expr.arg) - {var.name for var, _ in expr.bindings}
        return inner.union(*(free_vars(value) for _, value in expr.bindings))
    return frozenset().union(*(free_vars(child) for child in expr.children()))


def bind(expr: Expr, **values: object) -> Bind:
    """Bind free variables by name: ``bind(e, x=I(s))``."""
    return Bind(expr, tuple((Var(name), as_expr(value, f"the value of `{name}`")) for name, value in values.items()))


Expr.bind = bind  # type: ignore[attr-defined]
