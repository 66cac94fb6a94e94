"""FD-digits: the Fréchet distance in the feature space of a small digits classifier that flowcore
trains itself, deterministically, once per machine (docs/math.md §5, docs/design.md metrics).

FID needs Inception weights from a connected machine; FD-digits needs nothing: a small CNN is
trained on the digits ``train`` split (flowcore.data.digits) in a few CPU seconds to ≥ 97 %
accuracy on the held-out ``test`` split, and its penultimate layer is the feature space of
:func:`flowcore.eval.frechet.frechet_metric`.

* Determinism: a fixed seed for the initialisation, full-batch Adam for a fixed number of epochs
  (no data order at all), one thread and ``torch.use_deterministic_algorithms`` while training; so
  two machines with one torch version train the same weights.
* Cache: the weights live in ``<flowcore cache dir>/fd_digits/classifier-<key>.pt``
  (flowcore.native.cache.cache_root: ``FLOWCORE_CACHE_DIR``), ``key`` a hash of the training
  recipe and the torch version; written to a temporary file and moved into place with
  ``os.replace`` (atomic), so two processes training at once both write a complete file. An entry
  that does not load, or whose tensors do not fit the network, is retrained and replaced.
* Resolutions: one classifier, on 8×8. Larger samples (the upsampled digits, e.g. 16×16) are
  area-averaged down to 8×8 before the classifier. Why not one classifier per resolution: the
  features, hence FD numbers, stay comparable across resolutions, one cache entry serves them all,
  and upsampled digits carry no detail beyond the 8×8 originals that a classifier could use.
* Noise floor: :func:`noise_floor`, the FD-digits of the held-out real digits against the train
  split — what a perfect sampler scores with this many images; the metric declares it
  (``register_metric(..., floor=)``) so evaluation tables print it beside the metric.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.digits import NATIVE_RESOLUTION, digits_with_labels
from ..data.registry import DIGITS
from ..native.cache import cache_root
from ..native.files import write_atomically
from .frechet import frechet_metric
from .metrics import register_metric

# The training recipe: every value here is part of the cache key.
RECIPE = {"version": 1, "seed": 0, "epochs": 60, "lr": 1e-2, "weight_decay": 1e-4,
          "channels": (16, 32), "features": 64, "classes": 10}
CACHE_FOLDER = "fd_digits"


class DigitsClassifier(nn.Module):
    """A small CNN for (N, 1, 8, 8) digits in [−1, 1]: a 3×3 convolution, a 2×2 max-pool (the
    second convolution runs on 4×4: a quarter of the cost, so training takes seconds on one
    thread), a second 3×3 convolution, a linear layer to :data:`RECIPE` ``features`` (the
    penultimate layer, FD-digits' feature space) and a linear layer to the 10 class logits.
    Larger images are area-averaged to 8×8 first."""

    def __init__(self, channels: tuple[int, int] = RECIPE["channels"], features: int = RECIPE["features"],
                 classes: int = RECIPE["classes"]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.hidden = nn.Linear(channels[1] * (NATIVE_RESOLUTION // 2) ** 2, features)
        self.head = nn.Linear(features, classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate activations (N, features) of images (N, 1, r, r), r ≥ 8, in [−1, 1]."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1 \
                or images.shape[2] != images.shape[3] or images.shape[2] < NATIVE_RESOLUTION:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"FD-digits scores one-channel square digits (N, 1, r, r), r >= 8, got {shape}")
        x = images.to(self.hidden.weight.dtype)
        if x.shape[-1] != NATIVE_RESOLUTION:
            x = F.adaptive_avg_pool2d(x, NATIVE_RESOLUTION)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        return F.relu(self.hidden(x.flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def recipe_key() -> str:
    """A 24-hex-digit sha256 of the training recipe and the torch version: the cache entry's name."""
    payload = json.dumps({"recipe": RECIPE, "torch": str(torch.__version__)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def train_classifier() -> DigitsClassifier:
    """Train :class:`DigitsClassifier` on the digits train split, deterministically (module docstring)."""
    images, labels = digits_with_labels("train")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):   # the seed fixes the initialisation, not the caller's stream
            torch.manual_seed(RECIPE["seed"])
            model = DigitsClassifier()
        optimiser = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
        model.train()
        with torch.enable_grad():
            for _ in range(RECIPE["epochs"]):     # full batch: 1,500 images of 8×8 fit in one step
                optimiser.zero_grad(set_to_none=True)
                F.cross_entropy(model(images), labels).backward()
                optimiser.step()
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    return model.eval().requires_grad_(False)


def classifier_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the trained weights are cached: ``<cache_dir or cache_root()>/fd_digits/classifier-<key>.pt``."""
    return Path(cache_dir or cache_root()) / CACHE_FOLDER / f"classifier-{recipe_key()}.pt"


def _read_cached(path: Path) -> DigitsClassifier | None:
    """The classifier in `path`, or None when the file is missing, unreadable or does not fit."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = DigitsClassifier()
        model.load_state_dict(state)
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            return None
    except Exception:  # noqa: BLE001 - a corrupt entry of any sort is simply retrained
        return None
    return model.eval().requires_grad_(False)


def _write_atomically(model: DigitsClassifier, path: Path) -> None:
    write_atomically(path, lambda file: torch.save(model.state_dict(), file))


def load_or_train_classifier(cache_dir: str | os.PathLike | None = None) -> tuple[DigitsClassifier, bool]:
    """The trained classifier from the cache under `cache_dir` (default: the flowcore cache dir),
    trained and cached first when the entry is missing or corrupt; also whether it was trained now."""
    path = classifier_path(cache_dir)
    model = _read_cached(path)
    if model is not None:
        return model, False
    model = train_classifier()
    _write_atomically(model, path)
    return model, True


class DigitsFeatures:
    """The :class:`~flowcore.eval.frechet.FeatureExtractor` of FD-digits: the cached classifier's
    penultimate layer, loaded (or trained) on first use, so importing flowcore trains nothing."""

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.cache_dir = cache_dir
        self.model: DigitsClassifier | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            self.model = load_or_train_classifier(self.cache_dir)[0]
        with torch.no_grad():
            return self.model.features(images.cpu())

    def __repr__(self) -> str:
        return f"DigitsFeatures(cache_dir={self.cache_dir!r})"


_METRICS: dict[Path, Callable[..., float]] = {}
_FLOORS: dict[tuple[Path, int], float] = {}


def fd_digits_metric(cache_dir: str | os.PathLike | None = None) -> Callable[..., float]:
    """The FD-digits metric ``f(samples, data) -> float`` whose classifier and data statistics are
    cached under `cache_dir` (default: the flowcore cache dir), one per directory per process."""
    root = Path(cache_dir or cache_root())
    if root not in _METRICS:
        _METRICS[root] = frechet_metric(DigitsFeatures(root), name=f"fd_digits-{recipe_key()}",
                                        cache_dir=root / CACHE_FOLDER)
    return _METRICS[root]


def fd_digits(samples: torch.Tensor, data: torch.Tensor) -> float:
    """FD-digits of `samples` against `data`, both (N, 1, r, r) in [−1, 1] (the registered metric)."""
    return fd_digits_metric()(samples, data)


def noise_floor(resolution: int = 0, cache_dir: str | os.PathLike | None = None) -> float:
    """FD-digits of the 297 held-out real digits against the 1,500 of the train split, at
    `resolution` (0 or 8: native; larger: upsampled as the data set does): the score of samples as
    good as real digits, with as many images as the held-out set."""
    root = Path(cache_dir or cache_root())
    resolution = 0 if resolution == NATIVE_RESOLUTION else resolution
    if (root, resolution) not in _FLOORS:
        metric = fd_digits_metric(root)
        held_out = digits_with_labels("test", resolution)[0]
        _FLOORS[root, resolution] = metric(held_out, digits_with_labels("train", resolution)[0])
    return _FLOORS[root, resolution]


def data_floor(data: torch.Tensor) -> float:
    """The floor declared with the registered metric: :func:`noise_floor` at the data's resolution."""
    return noise_floor(int(data.shape[-1]))


register_metric("fd_digits", fd_digits, kinds=(DIGITS,), floor=data_floor)
