"""Executing a batch of planned network calls: primal, JVPs and second-order jets.

What a network receives here, and the optional fast paths it may offer, is the network protocol
(flowcore.nn.protocol; docs/design.md). Calls of one batch are concatenated along the batch axis
and evaluated once. A network with a native ``jvp(s, t, x, ṡ, ṫ, ẋ) -> (v, v̇)`` (flowcore.nn's
fused MLP and UNet) is used for first-order jets — and its ``jvp_many(s, t, x, tangents,
live=None)``, when it has one, for several tangents at one primal, a tangent needed only under sg,
and plain evaluations (no tangents); anything else goes through ``torch.func.jvp``. Second order
nests two JVPs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..compiler.ir import LOGVAR, NET, TEACHER
from ..compiler.plan import Call
from ..compiler.segments import input_names, output_name
from ..lang.numeric import evaluate_sympy


@dataclass
class TermState:
    """A term's live values: name -> (B_k, N) element values or (B_k,) sample values."""

    values: dict
    times: dict
    count: int
    dims: tuple
    like: torch.Tensor  # (B_k,) in the batch's dtype/device

    @property
    def N(self) -> int:
        return math.prod(self.dims)


def _frozen(module: Callable) -> Callable:
    """A teacher never trains: its parameters are detached (its input still carries gradients)."""
    if not isinstance(module, nn.Module):
        return module
    params = {name: p.detach() for name, p in module.named_parameters()}
    return lambda *args: torch.func.functional_call(module, params, args)


def _function(fn: str, models: dict, dropout_seed: int | None = None) -> Callable:
    if fn == NET:
        net = models["net"]
        if dropout_seed is None:
            return net
        return lambda a, b, x: net(a, b, x, dropout_seed=dropout_seed)
    if fn == TEACHER:
        teacher = _frozen(models["teacher"])
        return lambda a, b, x: teacher(a, x)
    assert fn == LOGVAR
    return lambda a, b: models["weight_net"](a, b).reshape(a.shape)


def _jets(fn: str, f: Callable, primals: tuple, directions: list[tuple], outputs: tuple, live: tuple,
          net, options: dict) -> dict:
    """The call's outputs by jet pattern; an output that is not live (used only under sg) is
    computed without a graph. First order: the network's native ``jvp_many`` when several
    directions share the primal, or one is not live (one pass, tangents stacked through each
    layer, the dead ones outside the graph), else its ``jvp``, else ``torch.func.jvp``. Second
    order: nested ``torch.func.jvp``. `options` go to every pass of the network (a dropout seed)."""
    results: dict = {}
    grad = torch.is_grad_enabled()
    is_live = dict(zip(outputs, live))
    native = fn == NET and callable(getattr(net, "jvp", None))
    first_order = [pattern for pattern in outputs if len(pattern) == 1]
    dead = [not is_live[pattern] for pattern in first_order]
    if (native and callable(getattr(net, "jvp_many", None))
            and (len(first_order) > 1 or (first_order and any(dead)))):
        tangents = [directions[pattern[0]] for pattern in first_order]
        extra = {"live": [not d for d in dead]} if any(dead) else {}
        results[()], dots = net.jvp_many(*primals, tangents, **extra, **options)
        results.update(zip(first_order, dots))
        first_order = []
    for pattern in first_order:
        tangent = directions[pattern[0]]
        with torch.set_grad_enabled(grad and is_live[pattern]):
            value, results[pattern] = (net.jvp(*primals, *tangent, **options) if native
                                       else torch.func.jvp(f, primals, tangent))
        if () not in results and (is_live[pattern] or not is_live.get((), False)):
            results[()] = value  # a live primal must come from a pass with a graph
    for pattern in outputs:
        if len(pattern) == 2:
            first, second = directions[pattern[0]], directions[pattern[1]]
            inner = lambda *p: torch.func.jvp(f, p, first)[1]  # noqa: E731
            with torch.set_grad_enabled(grad and is_live[pattern]):
                results[pattern] = torch.func.jvp(inner, primals, second)[1]
        elif len(pattern) > 2:
            raise NotImplementedError(f"jets of order {len(pattern)}: flowcore supports derivatives up to 2nd order")
    if () in outputs and () not in results:
        # the fused MLP's forward: one op and one autograd node (`f` is its nn.Sequential)
        fast = native and callable(getattr(net, "jvp_many", None))
        results[()] = net.jvp_many(*primals, [], **options)[0] if fast else f(*primals)
    return results


def run_calls(batch: tuple[Call, ...], states: list[TermState], models: dict) -> None:
    """Evaluate the calls of one batch and store their outputs in their terms' states.

    The calls of a dropout term (``models["dropout_seeds"]``: term index -> seed) run one by one
    with their term's seed, as the reference interpreter makes them: the masks depend on the seed
    and the call's shape, so concatenating them with other calls would change them."""
    seeds = models.get("dropout_seeds") or {}
    if batch[0].fn != NET or not any(call.term in seeds for call in batch):
        _run_together(batch, states, models, None)
        return
    plain = tuple(call for call in batch if call.term not in seeds)
    if plain:
        _run_together(plain, states, models, None)
    for call in batch:
        if call.term in seeds:
            _run_together((call,), states, models, seeds[call.term])


def _run_together(batch: tuple[Call, ...], states: list[TermState], models: dict,
                  dropout_seed: int | None) -> None:
    """One network evaluation of the concatenated calls of `batch` (with `dropout_seed`, if any)."""
    first = batch[0]
    f = _function(first.fn, models, dropout_seed)
    options = {} if dropout_seed is None else {"dropout_seed": dropout_seed}
    a, b, x, directions = [], [], [], [[] for _ in first.directions]
    for call in batch:
        state = states[call.term]
        a.append(evaluate_sympy(call.a, state.times, state.like))
        b.append(evaluate_sympy(call.b, state.times, state.like))
        names = iter(input_names(call))
        if call.x is not None:
            x.append(state.values[next(names)].reshape(state.count, *state.dims))
        for i, (da, db, dx) in enumerate(call.directions):
            tangent_x = None
            if call.x is not None:
                tangent_x = (state.values[next(names)].reshape(state.count, *state.dims) if dx is not None
                             else torch.zeros_like(x[-1]))
            directions[i].append((evaluate_sympy(da, state.times, state.like),
                                  evaluate_sympy(db, state.times, state.like), tangent_x))
    cat = lambda parts: parts[0] if len(parts) == 1 else torch.cat(parts)  # noqa: E731
    primals = (cat(a), cat(b)) + ((cat(x),) if x else ())
    tangents = [tuple(cat([d[k] for d in direction]) for k in range(len(primals))) for direction in directions]
    with torch.set_grad_enabled(first.grad and torch.is_grad_enabled()):
        results = _jets(first.fn, f, primals, tangents, first.outputs, first.live, models.get("net"), options)
    start = 0
    for call in batch:
        state = states[call.term]
        part = slice(start, start + state.count)
        start += state.count
        for pattern in call.outputs:
            value = results[pattern][part]
            state.values[output_name(call, pattern)] = value if first.fn == LOGVAR else value.reshape(state.count, -1)
