"""The paper's checkerboard KL (docs/math.md §5), exactly as computed here.

Split [−1, 1]² into ``bins × bins`` equal squares (bins closed on the left, the last one also on
the right, as ``numpy.histogram``). Then

* target mass ``p_b`` = (area of bin b ∩ the filled squares) / (total filled area, 2), computed
  exactly from interval overlaps (50 bins do not align with the board's 4 cells);
* model mass ``q_b`` = (number, or total weight, of samples in bin b) / (number, or total weight,
  of ALL samples). Samples outside [−1, 1]² — and NaN samples — count in the denominator but in no
  bin, so mass the model puts off the square is penalised: Σ_b q_b = 1 − (outside share) and
  KL ≥ −log(1 − outside share) ≥ 0;
* ``KL(p ‖ q) = Σ_{b : p_b > 0} p_b · log(p_b / max(q_b, floor))``, natural log (nats).

For N exact samples the histogram's own noise gives ``E[KL] ≈ (M − 1) / (2N)``, M the number of
bins with p_b > 0 (1396 of 2500 for 50 bins): ≈ 0.0106 at N = 65536 (docs/math.md §5's 64k), the floor
under which no sampler can be told apart at that N.
"""
from __future__ import annotations

import torch

from ..data.points2d import BOARD_CELLS, FILLED


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
