"""Every built-in objective written out by hand in plain PyTorch, straight from docs/math.md §1–3.

This is the independent side of ``test_reference_objectives.py``: it shares NOTHING with
``flowcore.lang`` or ``flowcore.reference`` (no expression trees, no sympy evaluation, no
interpreter). Each term's per-sample loss is spelled out with

- hand-written α(τ), β(τ) and their closed-form derivatives α̇(τ), β̇(τ) (`HandInterpolant`);
- ``torch.func.jvp`` of closures of the network for time derivatives (tangent 1 in the time) and
  spatial JVPs (tangent = the direction, in x);
- ``.detach()`` for sg. That is exact here: every sg-wrapped quantity of the built-ins is a whole
  residual target, never something a time derivative is taken of afterwards, so detaching the
  value loses nothing the reference keeps (the reference keeps the times live under sg).

Conventions (docs/math.md §1): t = 0 noise, t = 1 data, ``I_τ = α(τ) x0 + β(τ) x1``,
``X_{a,b}(x) = x + (b − a) v̂_{a,b}(x)``, ``net(a, b, x) -> v̂_{a,b}(x)``, ``teacher(τ, x) -> b̂_τ(x)``,
``|r|²`` sums over every data dimension of a sample.

PSD's γ: flowcore (objectives/_parts.py) writes ``u = s + γ(t − s)`` and the target
``γ v̂_{s,u} + (1 − γ) v̂_{u,t}(X̂_{s,u})``. docs/math.md §2 writes ``u = γ's + (1 − γ')t`` and
``(1 − γ') v̂_{s,u} + γ' v̂_{u,t}``: the same thing with γ' = 1 − γ (both are the semigroup identity
divided by t − s, the weights being (u − s)/(t − s) and (t − u)/(t − s)). Times given to this module
use flowcore's γ, the symbol its samplers produce, and carry u explicitly, as ``evaluate(times=...)``
requires.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import sympy
import torch

# -- interpolants ---------------------------------------------------------------------------------
Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class HandInterpolant:
    """α, β and their derivatives as torch functions of a (B,) time, plus the same α, β in sympy.

    `sympy_alpha` / `sympy_beta` are expressions of the symbol passed to `flowcore()`; they are
    handed to ``flowcore.lang.custom`` (or the built-in linear/trig constructors are used) so that
    the reference evaluates the SAME interpolant through its own machinery.
    """

    name: str
    alpha: Fn
    beta: Fn
    dalpha: Fn
    dbeta: Fn
    sympy_alpha: Callable[[sympy.Symbol], sympy.Expr]
    sympy_beta: Callable[[sympy.Symbol], sympy.Expr]
    builtin: str | None = None  # "linear" / "trig": use flowcore's own constructor

    def flowcore(self):
        """The flowcore `Interpolant` for the same α, β."""
        from flowcore.lang import interpolants

        if self.builtin is not None:
            return getattr(interpolants, self.builtin)()
        tau = interpolants.TAU
        return interpolants.custom(self.sympy_alpha(tau), self.sympy_beta(tau), var=tau, name=self.name)


HALF_PI = math.pi / 2

INTERPOLANTS: dict[str, HandInterpolant] = {
    # α = 1 − τ, β = τ
    "linear": HandInterpolant(
        "linear",
        alpha=lambda t: 1 - t, beta=lambda t: t,
        dalpha=lambda t: -torch.ones_like(t), dbeta=lambda t: torch.ones_like(t),
        sympy_alpha=lambda v: 1 - v, sympy_beta=lambda v: v, builtin="linear"),
    # α = cos(πτ/2), β = sin(πτ/2)
    "trig": HandInterpolant(
        "trig",
        alpha=lambda t: torch.cos(HALF_PI * t), beta=lambda t: torch.sin(HALF_PI * t),
        dalpha=lambda t: -HALF_PI * torch.sin(HALF_PI * t), dbeta=lambda t: HALF_PI * torch.cos(HALF_PI * t),
        sympy_alpha=lambda v: sympy.cos(sympy.pi * v / 2), sympy_beta=lambda v: sympy.sin(sympy.pi * v / 2),
        builtin="trig"),
    # α = 1 − τ², β = τ²: α(0)=1, β(0)=0, α(1)=0, β(1)=1; α̇ = −2τ, β̇ = 2τ (İ vanishes at τ = 0)
    "square": HandInterpolant(
        "square",
        alpha=lambda t: 1 - t * t, beta=lambda t: t * t,
        dalpha=lambda t: -2 * t, dbeta=lambda t: 2 * t,
        sympy_alpha=lambda v: 1 - v**2, sympy_beta=lambda v: v**2),
    # α = (1 − τ) cos τ, β = τ + τ(1 − τ)/2: α(0)=1, α(1)=0, β(0)=0, β(1)=1;
    # α̇ = −cos τ − (1 − τ) sin τ, β̇ = 3/2 − τ
    "cosmix": HandInterpolant(
        "cosmix",
        alpha=lambda t: (1 - t) * torch.cos(t), beta=lambda t: t + t * (1 - t) / 2,
        dalpha=lambda t: -torch.cos(t) - (1 - t) * torch.sin(t), dbeta=lambda t: 1.5 - t,
        sympy_alpha=lambda v: (1 - v) * sympy.cos(v), sympy_beta=lambda v: v + v * (1 - v) / 2),
    # α = (1 − τ) e^{−τ}, β = τ e^{τ−1}: α(0)=1, α(1)=0, β(0)=0, β(1)=1;
    # α̇ = −(2 − τ) e^{−τ}, β̇ = (1 + τ) e^{τ−1}
    "expmix": HandInterpolant(
        "expmix",
        alpha=lambda t: (1 - t) * torch.exp(-t), beta=lambda t: t * torch.exp(t - 1),
        dalpha=lambda t: -(2 - t) * torch.exp(-t), dbeta=lambda t: (1 + t) * torch.exp(t - 1),
        sympy_alpha=lambda v: (1 - v) * sympy.exp(-v), sympy_beta=lambda v: v * sympy.exp(v - 1)),
}


# -- the objectives' structure -----------------------------------------------------------------------
# case -> (name in flowcore.objectives.names(), build options). Every built-in name, plus the two
# non-default variants of pfmm and consistency.
CASES: dict[str, tuple[str, dict]] = {
    "fm": ("fm", {}),
    "lsd": ("lsd", {}),
    "esd": ("esd", {}),
    "esd_none": ("esd_none", {}),
    "esd_convex": ("esd_convex", {}),
    "psd_u": ("psd_u", {}),
    "psd_m": ("psd_m", {}),
    "lmd": ("lmd", {}),
    "emd": ("emd", {}),
    "pfmm": ("pfmm", {}),
    "pfmm_self": ("pfmm", {"teacher": "self"}),
    "meanflow": ("meanflow", {}),
    "shortcut": ("shortcut", {}),
    "consistency": ("consistency", {}),
    "consistency_training": ("consistency", {"mode": "training"}),
}

# Objectives whose diagonal is distilled from the teacher (|v̂_{t,t}(I_t) − b̂_t(I_t)|², term "diagonal");
# the others train it by flow matching (|v̂_{t,t}(I_t) − İ_t|², term "fm").
TEACHER_DIAGONAL = {"lmd", "emd", "pfmm", "pfmm_self", "consistency"}
# Off-diagonal terms that use the PSD-style intermediate time u (and γ).
USES_U = {"psd_u", "psd_m", "shortcut", "pfmm", "pfmm_self"}
FIXED_GAMMA = {"psd_m": 0.5, "shortcut": 0.5}  # midpoint rule; psd_u and pfmm draw γ ~ U[0, 1]
NEEDS_TEACHER = {"lmd", "emd", "pfmm", "pfmm_self", "consistency"}


def distill_term_name(case: str) -> str:
    """The off-diagonal term's name: the objective's name (``esd_none``, ``pfmm``, ``consistency``...)."""
    return CASES[case][0]


def term_layout(case: str, eta: float | None) -> list[tuple[str, float, tuple[str, ...]]]:
    """[(term name, share, time symbols it needs)] in batch order: diagonal first, share η (docs/math.md §3)."""
    if case == "fm":
        return [("fm", 1.0, ("t",))]
    eta = 0.75 if eta is None else eta
    off_times = ("s", "t", "gamma", "u") if case in USES_U else ("s", "t")
    layout = []
    if eta > 0:
        layout.append(("diagonal" if case in TEACHER_DIAGONAL else "fm", eta, ("t",)))
    layout.append((distill_term_name(case), 1 - eta, off_times))
    return layout


def split_counts(shares: list[float], batch: int) -> list[int]:
    """Samples per term: floor of share·batch, the leftovers to the largest remainders (ties: first term)."""
    exact = [share * batch for share in shares]
    counts = [math.floor(x) for x in exact]
    remainders = [x - c for x, c in zip(exact, counts)]
    for _ in range(batch - sum(counts)):
        best = max(range(len(shares)), key=lambda i: (remainders[i], -i))
        counts[best] += 1
        remainders[best] = -1.0
    return counts


# -- the per-sample losses -----------------------------------------------------------------------
def _col(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B,) per-sample coefficient shaped to broadcast over (B, *dims)."""
    return c.reshape(c.shape + (1,) * (like.ndim - 1))


def _sqnorm(r: torch.Tensor) -> torch.Tensor:
    return (r * r).flatten(1).sum(dim=1)


def handwritten_term_loss(case: str, term_name: str, net: Callable, x0: torch.Tensor, x1: torch.Tensor,
                          times: dict[str, torch.Tensor], interp: HandInterpolant,
                          teacher: Callable | None = None) -> torch.Tensor:
    """Per-sample loss (B,) of term `term_name` of objective `case` (a key of `CASES`).

    `times` maps "s", "t", "u", "gamma" to (B,) tensors (only those the term needs).
    """
    def I(tau):  # noqa: E743
        return _col(interp.alpha(tau), x0) * x0 + _col(interp.beta(tau), x0) * x1

    def dI(tau):
        return _col(interp.dalpha(tau), x0) * x0 + _col(interp.dbeta(tau), x0) * x1

    def v(a, b, x):
        return net(a, b, x)

    def X(a, b, x):
        return x + _col(b - a, x) * net(a, b, x)

    def b_hat(tau, x):
        return teacher(tau, x)

    def teacher_map(a, b, x):
        """One Euler step of the teacher: x + (b − a) b̂_a(x)."""
        return x + _col(b - a, x) * b_hat(a, x)

    if term_name in ("fm", "diagonal"):
        t = times["t"]
        xt = I(t)
        if term_name == "fm":  # |v̂_{t,t}(I_t) − İ_t|²
            return _sqnorm(v(t, t, xt) - dI(t))
        if case not in TEACHER_DIAGONAL:
            raise KeyError(f"{case} has no teacher diagonal")
        return _sqnorm(v(t, t, xt) - b_hat(t, xt))  # |v̂_{t,t}(I_t) − b̂_t(I_t)|²

    if term_name != distill_term_name(case):
        raise KeyError(f"{case} has no term {term_name!r}")
    s, t = times["s"], times["t"]
    ones = torch.ones_like(s)
    x = I(s)

    def d_dt_X(y):
        """(X̂_{s,t}(y), ∂_t X̂_{s,t}(y)) at fixed y."""
        return torch.func.jvp(lambda tt: X(s, tt, y), (t,), (ones,))

    def d_ds_X(y):
        """∂_s X̂_{s,t}(y) at fixed y."""
        return torch.func.jvp(lambda ss: X(ss, t, y), (s,), (ones,))[1]

    def grad_X_along(y, w):
        """∇X̂_{s,t}(y)·w (spatial JVP; gradient flows through y, w and the parameters)."""
        return torch.func.jvp(lambda yy: X(s, t, yy), (y,), (w,))[1]

    if case == "lsd":  # ∂_t X̂_{s,t}(x) − sg(v̂_{t,t}(sg(X̂_{s,t}(x))))
        xst, dxt = d_dt_X(x)
        return _sqnorm(dxt - v(t, t, xst.detach()).detach())
    if case in ("esd", "esd_none", "esd_convex"):  # ∂_s X̂_{s,t}(x) + ∇X̂_{s,t}(x)·v̂_{s,s}(x), sg placements
        w = v(s, s, x)
        if case == "esd":
            transport = grad_X_along(x, w).detach()
        elif case == "esd_none":
            transport = grad_X_along(x, w)
        else:
            transport = grad_X_along(x, w.detach())
        return _sqnorm(d_ds_X(x) + transport)
    if case in ("psd_u", "psd_m", "shortcut"):
        # v̂_{s,t}(x) − sg(γ v̂_{s,u}(x) + (1 − γ) v̂_{u,t}(X̂_{s,u}(x)))
        g, u = _col(times["gamma"], x), times["u"]
        target = g * v(s, u, x) + (1 - g) * v(u, t, X(s, u, x))
        return _sqnorm(v(s, t, x) - target.detach())
    if case == "lmd":  # ∂_t X̂_{s,t}(x) − b̂_t(sg(X̂_{s,t}(x)))
        xst, dxt = d_dt_X(x)
        return _sqnorm(dxt - b_hat(t, xst.detach()))
    if case == "emd":  # ∂_s X̂_{s,t}(x) + sg(∇X̂_{s,t}(x)·b̂_s(x))
        return _sqnorm(d_ds_X(x) + grad_X_along(x, b_hat(s, x)).detach())
    if case in ("pfmm", "pfmm_self"):  # X̂_{s,t}(x) − sg(X̌_{u,t}(X̌_{s,u}(x)))
        u = times["u"]
        if case == "pfmm":
            target = teacher_map(u, t, teacher_map(s, u, x))
        else:
            target = X(u, t, X(s, u, x))
        return _sqnorm(X(s, t, x) - target.detach())
    if case == "meanflow":  # v̂_{s,t}(I_s) − sg(İ_s + (t − s) d/ds v̂_{s,t}(I_s)), total derivative
        velocity = dI(s)
        # d/ds v̂_{s,t}(I_s) = ∂_s v̂ + ∇v̂·İ_s: one jvp in (s, x) with tangent (1, İ_s)
        _, total = torch.func.jvp(lambda ss, y: v(ss, t, y), (s, x), (ones, velocity))
        target = velocity + _col(t - s, x) * total
        return _sqnorm(v(s, t, x) - target.detach())
    if case in ("consistency", "consistency_training"):
        # v̂_{s,t}(x) − sg(b + (t − s)(∂_s v̂_{s,t}(x) + ∇v̂_{s,t}(x)·b)); b = b̂_s(x) or İ_s
        b = b_hat(s, x) if case == "consistency" else dI(s)
        partial_s = torch.func.jvp(lambda ss: v(ss, t, x), (s,), (ones,))[1]
        along_b = torch.func.jvp(lambda y: v(s, t, y), (x,), (b,))[1]
        target = b + _col(t - s, x) * (partial_s + along_b)
        return _sqnorm(v(s, t, x) - target.detach())
    raise KeyError(f"unknown case {case!r}")


def handwritten_loss(case: str, net: Callable, x0: torch.Tensor, x1: torch.Tensor,
                     times: dict[str, dict[str, torch.Tensor]], interp: HandInterpolant,
                     teacher: Callable | None = None, eta: float | None = None,
                     reduction: str = "batch") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(reduced loss, {term name: per-sample losses}) of objective `case` on the batch x0, x1.

    The batch is split over the terms in order (`term_layout`, `split_counts`); term k gets its
    counts[k] consecutive samples and the times ``times[term name]``. Reductions (docs/math.md §3):
    ``"batch"`` = Σ over all samples of ℓ / B; ``"term_mean"`` = Σ over non-empty terms of their mean.
    """
    layout = term_layout(case, eta)
    batch = x1.shape[0]
    counts = split_counts([share for _, share, _ in layout], batch)
    per_term: dict[str, torch.Tensor] = {}
    start = 0
    for (name, _, _), count in zip(layout, counts):
        rows = slice(start, start + count)
        start += count
        per_term[name] = handwritten_term_loss(case, name, net, x0[rows], x1[rows], times[name], interp, teacher)
    if reduction == "batch":
        loss = sum(losses.sum() for losses in per_term.values()) / batch
    elif reduction == "term_mean":
        loss = sum(losses.mean() for losses in per_term.values() if losses.numel())
    else:
        raise ValueError(reduction)
    return loss, per_term
