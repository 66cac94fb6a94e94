"""Pieces the built-in objectives share: the diagonal terms, the default samplers, assembly."""
from __future__ import annotations

import numbers

from flowcore.lang import (Dt, I, Objective, Teacher, Term, TimeSampler, Uniform, UpperTriangle, V, Var, X, param,
                           s, sg, sqnorm, t, u)
from flowcore.lang.nodes import Expr

ETA = 0.75  # the paper's diagonal share (docs/math.md §3)
gamma = param("gamma")


def flow_matching_term(share: float) -> Term:
    """The tangent condition by flow matching: ``|v̂_{t,t}(I_t) − İ_t|²`` (docs/math.md §1, L_b)."""
    return Term("fm", sqnorm(V(t, t, I(t)) - Dt(I(t))), Uniform(t), share)


def teacher_diagonal_term(share: float) -> Term:
    """The diagonal distilled from the teacher: ``|v̂_{t,t}(I_t) − b̂_t(I_t)|²``."""
    return Term("diagonal", sqnorm(V(t, t, I(t)) - Teacher(t, I(t))), Uniform(t), share)


def upper_triangle() -> TimeSampler:
    """``s = min(U, U')``, ``t = max(U, U')`` (docs/math.md §3)."""
    return UpperTriangle(s, t)


def psd_residual() -> Expr:
    """``v̂_{s,t}(x) − sg(γ·v̂_{s,u}(x) + (1 − γ)·v̂_{u,t}(X̂_{s,u}(x)))`` at x = I_s, u = s + γ(t − s).

    The semigroup identity X_{u,t} ∘ X_{s,u} = X_{s,t} divided by (t − s) (docs/math.md §2, PSD):
    u − s = γ(t − s) and t − u = (1 − γ)(t − s). Here γ is the fraction of the way from s to t;
    docs/math.md writes u = γs + (1 − γ)t, i.e. its γ is our 1 − γ. PSD-U (γ ~ U[0, 1]) and PSD-M
    (γ = ½) are symmetric in that swap; it matters only when fixing γ by hand.
    """
    x = Var("x")
    return sqnorm(V(s, t, x) - sg(gamma * V(s, u, x) + (1 - gamma) * V(u, t, X(s, u, x)))).bind(x=I(s))


def assemble(name: str, description: str, equation: str, loss: Expr, sampler: TimeSampler, eta: float,
             diagonal=flow_matching_term, **defaults) -> Objective:
    """The objective ``diagonal term (share η) + one distillation term (share 1 − η)``."""
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0 <= eta < 1:
        raise ValueError(f"{name}: the diagonal share eta must lie in [0, 1) (a number), got {type(eta).__name__} "
                         f"{eta!r}")
    terms = ((diagonal(eta),) if eta > 0 else ()) + (Term(name, loss, sampler, 1 - eta),)
    return Objective(name, terms, description=description, equation=equation, **defaults)
