"""The Fréchet distance between Gaussian fits of two feature sets, and metrics built on it (docs/math.md §5).

FID and FD-digits are one formula applied in two feature spaces: fit a Gaussian N(μ, Σ) to the
features of the samples and to those of the data, then

    d² = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2}).

* :class:`FeatureStatistics` / :func:`feature_statistics`: μ and the unbiased Σ in float64,
  accumulated batch by batch, so 50k × 2048 features never sit in memory at once.
* :func:`frechet_distance`: the formula in float64, the matrix square root by two symmetric
  eigendecompositions (torch.linalg.eigh) instead of scipy's ``sqrtm`` (see its docstring).
* :class:`FeatureExtractor`: images (N, C, H, W) in [−1, 1] → features (N, D).
* :func:`frechet_metric`: a metric function ``(samples, data) -> float`` for the registry
  (flowcore.eval.metrics.register_metric) from an extractor, the data's statistics cached in
  memory by a content hash of the data tensor and, optionally, on disk (written atomically).

No FD metric is registered here: it needs an extractor (Inception, a digits classifier), which
lives beside the image data.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ..native.files import write_atomically

Statistics = tuple[torch.Tensor, torch.Tensor]
MEMORY_CACHE_ENTRIES = 8          # reference sets a process keeps statistics of (one per data set in practice)
CACHE_FORMAT = 1


class FeatureStatistics:
    """μ and the unbiased covariance of feature rows seen batch by batch, in float64.

    Sums of ``x − c`` and of ``(x − c)(x − c)ᵀ`` are accumulated with ``c`` the mean of the first
    batch: Σ is invariant to the shift, and centring first avoids the cancellation of the textbook
    ``Σxxᵀ − n μμᵀ`` when features have a large mean relative to their spread."""

    def __init__(self) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> FeatureStatistics:
        """Add the rows of `features` (n, D); returns self."""
        if not isinstance(features, torch.Tensor) or features.ndim != 2:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"feature statistics: expected features shaped (n, D), got {shape}")
        x = features.detach().to(torch.float64)
        if not torch.isfinite(x).all():
            raise ValueError("feature statistics: the features hold NaN or infinite values")
        if self.shift is None:
            if x.shape[0] == 0:
                return self
            self.shift = x.mean(dim=0)
            self.sum = torch.zeros_like(self.shift)
            self.outer = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
        elif x.shape[1] != self.shift.shape[0]:
            raise ValueError(f"feature statistics: a batch of {x.shape[1]} features after batches of "
                             f"{self.shift.shape[0]}")
        centred = x - self.shift
        self.sum += centred.sum(dim=0)
        self.outer += centred.T @ centred
        self.count += x.shape[0]
        return self

    def finalize(self) -> Statistics:
        """(μ (D,), Σ (D, D)), float64 on the CPU; Σ divides by n − 1 (as torch.cov)."""
        if self.count < 2:
            raise ValueError(f"feature statistics need at least 2 feature rows, got {self.count}")
        mean_shifted = self.sum / self.count
        sigma = (self.outer - self.count * torch.outer(mean_shifted, mean_shifted)) / (self.count - 1)
        return (self.shift + mean_shifted).cpu(), ((sigma + sigma.T) / 2).cpu()


def feature_statistics(features: torch.Tensor | Iterable[torch.Tensor]) -> Statistics:
    """(μ, Σ) in float64 of feature rows given as one (N, D) tensor or as an iterable of (n, D) batches."""
    accumulator = FeatureStatistics()
    for batch in (features.split(4096) if isinstance(features, torch.Tensor) else features):
        accumulator.update(batch)
    return accumulator.finalize()


def _symmetric_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The PSD square root of a symmetric matrix; eigenvalues below 0 (rounding) are clamped to 0."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """``|μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})``, computed in float64.

    Why the symmetric form is the same number: with A = Σ₁^{1/2} (symmetric PSD),
    Σ₁Σ₂ = A·(AΣ₂) and M = AΣ₂A = (AΣ₂)·A. XY and YX have the same eigenvalues for any square X, Y
    (singular ones too), so Σ₁Σ₂ has the eigenvalues λᵢ ≥ 0 of the symmetric PSD M, and
    tr (Σ₁Σ₂)^{1/2} = Σᵢ √λᵢ = tr M^{1/2}. M is symmetric, so ``eigh`` (backward stable, real
    results) replaces the general ``sqrtm`` of a non-symmetric product, which goes complex or
    inaccurate when Σ₁ or Σ₂ is near singular; tiny negative eigenvalues from rounding are clamped
    to 0. A result below 0 from rounding is returned as 0.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64).cpu() for m in (mu1, mu2))
    sigma1, sigma2 = (torch.as_tensor(s, dtype=torch.float64).cpu() for s in (sigma1, sigma2))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"frechet_distance: means must be vectors of one length, got {tuple(mu1.shape)} "
                         f"and {tuple(mu2.shape)}")
    d = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (d, d):
            raise ValueError(f"frechet_distance: {name} must be ({d}, {d}) like the means, got {tuple(sigma.shape)}")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not torch.isfinite(value).all():
            raise ValueError(f"frechet_distance: {name} holds NaN or infinite values")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    root1 = _symmetric_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return max(float(distance), 0.0)


@runtime_checkable
class FeatureExtractor(Protocol):
    """Images (N, C, H, W) with values in [−1, 1] → features (N, D), one row per image.

    The metric hands it float32 images (samples are scored in float64, data come in float32).
    Called on batches (at most the metric's ``batch_size`` images); it should be deterministic
    (eval mode, no dropout) so cached data statistics stay valid."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def tensor_digest(tensor: torch.Tensor) -> str:
    """A SHA-256 of a tensor's dtype, shape and bytes: the key of its cached statistics."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def _check_images(images: torch.Tensor, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"Fréchet metric: the {what} must be images shaped (N, C, H, W), got {shape}")


def extract_statistics(extractor: FeatureExtractor, images: torch.Tensor, batch_size: int) -> Statistics:
    """(μ, Σ) of ``extractor``'s features of `images`, fed `batch_size` float32 images at a time."""
    accumulator = FeatureStatistics()
    with torch.no_grad():
        for batch in images.split(batch_size):
            features = extractor(batch.to(torch.float32))
            if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != batch.shape[0]:
                shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
                raise ValueError(f"feature extractor {extractor!r}: {batch.shape[0]} images gave {shape}; "
                                 f"expected ({batch.shape[0]}, D)")
            accumulator.update(features)
    return accumulator.finalize()


class StatisticsCache:
    """Statistics of reference data by content hash: in memory (the last few), and on disk under
    `directory` when given, one ``{name}-{hash}.pt`` file per entry.

    A disk entry is written to a temporary file in the same folder and moved into place with
    ``os.replace`` (atomic on POSIX and Windows), so a run killed mid-write leaves at worst a stray
    ``*.tmp`` file, which is never read; an unreadable or malformed entry is recomputed and replaced."""

    def __init__(self, name: str, directory: str | os.PathLike | None = None) -> None:
        if directory is not None and (not name or any(c in name for c in "/\\")):
            raise ValueError(f"Fréchet metric: an on-disk cache needs a name for the extractor without path "
                             f"separators (it names the cache files), got {name!r}")
        self.name = name
        self.directory = None if directory is None else Path(directory)
        self.memory: OrderedDict[str, Statistics] = OrderedDict()

    def path(self, digest: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{self.name}-{digest}.pt"

    def get(self, digest: str) -> Statistics | None:
        if digest in self.memory:
            self.memory.move_to_end(digest)
            return self.memory[digest]
        if self.directory is None or not self.path(digest).is_file():
            return None
        try:
            entry = torch.load(self.path(digest), map_location="cpu", weights_only=True)
            mu, sigma = entry["mu"], entry["sigma"]
            valid = entry.get("format") == CACHE_FORMAT and mu.ndim == 1 and sigma.shape == (mu.shape[0],) * 2
        except Exception:  # noqa: BLE001 - any unreadable entry is simply recomputed
            return None
        if not valid:
            return None
        self._remember(digest, (mu, sigma))
        return mu, sigma

    def put(self, digest: str, statistics: Statistics) -> None:
        self._remember(digest, statistics)
        if self.directory is None:
            return
        entry = {"format": CACHE_FORMAT, "mu": statistics[0], "sigma": statistics[1]}
        write_atomically(self.path(digest), lambda file: torch.save(entry, file))

    def _remember(self, digest: str, statistics: Statistics) -> None:
        self.memory[digest] = statistics
        self.memory.move_to_end(digest)
        while len(self.memory) > MEMORY_CACHE_ENTRIES:
            self.memory.popitem(last=False)


def frechet_metric(extractor: FeatureExtractor, *, name: str | None = None, batch_size: int = 256,
                   cache_dir: str | os.PathLike | None = None) -> Callable[..., float]:
    """A metric ``f(samples, data) -> float`` for flowcore.eval.metrics.register_metric: the
    Fréchet distance between `extractor`'s features of the samples and of the data (both images
    (N, C, H, W) in [−1, 1]), fed `batch_size` images at a time.

    The data's statistics are computed once per distinct data tensor (keyed by a hash of its
    contents) and kept in memory; with `cache_dir`, also on disk as ``{name}-{hash}.pt``, where
    `name` identifies the extractor (default: its class name) so two extractors never share an
    entry. The samples' statistics are computed on every call."""
    if not callable(extractor):
        raise TypeError(f"frechet_metric: expected a feature extractor, images -> (N, D) features, got {extractor!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"frechet_metric: batch_size must be a positive int, got {batch_size!r}")
    cache = StatisticsCache(name or type(extractor).__name__, cache_dir)

    def frechet(samples: torch.Tensor, data: torch.Tensor) -> float:
        _check_images(samples, "samples")
        _check_images(data, "data")
        if samples.shape[1:] != data.shape[1:]:
            raise ValueError(f"Fréchet metric: samples of shape {tuple(samples.shape[1:])} against data of "
                             f"shape {tuple(data.shape[1:])}")
        digest = tensor_digest(data)
        reference = cache.get(digest)
        if reference is None:
            reference = extract_statistics(extractor, data, batch_size)
            cache.put(digest, reference)
        return frechet_distance(*extract_statistics(extractor, samples, batch_size), *reference)

    frechet.cache = cache  # type: ignore[attr-defined]  # for inspection and tests
    return frechet
