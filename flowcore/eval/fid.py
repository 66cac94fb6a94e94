"""FID: the Fréchet distance in the pool3 features (2048-d) of the TF-Inception network
(2015-12-05), through torch-fidelity (docs/math.md §5, docs/design.md metrics).

Why torch-fidelity and not pytorch-fid:

* it takes the weights from a local file (``feature_extractor_weights_path``); pytorch-fid's
  ``fid_inception_v3`` always calls ``load_state_dict_from_url``, so keeping it offline would
  mean planting files in torch hub's cache;
* it reproduces the TensorFlow reference's input path exactly: uint8 RGB images, resized to
  299×299 by a port of TF 1.x's bilinear resize, then ``(x − 128) / 128`` — pytorch-fid resizes
  with ``F.interpolate``, which differs from TF's;
* it is maintained (0.4.0) and its Inception module needs nothing beyond torch itself. Its
  package ``__init__`` imports torchvision (for its other extractors), so the ``fid`` extra
  installs torchvision too — the same cost as pytorch-fid, whose Inception subclasses
  torchvision's.

Both libraries use the same converted weights (the file names share the hash prefix 6726825d).

What this module adds around the library:

* weights only from a local file: the metric option ``weights`` or ``FLOWCORE_INCEPTION_WEIGHTS``
  (:func:`inception_weights_path`). A missing, unset or unreadable file is an
  :class:`InceptionWeightsMissing` naming :data:`WEIGHTS_FILE` and :data:`WEIGHTS_URL` to fetch
  on a connected machine; nothing is ever downloaded. The file is first read with
  ``torch.load(weights_only=True)``, so the library's own full unpickling of it afterwards can
  run nothing but tensor loading.
* the input conversion (:func:`to_uint8_rgb`): images in [−1, 1] → ``round(127.5·x + 127.5)``
  clamped to 0..255 as uint8 (the exact inverse of flowcore's ``x / 127.5 − 1`` for uint8 data,
  and the samples clipped to [−1, 1] as in docs/math.md §5); one channel repeated to three.
* the Fréchet machinery of :mod:`flowcore.eval.frechet`: float64 statistics, the data's
  statistics cached by content hash in memory and on disk under ``<flowcore cache dir>/fid``,
  keyed also by a hash of the weights file.

The hook for tests and other feature networks: :func:`fid_metric` (and the metric option
``features``) takes any callable uint8 (N, 3, H, W) → (N, D) in place of the Inception network;
it then gets exactly the input the library would.

Registered as ``fid`` for ``images`` data only, not as a default: it needs a file from outside,
and a default metric must run everywhere. Not for ``digits``: 8×8 grey digits blown up to
299×299 are far from anything Inception saw, their FID is dominated by upsampling artefacts and
comparable to no published number; FD-digits (:mod:`flowcore.eval.fd_digits`) is their metric.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ..data.registry import IMAGES
from ..native.cache import cache_root
from .frechet import frechet_metric
from .metrics import register_metric

WEIGHTS_ENV = "FLOWCORE_INCEPTION_WEIGHTS"
# torch-fidelity 0.4's URL_INCEPTION_V3 (tests/test_fid.py checks they agree when it is installed).
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
FEATURE_LAYER = "2048"           # pool3, the standard FID features (torch-fidelity's layer names)
DEFAULT_BATCH = 64               # torch-fidelity's default batch; about 1 GB of CPU activations
CACHE_FOLDER = "fid"

FeatureNetwork = Callable[[torch.Tensor], torch.Tensor]


class InceptionWeightsMissing(FileNotFoundError):
    """The Inception weights file is not given, missing or unreadable (the message says what to fetch)."""


def _missing(reason: str) -> InceptionWeightsMissing:
    return InceptionWeightsMissing(
        f"FID needs the TF-Inception weights as a local file and never downloads them: {reason}. "
        f"On a machine with internet access fetch {WEIGHTS_FILE} (about 91 MB) from {WEIGHTS_URL}, copy it "
        f"to this machine (e.g. ~/.cache/flowcore/{WEIGHTS_FILE}) and point {WEIGHTS_ENV} at it "
        f"(export {WEIGHTS_ENV}=~/.cache/flowcore/{WEIGHTS_FILE}), or set eval.inception_weights = PATH in the "
        f"run's config (the metric option weights=PATH)")


def inception_weights_path(weights: str | os.PathLike | None = None) -> Path:
    """The weights file: `weights` if given, else ``$FLOWCORE_INCEPTION_WEIGHTS``; an
    :class:`InceptionWeightsMissing` when neither is set or the file does not exist."""
    source = "the metric option weights" if weights is not None else WEIGHTS_ENV
    value = weights if weights is not None else os.environ.get(WEIGHTS_ENV, "")
    if not str(value).strip():
        raise _missing(f"{WEIGHTS_ENV} is not set")
    path = Path(value).expanduser()
    if not path.is_file():
        raise _missing(f"{path} (from {source}) {'is a directory' if path.is_dir() else 'does not exist'}")
    return path


_DIGESTS: dict[tuple[Path, int, int], str] = {}


def weights_digest(path: Path) -> str:
    """The sha256 of the weights file (memoised by path, size and mtime): part of the cache key, so
    statistics of one set of weights are never read for another."""
    stat = path.stat()
    key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def _library() -> type:
    """torch-fidelity's Inception class, or an ImportError saying how to install it."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as error:
        raise ImportError(f"FID computes the Inception features with torch-fidelity, which is not importable "
                          f"({error}); install it with: pip install 'flowcore[fid]'") from error
    return FeatureExtractorInceptionV3


def load_inception(path: Path) -> torch.nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 with the weights of the local file `path`."""
    extractor_class = _library()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        # torch's own message (long, about weights_only) would bury the advice below; its type is enough.
        raise _missing(f"{path} is not a readable state dict of tensors ({type(error).__name__})") from None
    if not isinstance(state, Mapping) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise _missing(f"{path} is not the Inception state dict (no Mixed_7c.branch_pool.conv.weight)")
    return extractor_class("inception-v3-compat", [FEATURE_LAYER], feature_extractor_weights_path=str(path))


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """Images (N, 1 or 3, H, W) in [−1, 1] → uint8 (N, 3, H, W): ``round(127.5·x + 127.5)`` clamped
    to 0..255 (values outside [−1, 1] are clipped), one channel repeated to three."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"FID scores RGB or grayscale images (N, 3 or 1, H, W) in [-1, 1], got {shape}")
    if not torch.isfinite(images).all():
        raise ValueError("FID: the images hold NaN or infinite values (a diverged sampler?)")
    pixels = (images.to(torch.float32) * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels


class FIDFeatures:
    """The :class:`~flowcore.eval.frechet.FeatureExtractor` of FID: images in [−1, 1] →
    :func:`to_uint8_rgb` → a feature network uint8 (N, 3, H, W) → (N, D), run on the images' device.
    The network is built on first use by `build` (Inception from a weights file, or a stand-in)."""

    def __init__(self, build: Callable[[], FeatureNetwork], description: str) -> None:
        self.build, self.description = build, description
        self.network: FeatureNetwork | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.network is None:
            self.network = self.build()
        if isinstance(self.network, torch.nn.Module):
            self.network.to(images.device)
        with torch.no_grad():
            features = self.network(to_uint8_rgb(images))
        if isinstance(features, (tuple, list)):    # torch-fidelity returns one tensor per requested layer
            (features,) = features
        return features

    def __repr__(self) -> str:
        return f"FIDFeatures({self.description})"


def fid_metric(features: FeatureNetwork | None = None, *, weights: str | os.PathLike | None = None,
               name: str | None = None, cache_dir: str | os.PathLike | None = None,
               batch_size: int = DEFAULT_BATCH) -> Callable[..., float]:
    """A metric ``f(samples, data) -> float`` computing FID.

    With no `features`: the Inception network of torch-fidelity with the weights file
    :func:`inception_weights_path` finds (`weights` or the environment; checked now), the data's
    statistics cached on disk under `cache_dir` (default ``<flowcore cache dir>/fid``) as
    ``inception2048-<weights hash>-<data hash>.pt``. With `features` (the hook for tests and other
    networks): that callable, uint8 (N, 3, H, W) → (N, D), in place of Inception, cached on disk
    only under an explicit `cache_dir`, by `name` (default its class name)."""
    if features is None:
        path = inception_weights_path(weights)
        description = f"inception{FEATURE_LAYER}-{weights_digest(path)[:16]}"
        directory = Path(cache_dir) if cache_dir is not None else Path(cache_root()) / CACHE_FOLDER
        extractor = FIDFeatures(lambda: load_inception(path), description)
    else:
        if not callable(features):
            raise TypeError(f"fid_metric: features must map uint8 images (N, 3, H, W) to (N, D), got {features!r}")
        description = name or type(features).__name__
        directory = cache_dir
        extractor = FIDFeatures(lambda: features, description)
    return frechet_metric(extractor, name=description, batch_size=batch_size, cache_dir=directory)


_METRICS: dict[tuple[Path, int], Callable[..., float]] = {}


def fid(samples: torch.Tensor, data: torch.Tensor, *, weights: str | os.PathLike | None = None,
        batch_size: int = DEFAULT_BATCH, features: FeatureNetwork | None = None) -> float:
    """FID of `samples` against `data`, both (N, C, H, W) in [−1, 1] (the registered metric; its
    options: `weights`, the weights file; `batch_size`; `features`, a stand-in feature network).
    One Inception metric per weights file and batch size per process, so the data's statistics are
    computed once per run."""
    if features is not None:
        return fid_metric(features, batch_size=batch_size)(samples, data)
    key = (inception_weights_path(weights).resolve(), batch_size)
    if key not in _METRICS:
        _METRICS[key] = fid_metric(weights=key[0], batch_size=batch_size)
    return _METRICS[key](samples, data)


def check_ready(*, weights: str | os.PathLike | None = None, features: FeatureNetwork | None = None,
                **_: object) -> None:
    """Raise now, before a run trains, what :func:`fid` would raise at its first evaluation: the
    weights file missing (:class:`InceptionWeightsMissing`) or torch-fidelity not installed."""
    if features is not None:
        return
    inception_weights_path(weights)
    _library()


register_metric("fid", fid, kinds=(IMAGES,), default=False, check=check_ready)
