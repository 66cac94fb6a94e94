"""The 2-D data sets made in code (nothing is downloaded), all scaled to lie (essentially) in
[−1, 1]²: the paper's ``checkerboard`` (docs/math.md §5), ``eight_gaussians``, ``two_moons`` and
``spirals``. Each is a function ``f(n, generator=None, dtype=torch.float32) -> (n, 2)``, registered
below as one entry of the data-set registry (flowcore.data.registry).
"""
from __future__ import annotations

import math

import torch

from .registry import CHECKERBOARD, POINTS2D, register_dataset

# The 4×4 board on [−1, 1]²: cells of side 1/2, the filled ones have (i + j) even; i indexes the
# first coordinate, j the second.
BOARD_CELLS = 4
FILLED = [(i, j) for i in range(BOARD_CELLS) for j in range(BOARD_CELLS) if (i + j) % 2 == 0]


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of samples must be an int >= 0, got {n!r}")


def checkerboard(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`n` points uniform on the filled squares of the 4×4 checkerboard on [−1, 1]², shape (n, 2)."""
    _check_n(n)
    cells = torch.tensor(FILLED, dtype=torch.float64)
    pick = torch.randint(len(FILLED), (n,), generator=generator)
    offset = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    side = 2.0 / BOARD_CELLS
    return (-1.0 + side * (cells[pick] + offset)).to(dtype)


# Per-coordinate std of the checkerboard (exactly 1/√3: each coordinate is uniform on [−1, 1]),
# the σ of docs/math.md §1 for this data set.
CHECKERBOARD_STD = 3 ** -0.5

EIGHT_GAUSSIANS_RADIUS, EIGHT_GAUSSIANS_SCALE = 0.8, 0.07


def eight_gaussians(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A mixture of 8 equal isotropic Gaussians (std 0.07) centred on the circle of radius 0.8, (n, 2)."""
    _check_n(n)
    angle = torch.randint(8, (n,), generator=generator).to(torch.float64) * (math.pi / 4)
    centres = EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (centres + EIGHT_GAUSSIANS_SCALE * noise).to(dtype)


# Exact: the centres' angles are multiples of π/4, so E[cos²] = E[sin²] = 1/2 and the mean is 0.
EIGHT_GAUSSIANS_STD = math.sqrt(EIGHT_GAUSSIANS_RADIUS ** 2 / 2 + EIGHT_GAUSSIANS_SCALE ** 2)


def two_moons(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Two interleaved half circles (the classic "moons", each point's moon drawn at random),
    centred and scaled by 2/3 to x ∈ [−1, 1], y ∈ [−½, ½], plus Gaussian noise of std 0.04; (n, 2)."""
    _check_n(n)
    theta = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    inner = torch.randint(2, (n,), generator=generator).to(torch.bool)
    x = torch.where(inner, 1.0 - torch.cos(theta), torch.cos(theta))
    y = torch.where(inner, 0.5 - torch.sin(theta), torch.sin(theta))
    points = (torch.stack([x, y], dim=1) - torch.tensor([0.5, 0.25], dtype=torch.float64)) / 1.5
    return (points + 0.04 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).to(dtype)


def spirals(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Two interleaved spiral arms of 1.5 turns, radius ``θ / 3π`` ∈ [0, 1] (the second arm is the
    first turned by π), points spread evenly in area along the arms, noise std 0.02; (n, 2)."""
    _check_n(n)
    theta = 3 * math.pi * torch.sqrt(torch.rand(n, generator=generator, dtype=torch.float64))
    arm = torch.randint(2, (n,), generator=generator).to(torch.float64) * math.pi
    radius = theta / (3 * math.pi)
    points = radius[:, None] * torch.stack([torch.cos(theta + arm), torch.sin(theta + arm)], dim=1)
    return (points + 0.02 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).to(dtype)


# The checkerboard is its own kind: its KL compares samples with its exact density (docs/math.md §5).
register_dataset("checkerboard", checkerboard, shape=(2,), kind=CHECKERBOARD, std=CHECKERBOARD_STD)
register_dataset("eight_gaussians", eight_gaussians, shape=(2,), kind=POINTS2D, std=EIGHT_GAUSSIANS_STD)
register_dataset("two_moons", two_moons, shape=(2,), kind=POINTS2D)
register_dataset("spirals", spirals, shape=(2,), kind=POINTS2D)
