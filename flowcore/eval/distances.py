"""Distances between two point sets of any sample shape (N, *dims), samples flattened (docs/math.md §5):
the energy distance and the sliced 2-Wasserstein distance, both in float64.
"""
from __future__ import annotations

import torch


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
