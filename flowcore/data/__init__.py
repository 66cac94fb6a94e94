"""Data for training and evaluating flow maps (docs/math.md §1, §5), of any sample shape (B, *dims).

* A registry of data sets by name (:func:`register_dataset`; :mod:`flowcore.data.registry`), each
  declaring its sample shape and its data kind; the 2-D sets made in code are its first entries
  (:mod:`flowcore.data.points2d`: ``checkerboard``, ``eight_gaussians``, ``two_moons``, ``spirals``).
* Arrays from ``.npy`` / ``.npz`` files, shaped (N, *dims): :func:`load_array`.
* :class:`DataSource`, made by :func:`make_source`: an endless, seeded, resumable stream of batches.
"""
from .arrays import array_std, load_array
from .points2d import (
    BOARD_CELLS,
    CHECKERBOARD_STD,
    EIGHT_GAUSSIANS_STD,
    FILLED,
    checkerboard,
    eight_gaussians,
    spirals,
    two_moons,
)
from .registry import (
    DATASETS,
    STD_ESTIMATE_SAMPLES,
    Dataset,
    array_kind,
    dataset_std,
    get_dataset,
    register_dataset,
)
from .source import DataSource, make_source

__all__ = ["BOARD_CELLS", "CHECKERBOARD_STD", "DATASETS", "EIGHT_GAUSSIANS_STD", "FILLED", "STD_ESTIMATE_SAMPLES",
           "DataSource", "Dataset", "array_kind", "array_std", "checkerboard", "dataset_std", "eight_gaussians",
           "get_dataset", "load_array", "make_source", "register_dataset", "spirals", "two_moons"]
