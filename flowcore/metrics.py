"""Sample-quality metrics (MATH.md §5): the paper's checkerboard KL, and the energy distance and
sliced 2-Wasserstein distance for point sets of any dimension; :func:`evaluate_sampler` tabulates
them for a k-step flow-map sampler.

The checkerboard KL, exactly as computed here. Split [−1, 1]² into ``bins × bins`` equal squares
(bins closed on the left, the last one also on the right, as ``numpy.histogram``). Then

* target mass ``p_b`` = (area of bin b ∩ the filled squares) / (total filled area, 2), computed
  exactly from interval overlaps (50 bins do not align with the board's 4 cells);
* model mass ``q_b`` = (number, or total weight, of samples in bin b) / (number, or total weight,
  of ALL samples). Samples outside [−1, 1]² — and NaN samples — count in the denominator but in no
  bin, so mass the model puts off the square is penalised: Σ_b q_b = 1 − (outside share) and
  KL ≥ −log(1 − outside share) ≥ 0;
* ``KL(p ‖ q) = Σ_{b : p_b > 0} p_b · log(p_b / max(q_b, floor))``, natural log (nats).

For N exact samples the histogram's own noise gives ``E[KL] ≈ (M − 1) / (2N)``, M the number of
bins with p_b > 0 (1396 of 2500 for 50 bins): ≈ 0.0106 at N = 65536 (MATH.md §5's 64k), the floor
under which no sampler can be told apart at that N.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from .data import BOARD_CELLS, FILLED, make_source
from .sample import DEFAULT_CHUNK, Net, flow_map_sample, ode_sample


def checkerboard_bin_mass(bins: int = 50) -> torch.Tensor:
    """The exact mass ``p`` (float64, shape (bins, bins), sums to 1) that the uniform checkerboard
    density puts in each bin of [−1, 1]²; ``p[a, b]`` is x-bin a, y-bin b."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be an int >= 1, got {bins!r}")
    edges = torch.linspace(-1.0, 1.0, bins + 1, dtype=torch.float64)
    cells = torch.linspace(-1.0, 1.0, BOARD_CELLS + 1, dtype=torch.float64)
    # overlap[a, i] = length of bin a ∩ cell i along one axis
    low = torch.maximum(edges[:-1, None], cells[None, :-1])
    high = torch.minimum(edges[1:, None], cells[None, 1:])
    overlap = (high - low).clamp_min(0.0)
    filled = torch.zeros(BOARD_CELLS, BOARD_CELLS, dtype=torch.float64)
    for i, j in FILLED:
        filled[i, j] = 1.0
    area = overlap @ filled @ overlap.T
    return area / (len(FILLED) * (2.0 / BOARD_CELLS) ** 2)


def histogram_mass(samples: torch.Tensor, bins: int = 50, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Share of the samples (N, 2) — or of their total weight — in each bin of [−1, 1]², float64
    (bins, bins). Samples outside the square (or NaN) count in the total but in no bin."""
    if samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(f"expected 2-D points shaped (N, 2), got {tuple(samples.shape)}")
    if len(samples) == 0:
        raise ValueError("no samples")
    x = samples.detach().to("cpu", torch.float64)
    w = torch.ones(len(x), dtype=torch.float64) if weights is None else weights.detach().to("cpu", torch.float64)
    if w.shape != (len(x),):
        raise ValueError(f"weights must be shaped ({len(x)},), got {tuple(w.shape)}")
    inside = ((x >= -1.0) & (x <= 1.0)).all(dim=1)
    index = ((x[inside] + 1.0) * (bins / 2.0)).floor().long().clamp_(0, bins - 1)
    counts = torch.zeros(bins * bins, dtype=torch.float64)
    counts.index_add_(0, index[:, 0] * bins + index[:, 1], w[inside])
    return counts.reshape(bins, bins) / w.sum()


def discrete_kl(p: torch.Tensor, q: torch.Tensor, floor: float = 1e-10) -> float:
    """``Σ_{p > 0} p · log(p / max(q, floor))`` in nats (``0 log 0 = 0``)."""
    if p.shape != q.shape:
        raise ValueError(f"p and q differ in shape: {tuple(p.shape)} vs {tuple(q.shape)}")
    p, q = p.to(torch.float64), q.to(torch.float64)
    support = p > 0
    return float((p[support] * (p[support].log() - q[support].clamp_min(floor).log())).sum())


def checkerboard_kl(samples: torch.Tensor, bins: int = 50, floor: float = 1e-10,
                    weights: torch.Tensor | None = None) -> float:
    """KL(checkerboard ‖ samples) on a ``bins × bins`` histogram of [−1, 1]², as the module docstring
    defines it (exact target mass per bin, off-square samples in the total only, model mass floored
    at `floor`). Optional per-sample `weights` make a weighted histogram."""
    return discrete_kl(checkerboard_bin_mass(bins), histogram_mass(samples, bins, weights), floor)


def _flat_subsample(x: torch.Tensor, limit: int | None, generator: torch.Generator) -> torch.Tensor:
    x = x.detach().reshape(len(x), -1)
    if limit is not None and len(x) > limit:
        x = x[torch.randperm(len(x), generator=generator)[:limit].to(x.device)]
    return x.to(torch.float64)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.ndim < 1 or b.ndim < 1 or len(a) == 0 or len(b) == 0:
        raise ValueError(f"need two non-empty point sets shaped (N, *dims), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"the point sets differ in their sample shape: {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}")


def _mean_distance(a: torch.Tensor, b: torch.Tensor, block: int = 2048) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for rows in a.split(block):
        total += torch.cdist(rows, b).sum()
    return total / (len(a) * len(b))


def energy_distance(a: torch.Tensor, b: torch.Tensor, max_points: int | None = 4096,
                    generator: torch.Generator | None = None) -> float:
    """Energy distance ``2 E|X − Y| − E|X − X'| − E|Y − Y'|`` between the empirical distributions of
    `a` (N, *dims) and `b` (M, *dims), samples flattened, Euclidean norm, float64. The plug-in
    (V-statistic) value: ≥ 0, zero exactly when the two sets hold the same points with the same
    frequencies; for two samples of one distribution it is O(1/N), not 0. A set larger than
    `max_points` is replaced by a random subset of that size drawn without replacement from
    `generator` (default: a fresh one seeded 0, so the value is deterministic). Distances are
    computed in blocks of 2048 rows: memory O(2048 · max_points), but time O(max_points²) — about a
    second for 4096 points on two CPU cores, which is why large sets are subsampled."""
    _check_pair(a, b)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    x, y = _flat_subsample(a, max_points, generator), _flat_subsample(b, max_points, generator).to(a.device)
    value = 2 * _mean_distance(x, y) - _mean_distance(x, x) - _mean_distance(y, y)
    return max(float(value), 0.0)  # ≥ 0 in exact arithmetic; clip rounding


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row sorted; on the CPU in place through numpy (several times faster than torch's CPU sort)."""
    if x.device.type == "cpu":
        x = x.contiguous()
        x.numpy().sort(axis=1)
        return x
    return x.sort(dim=1).values


def _w2_squared_1d(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Exact squared W2 between the empirical distributions of the rows of x (P, N) and y (P, M):
    ``∫₀¹ (F⁻¹(u) − G⁻¹(u))² du`` with both quantile functions piecewise constant on i/N, j/M."""
    x, y = _sorted_rows(x), _sorted_rows(y)
    n, m = x.shape[1], y.shape[1]
    if n == m:
        return ((x - y) ** 2).mean(dim=1)
    # Exact rationals: breakpoints i·m and j·n on the common scale n·m.
    breaks = torch.unique(torch.cat([torch.arange(n + 1) * m, torch.arange(m + 1) * n]))
    widths = ((breaks[1:] - breaks[:-1]).to(torch.float64) / (n * m)).to(x.device)
    start = breaks[:-1].to(x.device)
    diff = x[:, start // m] - y[:, start // n]
    return (widths * diff ** 2).sum(dim=1)


def sliced_wasserstein2(a: torch.Tensor, b: torch.Tensor, projections: int = 128,
                        generator: torch.Generator | None = None) -> float:
    """Sliced 2-Wasserstein distance ``SW2 = sqrt(E_θ W2²(θ·a, θ·b))`` between the empirical
    distributions of `a` (N, *dims) and `b` (M, *dims), samples flattened to D dims, with θ drawn
    uniformly on the unit sphere (`projections` directions, from `generator`, default seeded 0).
    Each 1-D W2² is exact (sorted samples; for N ≠ M the quantile functions are matched on the
    merged grid of i/N and j/M). For a pure shift ``b = a + δ``: ``SW2² = mean_θ (θ·δ)² → |δ|²/D``.
    Memory O((N + M) · projections); no subsampling."""
    _check_pair(a, b)
    if isinstance(projections, bool) or not isinstance(projections, int) or projections < 1:
        raise ValueError(f"projections must be an int >= 1, got {projections!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    x, y = _flat_subsample(a, None, generator), _flat_subsample(b, None, generator).to(a.device)
    theta = torch.randn(x.shape[1], projections, generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    return float(_w2_squared_1d(theta.T @ x.T, theta.T @ y.T).mean().sqrt())


def evaluate_sampler(net: Net, steps_list: Sequence[int] = (1, 2, 4, 8, 16), n: int = 65536,
                     sigma: float | None = None, generator: torch.Generator | None = None,
                     dataset: str | os.PathLike = "checkerboard", *, key: str | None = None,
                     chunk_size: int = DEFAULT_CHUNK, energy_points: int = 4096,
                     projections: int = 128, method: str = "flow_map") -> dict[int, dict[str, float]]:
    """Metrics of the k-step flow-map sampler for each k in `steps_list` (MATH.md §5):
    ``{k: {"kl": …, "energy": …, "sw2": …}}`` — ``"kl"`` (:func:`checkerboard_kl`, 50 bins) only for
    the checkerboard; ``"energy"`` (:func:`energy_distance`, `energy_points` subsample) and ``"sw2"``
    (:func:`sliced_wasserstein2`) against `n` fresh samples of `dataset` (a built-in name or a
    .npy / .npz path, `key` for npz; from an array, a shuffled pass over its samples, repeating
    them only when `n` exceeds their number).

    One noise batch ``x0 = σ · randn(n, *dims)`` from `generator` (default seeded 0) serves every k;
    σ defaults to the data's std (``make_source(dataset).std``). Samples are drawn with the net's
    parameter dtype and device (CPU float32 for a net without parameters); put it in eval mode first.
    ``method``: ``"flow_map"`` (k composed flow-map steps) or ``"euler"`` / ``"heun"`` (k steps of
    the ODE of the diagonal velocity, a check on what the flow map learned).
    """
    if method not in ("flow_map", "euler", "heun"):
        raise ValueError(f"unknown sampling method {method!r}; choose flow_map, euler or heun")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    seed = int(torch.randint(2 ** 62, (), generator=generator))
    source = make_source(dataset, n, seed, key=key)
    sigma = source.std if sigma is None else float(sigma)
    parameter = next(iter(getattr(net, "parameters", lambda: iter(()))()), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else torch.device("cpu")
    data = next(source).to(device)
    x0 = (sigma * torch.randn(n, *source.dims, generator=generator, dtype=torch.float64)).to(device, dtype)
    results: dict[int, dict[str, Any]] = {}
    for k in steps_list:
        samples = (flow_map_sample(net, x0, steps=int(k), chunk_size=chunk_size) if method == "flow_map"
                   else ode_sample(net, x0, int(k), method, chunk_size=chunk_size)).to(torch.float64)
        row: dict[str, float] = {}
        if dataset == "checkerboard":
            row["kl"] = checkerboard_kl(samples)
        row["energy"] = energy_distance(samples, data, max_points=energy_points)
        row["sw2"] = sliced_wasserstein2(samples, data, projections=projections)
        results[int(k)] = row
    return results


def format_table(results: dict[int, dict[str, float]]) -> str:
    """The table of :func:`evaluate_sampler`'s results, one row per metric, one column per k."""
    steps = sorted(results)
    names = list(dict.fromkeys(name for k in steps for name in results[k]))
    lines = ["metric  " + "".join(f"{f'k={k}':>10}" for k in steps)]
    for name in names:
        lines.append(f"{name:<8}" + "".join(f"{results[k].get(name, float('nan')):>10.4f}" for k in steps))
    return "\n".join(lines)
