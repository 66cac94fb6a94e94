"""Sampling with a flow map (docs/math.md §1): compose ``X_{t_i, t_{i+1}}`` on a time grid, or integrate
the diagonal velocity ``v̂_{t,t}`` as an ODE (a check on the tangent condition ``v_{t,t} = b_t``).

Every sampler takes ``net(s, t, x) -> v̂_{s,t}(x)`` with s, t shaped (B,) and x shaped (B, *dims)
(t = 0 is noise, t = 1 is data), and noise ``x0`` — draw it as ``σ · randn`` yourself, docs/math.md §1.
The flow map is ``X_{s,t}(x) = x + (t − s) · v̂_{s,t}(x)``. Samples are computed in chunks of at
most `chunk_size` points (each chunk runs every step before the next starts), under
``torch.no_grad()`` unless ``no_grad=False``. The network's train/eval mode is left as it is.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from itertools import pairwise

import torch

Net = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Grid = Sequence[float] | torch.Tensor
METHODS = ("flow_map", "euler", "heun")
DEFAULT_CHUNK = 16384


def time_grid(steps: int | None = None, grid: Grid | None = None) -> list[float]:
    """The times ``0 = t_0 < t_1 < … < t_k = 1``: uniform ``t_i = i / steps`` or a custom `grid`
    (validated: one-dimensional, finite, strictly increasing, exactly 0 first and exactly 1 last).
    Give at most one of the two; neither means one step."""
    if steps is not None and grid is not None:
        raise ValueError("give either steps= or grid=, not both")
    if grid is None:
        steps = 1 if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        return [i / steps for i in range(steps)] + [1.0]
    if isinstance(grid, torch.Tensor):
        if grid.ndim != 1:
            raise ValueError(f"the time grid must be one-dimensional, got shape {tuple(grid.shape)}")
        times = [float(v) for v in grid.detach().cpu().tolist()]
    else:
        try:
            times = [float(v) for v in grid]
        except (TypeError, ValueError) as error:
            raise ValueError(f"the time grid must be a sequence of numbers, got {grid!r}") from error
    if len(times) < 2:
        raise ValueError(f"the time grid needs at least 2 times (0 and 1), got {times}")
    if not all(math.isfinite(v) for v in times):
        raise ValueError(f"the time grid holds a non-finite time: {times}")
    if times[0] != 0.0:
        raise ValueError(f"the time grid must start at 0 (noise), got {times[0]!r}")
    if times[-1] != 1.0:
        raise ValueError(f"the time grid must end at 1 (data), got {times[-1]!r}")
    for i, (a, b) in enumerate(pairwise(times)):
        if not b > a:
            raise ValueError(f"the time grid must be strictly increasing, but t[{i}] = {a!r} >= t[{i + 1}] = {b!r}")
    return times


def _step(net: Net, method: str, s: float, t: float, x: torch.Tensor) -> torch.Tensor:
    """One step from time s to time t: the flow map ``X_{s,t}`` or an Euler / Heun step of ``v̂_{τ,τ}``."""
    batch = x.shape[0]
    s_ = torch.full((batch,), s, dtype=x.dtype, device=x.device)
    t_ = torch.full((batch,), t, dtype=x.dtype, device=x.device)
    h = t - s
    if method == "flow_map":
        return x + h * net(s_, t_, x)
    drift = net(s_, s_, x)
    if method == "euler":
        return x + h * drift
    predicted = x + h * drift
    return x + (h / 2) * (drift + net(t_, t_, predicted))


def _run(net: Net, x0: torch.Tensor, times: list[float], method: str, chunk_size: int, no_grad: bool,
         keep_path: bool) -> torch.Tensor:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if x0.ndim < 2:
        raise ValueError(f"x0 must be shaped (B, *dims), got {tuple(x0.shape)}")
    outputs = []
    with torch.no_grad() if no_grad else contextlib.nullcontext():
        for chunk in x0.split(chunk_size) if len(x0) else [x0]:
            x, path = chunk, [chunk]
            for s, t in pairwise(times):
                x = _step(net, method, s, t, x)
                if keep_path:
                    path.append(x)
            outputs.append(torch.stack(path) if keep_path else x)
    return torch.cat(outputs, dim=1 if keep_path else 0)


def flow_map_sample(net: Net, x0: torch.Tensor, steps: int | None = None, grid: Grid | None = None, *,
                    chunk_size: int = DEFAULT_CHUNK, no_grad: bool = True) -> torch.Tensor:
    """Samples ``X_{t_{k−1},1} ∘ … ∘ X_{0,t_1}(x0)``: the k-step flow-map sampler of docs/math.md §1,
    no noise re-injected. The grid is ``t_i = i / steps`` (default: one step) or a custom `grid`
    (see :func:`time_grid`). Returns a tensor shaped like `x0`."""
    return _run(net, x0, time_grid(steps, grid), "flow_map", chunk_size, no_grad, keep_path=False)


def ode_sample(net: Net, x0: torch.Tensor, steps: int, method: str = "euler", *, grid: Grid | None = None,
               chunk_size: int = DEFAULT_CHUNK, no_grad: bool = True) -> torch.Tensor:
    """Integrates the probability flow ``ẋ = v̂_{t,t}(x)`` from t = 0 to 1 with `steps` uniform steps
    (or pass ``steps=None`` and a `grid`) of ``"euler"`` (1 call a step) or ``"heun"`` (2 calls, the
    trapezoidal corrector). With a well-trained diagonal it converges, as steps grow, to what the
    flow map gives in one step. Returns a tensor shaped like `x0`."""
    if method not in ("euler", "heun"):
        raise ValueError(f"unknown ODE method {method!r}; choose euler or heun")
    return _run(net, x0, time_grid(steps, grid), method, chunk_size, no_grad, keep_path=False)


def trajectories(net: Net, x0: torch.Tensor, steps: int | None = None, grid: Grid | None = None, *,
                 method: str = "flow_map", chunk_size: int = DEFAULT_CHUNK, no_grad: bool = True) -> torch.Tensor:
    """Every intermediate state of a sampler (`method`: ``"flow_map"``, ``"euler"`` or ``"heun"``):
    shaped (k + 1, B, *dims), entry i at time ``t_i``; entry 0 is `x0`, the last one the samples."""
    return _run(net, x0, time_grid(steps, grid), method, chunk_size, no_grad, keep_path=True)
