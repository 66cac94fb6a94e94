"""Evaluating and sampling a trained flow map (MATH.md §5), for the trainer and the CLI.

The k-step flow-map sampler of an EMA copy of the network, scored by ``flowcore.metrics`` (the
checkerboard KL, energy distance, sliced W2); the paper's checkerboard KL table for comparison.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..metrics import evaluate_sampler, format_table
from ..sample import flow_map_sample, ode_sample, time_grid

# MATH.md §5: checkerboard KL at 1, 2, 4, 8, 16 steps (paper: batch 100k, 150k steps, one A100).
PAPER_CHECKERBOARD_KL = {
    "lsd": {1: 0.0864, 2: 0.0765, 4: 0.0708, 8: 0.0699, 16: 0.0710},
    "esd": {1: 0.0983, 2: 0.0921, 4: 0.0834, 8: 0.0816, 16: 0.0751},
    "psd_m": {1: 0.1456, 2: 0.0891, 4: 0.0812, 8: 0.0717, 16: 0.0689},
    "psd_u": {1: 0.1113, 2: 0.1067, 4: 0.0747, 8: 0.0727, 16: 0.0679},
}


def evaluate(net: nn.Module, steps: Sequence[int], samples: int, sigma: float, seed: int, dataset: str,
             key: str = "", method: str = "flow_map") -> dict[int, dict[str, float]]:
    """``{k: {"kl": …, "energy": …, "sw2": …}}`` for the k-step sampler of `net` (in eval mode):
    the flow map, or (`method` euler / heun) the ODE of its diagonal as a check."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return evaluate_sampler(net, list(steps), samples, sigma, generator, dataset, key=key or None,
                                method=method)


def draw(net: nn.Module, steps: Sequence[int], samples: int, sigma: float, dims: tuple[int, ...], seed: int,
         device: torch.device, method: str = "flow_map", grid: Sequence[float] | None = None
         ) -> dict[int, torch.Tensor]:
    """Samples of the k-step sampler for each k, all from one noise batch ``σ·N(0, I)`` seeded by
    `seed`: the flow map on ``t_i = i/k`` (or, given a `grid`, on that grid alone, keyed by its
    number of steps), or the ODE of the diagonal velocity (`method` euler / heun)."""
    generator = torch.Generator().manual_seed(seed)
    x0 = (sigma * torch.randn(samples, *dims, generator=generator)).to(device)
    with torch.no_grad():
        if grid is not None:
            times = time_grid(grid=grid)
            if method == "flow_map":
                return {len(times) - 1: flow_map_sample(net, x0, grid=times).cpu()}
            return {len(times) - 1: ode_sample(net, x0, None, method, grid=times).cpu()}
        if method == "flow_map":
            return {int(k): flow_map_sample(net, x0, steps=int(k)).cpu() for k in steps}
        return {int(k): ode_sample(net, x0, int(k), method).cpu() for k in steps}


def table(results: dict[int, dict[str, float]]) -> str:
    return format_table(results)


def kl_markdown(rows: dict[str, dict[int, float]], steps: Sequence[int], paper: bool = True) -> str:
    """A markdown table of KL by objective and k, each row followed by the paper's where it has one."""
    lines = ["| checkerboard KL ↓ | " + " | ".join(str(k) for k in steps) + " |",
             "| --- | " + " | ".join("---" for _ in steps) + " |"]
    for name, row in rows.items():
        lines.append(f"| {name} (flowcore) | " + " | ".join(_cell(row.get(k)) for k in steps) + " |")
        reference = PAPER_CHECKERBOARD_KL.get(name.lower().replace("-", "_")) if paper else None
        if reference:
            lines.append(f"| {name} (paper) | " + " | ".join(_cell(reference.get(k)) for k in steps) + " |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"
