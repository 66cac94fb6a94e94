"""Data for training and evaluating flow maps (docs/math.md §1, §5), of any sample shape (B, *dims).

* A registry of data sets by name (:func:`register_dataset`; :mod:`flowcore.data.registry`), each
  declaring its sample shape and its data kind; the 2-D sets made in code are its first entries
  (:mod:`flowcore.data.points2d`: ``checkerboard``, ``eight_gaussians``, ``two_moons``, ``spirals``).
* Loaded (finite) data sets by name with options (:func:`register_loaded_dataset`): the images
  ``digits`` (scikit-learn's 8×8, :mod:`flowcore.data.digits`), ``cifar10`` (the python-format
  folder or .tar.gz, :mod:`flowcore.data.cifar10`) and ``image_folder`` (PNG / JPEG,
  :mod:`flowcore.data.image_folder`).
* Arrays from ``.npy`` / ``.npz`` files, shaped (N, *dims), uint8 arrays as images: :func:`load_array`.
* :class:`DataSource`, made by :func:`make_source`: an endless, seeded, resumable stream of batches.
"""
from .arrays import array_std, images_to_nchw, load_array, uint8_to_unit, uint8_unit_std
from .cifar10 import cifar10_images
from .digits import digits_images, digits_with_labels
from .image_folder import folder_images
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
    LOADED_DATASETS,
    STD_ESTIMATE_SAMPLES,
    Dataset,
    LoadedDataset,
    array_kind,
    dataset_names,
    dataset_std,
    get_dataset,
    register_dataset,
    register_loaded_dataset,
)
from .source import DataSource, make_source

__all__ = ["BOARD_CELLS", "CHECKERBOARD_STD", "DATASETS", "EIGHT_GAUSSIANS_STD", "FILLED", "LOADED_DATASETS",
           "STD_ESTIMATE_SAMPLES", "DataSource", "Dataset", "LoadedDataset", "array_kind", "array_std",
           "checkerboard", "cifar10_images", "dataset_names", "dataset_std", "digits_images", "digits_with_labels",
           "eight_gaussians", "folder_images", "get_dataset", "images_to_nchw", "load_array", "make_source",
           "register_dataset", "register_loaded_dataset", "spirals", "two_moons", "uint8_to_unit", "uint8_unit_std"]
