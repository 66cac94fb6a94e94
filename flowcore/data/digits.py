"""``digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 images, shipped inside the
package, so nothing is downloaded), the image set flowcore trains and evaluates on the CPU
(docs/design.md, data). Samples are (1, 8, 8) — or (1, r, r) upsampled — with the 17 grey levels
0…16 scaled to [−1, 1]; registered as a loaded data set of kind ``digits`` (images of their own kind:
FD-digits, flowcore.eval.fd_digits, applies to them alone) taking the options ``split`` and
``resolution``.

The split is fixed: one permutation of the 1,797 images drawn from a torch generator seeded with
:data:`SPLIT_SEED`; its last :data:`HELD_OUT` images are ``split = "test"`` (the held-out set a
metric's noise floor compares with), the first 1,500 ``split = "train"``.

Upsampling (``resolution`` > 8) is bilinear (``align_corners=False``, no antialiasing: it only
enlarges). Why bilinear and not nearest: nearest makes every image piecewise constant on
(r/8)×(r/8) blocks, a high-frequency structure no real image has that the network would have to
reproduce exactly (a sample that is not blocky is off the data manifold, and a metric would
punish it); bilinear gives smooth strokes, and as a convex combination of pixels it keeps the
values in [−1, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import DIGITS, register_loaded_dataset

DIGITS_COUNT = 1797
HELD_OUT = 297
NATIVE_RESOLUTION = 8
GREY_LEVELS = 16            # pixel values are 0…16
SPLIT_SEED = 13             # fixes the train / held-out permutation for good
SPLITS = ("train", "test")


def split_indices(split: str) -> torch.Tensor:
    """The indices into scikit-learn's digits of `split` ("train": 1,500; "test": the 297 held out)."""
    if split not in SPLITS:
        raise ValueError(f"digits: split must be one of {', '.join(SPLITS)} (data.split), got {split!r}")
    order = torch.randperm(DIGITS_COUNT, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[:DIGITS_COUNT - HELD_OUT] if split == "train" else order[DIGITS_COUNT - HELD_OUT:]


def digits_with_labels(split: str = "train", resolution: int = 0,
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits of `split` as images (N, 1, r, r) in [−1, 1] (r = `resolution`; 0 or 8: the
    native 8×8, larger: bilinear upsampling) and their labels 0…9 (N,) int64."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or \
            not (resolution == 0 or resolution >= NATIVE_RESOLUTION):
        raise ValueError(f"digits: resolution (data.resolution) must be 0 (the native 8) or an int >= 8 "
                         f"to upsample to, got {resolution!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # a dependency of flowcore, but name the fix if it is missing
        raise ImportError("the digits data set needs scikit-learn: pip install scikit-learn") from error
    bundle = load_digits()
    indices = split_indices(split)
    images = torch.from_numpy(bundle.images).to(torch.float64)[indices]
    images = (images * (2.0 / GREY_LEVELS) - 1.0).unsqueeze(1)
    if resolution > NATIVE_RESOLUTION:
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bundle.target).to(torch.int64)[indices]
    return images.to(dtype), labels


def digits_images(split: str = "train", resolution: int = 0) -> torch.Tensor:
    """The images of :func:`digits_with_labels`, float32 (N, 1, r, r) in [−1, 1]: the loader of the
    registered ``digits`` data set."""
    return digits_with_labels(split, resolution)[0]


register_loaded_dataset("digits", digits_images, kind=DIGITS, options=("split", "resolution"))
