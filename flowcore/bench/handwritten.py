"""The strongest thing a user would otherwise run: an objective's loss written by hand in eager
PyTorch, for the benchmark's ``handwritten`` and ``handwritten_compile`` variants.

Each is the plain transcription of the objective's residuals (docs/math.md §2) for the linear
interpolant ``I_τ = (1 − τ)·x0 + τ·x1``, ``İ_τ = x1 − x0``, with the batch split and reduced as
flowcore does (``objective.split``, the ``"batch"`` reduction Σℓ / B) and the times given as the
benchmark draws them (flowcore.bench.steps.draw_inputs), so its loss is the reference's:

- FM: ``|v̂_{t,t}(I_t) − İ_t|²``;
- LSD: ``|∂_t X̂_{s,t}(I_s) − sg(v̂_{t,t}(sg(X̂_{s,t}(I_s))))|²``, the ∂_t by ``torch.func.jvp``;
- PSD-M: the semigroup residual ``|v̂_{s,t}(I_s) − sg(½ v̂_{s,u}(I_s) + ½ v̂_{u,t}(X̂_{s,u}(I_s)))|²``,
  u = (s + t)/2 (γ as drawn).

An objective without a transcription here (or with options that change its declaration: another
interpolant, reduction or stop-gradient placement) gets none: `handwritten_for` says why.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

# a term's per-sample loss: residual(net, x0, x1, {time name: (n,)}) -> (n,)
LossFn = Callable[..., torch.Tensor]


def _per_sample(residual: torch.Tensor) -> torch.Tensor:
    return residual.flatten(1).square().sum(1)


def _broadcast(tau: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return tau.reshape(-1, *([1] * (like.ndim - 1)))


def _fm(net, x0, x1, times) -> torch.Tensor:
    t = times["t"]
    xt = x0 + _broadcast(t, x0) * (x1 - x0)
    return _per_sample(net(t, t, xt) - (x1 - x0))


def _lsd(net, x0, x1, times) -> torch.Tensor:
    s, t = times["s"], times["t"]
    xs = x0 + _broadcast(s, x0) * (x1 - x0)

    def flow_map(t_):
        return xs + _broadcast(t_ - s, xs) * net(s, t_, xs)

    x_st, dx_dt = torch.func.jvp(flow_map, (t,), (torch.ones_like(t),))
    with torch.no_grad():
        teacher = net(t, t, x_st.detach())
    return _per_sample(dx_dt - teacher)


def _psd(net, x0, x1, times) -> torch.Tensor:
    s, t, u, gamma = times["s"], times["t"], times["u"], times["gamma"]
    xs = x0 + _broadcast(s, x0) * (x1 - x0)
    with torch.no_grad():
        v_su = net(s, u, xs)
        x_su = xs + _broadcast(u - s, xs) * v_su
        g = _broadcast(gamma, xs)
        target = g * v_su + (1 - g) * net(u, t, x_su)
    return _per_sample(net(s, t, xs) - target)


# objective name -> {term name: per-sample residual}
TRANSCRIBED: dict[str, dict[str, LossFn]] = {
    "fm": {"fm": _fm},
    "lsd": {"fm": _fm, "lsd": _lsd},
    "psd_m": {"fm": _fm, "psd_m": _psd},
}


def handwritten_for(name: str, objective) -> tuple[dict[str, LossFn] | None, str | None]:
    """(the term residuals, None), or (None, why there is no hand-written step for `objective`)."""
    from ..lang.interpolants import linear

    key = name.split(":")[0].strip().lower().replace("-", "_")
    terms = TRANSCRIBED.get(key)
    if terms is None:
        return None, f"no hand-written step for {name} (there are: {', '.join(TRANSCRIBED)})"
    if [term.name for term in objective.terms] != list(terms):
        return None, f"{name}: its terms {[term.name for term in objective.terms]} are not the transcribed {list(terms)}"
    if objective.interpolant != linear() or objective.reduction != "batch":
        return None, f"{name}: the hand-written step is for the linear interpolant and the batch reduction"
    return terms, None


def handwritten_loss(objective, terms: dict[str, LossFn]) -> Callable:
    """``make(net, weight_net, teacher) -> loss(x1, x0, z, times)`` as flowcore.bench.steps expects."""

    def make(net, weight_net, teacher):
        def loss(x1, x0, z, times):
            total, start = x1.new_zeros(()), 0
            for term, count in zip(objective.terms, objective.split(x1.shape[0])):
                if count:
                    rows = slice(start, start + count)
                    total = total + terms[term.name](net, x0[rows], x1[rows], times[term.name]).sum()
                start += count
            return total / x1.shape[0]
        return loss
    return make
