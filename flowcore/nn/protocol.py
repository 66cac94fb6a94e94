"""What a flow-map network is to flowcore: the calls the runtime and the trainer make, with their shapes
(docs/design.md, the network protocol; the networks themselves: docs/math.md §4).

A network predicts the velocity ``v̂_{s,t}(x)`` of the flow map ``X̂_{s,t}(x) = x + (t − s)·v̂_{s,t}(x)``.
Any ``nn.Module`` with this ``forward`` trains; ``jvp`` and ``jvp_many`` are optional fast paths.

Shapes (B samples; the data's sample shape ``dims`` is whatever the data source yields: ``(2,)`` for
the 2-D sets, ``(C, H, W)`` for images — nothing here assumes flat data)

- ``s``, ``t``: ``(B,)`` times, one per sample, in x's dtype and on x's device;
- ``x``: ``(B, *dims)``; B is a term's share of the batch, or several terms' calls concatenated,
  not the training batch size;
- the result ``v̂``: x's shape (the runtime reshapes it to ``(B, prod(dims))``, so it must hold
  ``prod(dims)`` values per sample).

``forward(s, t, x)``
    The velocity. It must be a pure function of its inputs and parameters, traceable by
    ``torch.func.jvp`` (no in-place writes to its inputs, no control flow on tensor values): every
    jet without a native path — and every second-order jet (``∂²v̂[d₁, d₂]``) — is a nested
    ``torch.func.jvp`` of it (flowcore.runtime.netcalls). The reference interpreter
    (flowcore.reference) calls only this.

``jvp(s, t, x, ds, dt, dx) -> (v̂, v̇)`` (optional)
    The velocity and its directional derivative along the tangent ``(ṡ, ṫ, ẋ)``: ``ṡ``, ``ṫ`` are
    ``(B,)``, ``ẋ`` is x's shape; None stands for a zero tangent. Both results have x's shape, and the
    runtime backpropagates through both (LSD trains ``∂_t X̂``, docs/math.md §2), so ``v̇`` must carry
    a graph whenever gradients are enabled. Used for one first-order jet of a call.

``jvp_many(s, t, x, tangents, live=None) -> (v̂, [v̇_1, …, v̇_k])`` (optional; needs ``jvp``)
    Several first-order jets at one primal: ``tangents`` is a list of k ≥ 0 triples
    ``(ṡ, ṫ, ẋ)`` as for ``jvp``. ``live[j] = False`` (``live`` None: all True) says tangent j is
    needed only under stop-gradient (ESD's ``∇X̂·v̂``, MeanFlow's ``dv̂/ds``): its ``v̇_j`` may be
    computed without a graph, and no gradient will flow through it. The runtime calls it when a
    call needs several tangents, or one that is not live, and with ``tangents = []`` for a plain
    evaluation (so a network whose ``forward`` is the slow path can route evaluations through its
    fast one).

``dropout_rate`` (optional float) and ``forward(s, t, x, *, dropout_seed=None)``
    A network with dropout says so with ``dropout_rate > 0``; then, in training mode, every call
    of a dropout term (``Term.dropout``: by default the diagonal, flow-matching terms,
    docs/math.md §4) passes ``dropout_seed=<int>`` — to ``forward``, and to ``jvp`` / ``jvp_many``
    when it has them — and other calls pass none (no dropout). The masks must be a function of the
    seed and the call's shapes only (draw them from a ``torch.Generator`` seeded by it): a call's
    primal and its JVP passes, and the reference interpreter and a compiled objective, then apply
    the same masks (flowcore.terms.draw_dropout_seeds).

Under ``torch.no_grad()`` every call may skip saving anything for backward. The teacher of a
distillation objective is not a network of this protocol: it is a velocity ``teacher(τ, x)`` whose
parameters get no gradient (flowcore.runtime.netcalls freezes them).

New kinds of network are registered with `flowcore.nn.registry.register_network`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Protocol, runtime_checkable

import torch

# One direction (ṡ, ṫ, ẋ): (B,), (B,), (B, *dims); None is a zero tangent.
Tangent = tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]


@runtime_checkable
class FlowMapNetwork(Protocol):
    """A velocity network ``v̂ = net(s, t, x)``: times ``(B,)``, x and the result ``(B, *dims)``."""

    def __call__(self, s: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ...


@runtime_checkable
class NativeJvp(Protocol):
    """A network with its own first-order jets (see the module docstring for the semantics)."""

    def jvp(self, s: torch.Tensor, t: torch.Tensor, x: torch.Tensor, ds: torch.Tensor | None = None,
            dt: torch.Tensor | None = None, dx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        ...

    def jvp_many(self, s: torch.Tensor, t: torch.Tensor, x: torch.Tensor, tangents: Sequence[Tangent],
                 live: Sequence[bool] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        ...

