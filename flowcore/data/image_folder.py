"""``image_folder``: every PNG / JPEG under a folder (sub-folders included, in sorted path order),
read with Pillow, centre-cropped to a square and resized to ``resolution`` × ``resolution`` — the
usual preparation of CelebA-64 / AFHQ-64 style sets (docs/math.md §5). Samples are uint8 (C, r, r),
C = 3 for ``mode = "RGB"`` and 1 for ``"L"`` (grey), scaled to [−1, 1] per batch
(flowcore.data.arrays); registered as a loaded data set of kind ``images`` taking the options
``path``, ``resolution`` and ``mode``.

Resizing uses Pillow's Lanczos filter: the usual case is shrinking (e.g. 178×218 → 64×64), where
an antialiasing filter keeps the aliasing of fine texture out of the training data.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .registry import IMAGES, register_loaded_dataset

SUFFIXES = (".png", ".jpg", ".jpeg")
MODES = {"RGB": 3, "L": 1}


def image_paths(folder: Path) -> list[Path]:
    """The PNG / JPEG files under `folder`, sorted (so the set, and a seeded stream of it, is the same
    on every machine)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def centre_square(image, resolution: int):
    """`image` (a PIL image) cropped to its centred largest square and resized to `resolution`²."""
    from PIL import Image

    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((resolution, resolution), Image.Resampling.LANCZOS)


def read_image(path: Path, resolution: int, mode: str) -> np.ndarray:
    """One image as uint8 (C, r, r); a ValueError naming `path` when Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = centre_square(image.convert(mode), resolution)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:  # Pillow's ways of saying "not an image"
        raise ValueError(f"{path}: unreadable image ({type(error).__name__}: {error}); expected a PNG or JPEG file") \
            from None
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def folder_images(path: str | os.PathLike = "", resolution: int = 0, mode: str = "RGB") -> torch.Tensor:
    """Every PNG / JPEG under `path`, centre-cropped and resized to `resolution`, in Pillow `mode`
    ("RGB" or "L"), uint8 (N, C, r, r): the loader of the registered ``image_folder`` data set."""
    if not str(path):
        raise ValueError("image_folder: give the folder of PNG / JPEG images (data.path)")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"image_folder: give the side in pixels to crop and resize to (data.resolution), "
                         f"got {resolution!r}")
    if mode not in MODES:
        raise ValueError(f"image_folder: mode must be one of {', '.join(MODES)} (data.mode), got {mode!r}")
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of images (data.path)")
    paths = image_paths(folder)
    if not paths:
        raise ValueError(f"{folder}: empty image folder: no {' / '.join(SUFFIXES)} files in it or below it")
    return torch.from_numpy(np.stack([read_image(p, resolution, mode) for p in paths]))


register_loaded_dataset("image_folder", folder_images, kind=IMAGES, options=("path", "resolution", "mode"))
