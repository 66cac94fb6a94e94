"""The pure-autograd reference interpreter: what every declaration MEANS.

It evaluates any expression with plain torch ops and is the ground truth the compiler is tested
against, so it shares no symbolic differentiation with it:

- ``D(e, τ)`` is ``torch.func.jvp`` of e's dependence on the per-sample values of τ (tangent 1);
- ``Dx(e, x, along=w)`` is a jvp in a per-sample scalar ε of e with x replaced by ``x + ε·w``;
- ``sg(e)`` re-evaluates e from *detached leaves* (parameters, x0, x1, z), so no gradient reaches
  them, while the times — the jvp variables — stay live: ``D(sg(e)) = sg(D(e))``. Stop-gradient
  is about parameters and inputs, never about the time algebra.
- a bound variable is a thunk of its defining expression in the scope where it was bound, so a
  derivative inside a binding holds it fixed (partial) and a derivative around it sees the chain
  through its value (total).

Thunks recompute instead of caching: a cached value could escape the jvp level it was built in.
The reference is for correctness, not speed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import sympy
import torch
from torch import nn

from .lang import nodes as n
from .lang.functions import FUNCTIONS
from .lang.interpolants import Interpolant
from .lang.numeric import evaluate_sympy
from .lang.objective import Objective, Term
from .terms import (Evaluation, TermResult, check_models, complete_batch, dropout_seeds_for, reduce_loss, term_slices,
                    term_times)

Thunk = Callable[[bool], torch.Tensor]


@dataclass(frozen=True)
class Scope:
    """What an expression sees: per-sample time values, bound variables, and whether it is under sg."""

    times: dict
    vars: dict
    stopped: bool = False

    def with_time(self, tau: sympy.Symbol, value: torch.Tensor) -> "Scope":
        return replace(self, times={**self.times, tau: value})

    def with_vars(self, values: dict[str, Thunk]) -> "Scope":
        return replace(self, vars={**self.vars, **values})


def _call(module: Callable, detached: bool, *args: torch.Tensor, **options) -> torch.Tensor:
    """Call `module` (with keyword `options`, e.g. a dropout seed); with `detached`, its parameters
    take no gradient."""
    if detached and isinstance(module, nn.Module):
        params = {name: p.detach() for name, p in module.named_parameters()}
        return torch.func.functional_call(module, params, args, options)
    return module(*args, **options)


class Interpreter:
    """Evaluates expressions of one batch: x0, x1, z of shape ``(B, *dims)``."""

    def __init__(self, net: Callable, x0: torch.Tensor, x1: torch.Tensor, interpolant: Interpolant,
                 z: torch.Tensor | None = None, teacher: Callable | None = None, weight_net: Callable | None = None,
                 dropout_seed: int | None = None):
        self.net, self.teacher, self.weight_net = net, teacher, weight_net
        # every network call of a dropout term passes its seed (flowcore.terms.draw_dropout_seeds)
        self.net_options = {} if dropout_seed is None else {"dropout_seed": dropout_seed}
        self.sources = {"x0": x0, "x1": x1, "z": z}
        self.interpolant = interpolant
        self.template = torch.empty(x1.shape[0], dtype=x1.dtype, device=x1.device)
        self.data_ndim = x1.ndim - 1

    # -- helpers ------------------------------------------------------------------------------
    def _per_sample(self, value: torch.Tensor) -> torch.Tensor:
        """A (B,) value shaped to broadcast over (B, *dims)."""
        return value.reshape(value.shape + (1,) * self.data_ndim)

    def _combine(self, op, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        if left.ndim < right.ndim:
            left = self._per_sample(left)
        elif right.ndim < left.ndim:
            right = self._per_sample(right)
        return op(left, right)

    def _coef(self, expr: sympy.Expr, scope: Scope) -> torch.Tensor:
        return evaluate_sympy(expr, scope.times, self.template)

    def _source(self, name: str, scope: Scope) -> torch.Tensor:
        value = self.sources[name]
        if value is None:
            raise ValueError(f"the expression uses `{name}`, but no `{name}` tensor was given")
        return value.detach() if scope.stopped else value

    # -- the interpreter ----------------------------------------------------------------------
    def evaluate(self, expr: n.Expr, scope: Scope) -> torch.Tensor:
        rule = getattr(self, "_eval_" + type(expr).__name__, None)
        if rule is None:
            raise TypeError(f"the reference has no rule for {type(expr).__name__} in `{expr}`")
        return rule(expr, scope)

    def _eval_Source(self, e: n.Source, scope: Scope):
        return self._source(e.name, scope)

    def _eval_Var(self, e: n.Var, scope: Scope):
        if e.name not in scope.vars:
            raise ValueError(f"free variable `{e.name}` is not bound here")
        return scope.vars[e.name](scope.stopped)

    def _eval_Coef(self, e: n.Coef, scope: Scope):
        return self._coef(e.value, scope)

    def _eval_Interp(self, e: n.Interp, scope: Scope):
        alpha, beta, gamma = (self._per_sample(self._coef(c, scope)) for c in self.interpolant.at(e.tau))
        value = alpha * self._source("x0", scope) + beta * self._source("x1", scope)
        if self.interpolant.stochastic:
            value = value + gamma * self._source("z", scope)
        return value

    def _eval_Net(self, e: n.Net, scope: Scope):
        a, b = self._coef(e.a, scope), self._coef(e.b, scope)
        return _call(self.net, scope.stopped, a, b, self.evaluate(e.x, scope), **self.net_options)

    def _eval_FlowMap(self, e: n.FlowMap, scope: Scope):
        a, b = self._coef(e.a, scope), self._coef(e.b, scope)
        x = self.evaluate(e.x, scope)
        return x + self._per_sample(b - a) * _call(self.net, scope.stopped, a, b, x, **self.net_options)

    def _eval_TeacherCall(self, e: n.TeacherCall, scope: Scope):
        if self.teacher is None:
            raise ValueError(f"`{e}` needs a teacher: pass teacher=<callable (t, x) -> velocity>")
        return _call(self.teacher, True, self._coef(e.a, scope), self.evaluate(e.x, scope))

    def _eval_LogVar(self, e: n.LogVar, scope: Scope):
        if self.weight_net is None:
            raise ValueError(f"`{e}` needs a log-variance head: pass weight_net=<module (s, t) -> (B,)>")
        a, b = self._coef(e.a, scope), self._coef(e.b, scope)
        return _call(self.weight_net, scope.stopped, a, b).reshape(self.template.shape)

    def _eval_Scale(self, e: n.Scale, scope: Scope):
        return self._combine(torch.mul, self._coef(e.coef, scope), self.evaluate(e.arg, scope))

    def _eval_Add(self, e: n.Add, scope: Scope):
        total = self.evaluate(e.terms[0], scope)
        for term in e.terms[1:]:
            total = self._combine(torch.add, total, self.evaluate(term, scope))
        return total

    def _eval_Mul(self, e: n.Mul, scope: Scope):
        return self._combine(torch.mul, self.evaluate(e.left, scope), self.evaluate(e.right, scope))

    def _eval_Pow(self, e: n.Pow, scope: Scope):
        exponent = int(e.exponent) if e.exponent.is_Integer else float(e.exponent)
        return self.evaluate(e.base, scope) ** exponent

    def _eval_Func(self, e: n.Func, scope: Scope):
        # the table's torch function; its derivatives are autograd's, never the table's rule
        return FUNCTIONS[e.name].torch_function(self.evaluate(e.arg, scope))

    def _eval_SqNorm(self, e: n.SqNorm, scope: Scope):
        return self.evaluate(e.arg, scope).square().flatten(1).sum(1)

    def _eval_Dot(self, e: n.Dot, scope: Scope):
        return (self.evaluate(e.left, scope) * self.evaluate(e.right, scope)).flatten(1).sum(1)

    def _eval_D(self, e: n.D, scope: Scope):
        if e.tau not in scope.times:
            raise ValueError(f"`{e}` differentiates in `{e.tau}`, which has no value here")
        value = scope.times[e.tau]
        _, tangent = torch.func.jvp(lambda v: self.evaluate(e.arg, scope.with_time(e.tau, v)),
                                    (value,), (torch.ones_like(value),))
        return tangent

    def _eval_Dx(self, e: n.Dx, scope: Scope):
        if e.var.name not in scope.vars:
            raise ValueError(f"`{e}` differentiates in `{e.var.name}`, which is not bound here")
        base = scope.vars[e.var.name]

        def direction(stopped: bool) -> torch.Tensor:
            return self.evaluate(e.along, replace(scope, stopped=scope.stopped or stopped))

        def moved(eps: torch.Tensor) -> torch.Tensor:
            shifted = lambda stopped: base(stopped) + self._per_sample(eps) * direction(stopped)  # noqa: E731
            return self.evaluate(e.arg, scope.with_vars({e.var.name: shifted}))

        eps = torch.zeros_like(self.template)
        _, tangent = torch.func.jvp(moved, (eps,), (torch.ones_like(eps),))
        return tangent

    def _eval_StopGrad(self, e: n.StopGrad, scope: Scope):
        return self.evaluate(e.arg, replace(scope, stopped=True))

    def _eval_Bind(self, e: n.Bind, scope: Scope):
        def thunk(value: n.Expr) -> Thunk:
            return lambda stopped: self.evaluate(value, replace(scope, stopped=scope.stopped or stopped))

        return self.evaluate(e.arg, scope.with_vars({var.name: thunk(value) for var, value in e.bindings}))


# -- objectives -------------------------------------------------------------------------------------
def evaluate_term(term: Term, net: Callable, x0: torch.Tensor, x1: torch.Tensor, times: dict, *,
                  interpolant: Interpolant, z: torch.Tensor | None = None, teacher: Callable | None = None,
                  weight_net: Callable | None = None, dropout_seed: int | None = None) -> torch.Tensor:
    """Per-sample losses ``(B,)`` of one term at the given per-sample times."""
    term.check_weights(times)  # a weight sympy could not sign is checked at the first evaluation
    interpreter = Interpreter(net, x0, x1, interpolant, z=z, teacher=teacher, weight_net=weight_net,
                              dropout_seed=dropout_seed)
    return interpreter.evaluate(term.loss, Scope(times=dict(times), vars={}))


def evaluate(objective: Objective, net: Callable, x1: torch.Tensor, x0: torch.Tensor | None = None, *,
             z: torch.Tensor | None = None, times: dict | None = None, generator: torch.Generator | None = None,
             teacher: Callable | None = None, weight_net: Callable | None = None,
             interpolant: Interpolant | None = None, reduction: str | None = None,
             dropout_seeds: dict[str, int] | None = None) -> Evaluation:
    """Evaluate `objective` on a batch of data `x1` (``(B, *dims)``) with network ``net(s, t, x)``.

    x0 (and z for a stochastic interpolant) default to ``σ·N(0, I)`` draws; each term takes its
    share of the batch, in order, and draws its times from its sampler unless `times` gives them
    as ``{term name: {symbol: (count,) tensor}}``. A network with dropout (a ``dropout_rate`` > 0,
    in training mode) gets a seed per dropout term from `dropout_seeds` (``{term name: int}``), else
    drawn after the times (flowcore.terms.draw_dropout_seeds). The loss is reduced as `reduction`
    says (docs/math.md §3; default: the objective's).
    """
    interpolant = interpolant or objective.interpolant
    x0, z = complete_batch(objective, interpolant, x1, x0, z, generator)
    check_models(objective, teacher, weight_net)
    parts = term_slices(objective, x1.shape[0])
    all_times = [term_times(term, times, part.stop - part.start, generator, x1) for term, part in parts]
    dropout_seeds = dropout_seeds_for(objective, net, dropout_seeds, generator)
    results: dict[str, TermResult] = {}
    for (term, part), times_k in zip(parts, all_times):
        per_sample = evaluate_term(term, net, x0[part], x1[part], times_k, interpolant=interpolant,
                                   z=None if z is None else z[part], teacher=teacher, weight_net=weight_net,
                                   dropout_seed=dropout_seeds.get(term.name))
        results[term.name] = TermResult(per_sample, times_k)
    loss = reduce_loss([r.per_sample for r in results.values()], x1.shape[0], reduction or objective.reduction)
    return Evaluation(loss=loss, terms=results)
