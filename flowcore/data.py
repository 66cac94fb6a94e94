"""2-D data sets made in code (nothing is downloaded): the paper's checkerboard (MATH.md §5)."""
from __future__ import annotations

import torch

# The 4×4 board on [−1, 1]²: cells of side 1/2, the filled ones have (i + j) even.
BOARD_CELLS = 4
FILLED = [(i, j) for i in range(BOARD_CELLS) for j in range(BOARD_CELLS) if (i + j) % 2 == 0]


def checkerboard(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`n` points uniform on the filled squares of the 4×4 checkerboard on [−1, 1]², shape (n, 2)."""
    if n < 0:
        raise ValueError(f"the number of samples must be >= 0, got {n}")
    cells = torch.tensor(FILLED, dtype=torch.float64)
    pick = torch.randint(len(FILLED), (n,), generator=generator)
    offset = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    side = 2.0 / BOARD_CELLS
    return (-1.0 + side * (cells[pick] + offset)).to(dtype)


# Per-coordinate std of the checkerboard (exactly 1/√3: each coordinate is uniform on [−1, 1]),
# the σ of MATH.md §1 for this data set.
CHECKERBOARD_STD = 3 ** -0.5

DATASETS = {"checkerboard": checkerboard}
