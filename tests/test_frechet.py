"""flowcore.eval.frechet: the Fréchet distance in float64 against scipy's sqrtm and a closed form,
streaming feature statistics, and the metric built from an extractor with its data-statistics
cache (in memory and atomically on disk)."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcore.data import register_dataset
from flowcore.eval.evaluate import evaluate_sampler
from flowcore.eval.frechet import (FeatureExtractor, FeatureStatistics, feature_statistics, frechet_distance,
                                   frechet_metric, tensor_digest)
from flowcore.eval.metrics import register_metric, select_metrics

F64 = torch.float64
EPS = torch.finfo(F64).eps


def random_spd(d, rank, generator, jitter=0.0):
    """A random PSD matrix of the given rank (+ jitter·I): rank < d is singular, tiny jitter near singular."""
    factor = torch.randn(d, rank, generator=generator, dtype=F64)
    return factor @ factor.T / rank + jitter * torch.eye(d, dtype=F64)


def scipy_frechet(mu1, sigma1, mu2, sigma2):
    """The textbook formula with scipy.linalg.sqrtm of the (non-symmetric) product, as pytorch-fid does."""
    root = np.real(scipy.linalg.sqrtm(sigma1.numpy() @ sigma2.numpy()))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1.numpy()) + np.trace(sigma2.numpy()) - 2 * np.trace(root))


@settings(deadline=None, max_examples=25)
@given(d=st.integers(1, 24), rank_fraction=st.sampled_from([1.0, 0.5, 0.25]),
       jitter=st.sampled_from([0.0, 1e-12, 1e-8, 1e-3]), seed=st.integers(0, 2 ** 31 - 1))
def test_frechet_distance_matches_scipy_sqrtm_including_near_singular_covariances(d, rank_fraction, jitter, seed):
    generator = torch.Generator().manual_seed(seed)
    rank = max(1, int(d * rank_fraction))
    mu1, mu2 = torch.randn(d, generator=generator, dtype=F64), torch.randn(d, generator=generator, dtype=F64)
    sigma1, sigma2 = random_spd(d, rank, generator, jitter), random_spd(d, rank, generator, jitter)
    ours, reference = frechet_distance(mu1, sigma1, mu2, sigma2), scipy_frechet(mu1, sigma1, mu2, sigma2)
    # Tolerance: both are float64. Where Σ₁Σ₂ has (near-)zero eigenvalues, a rounding perturbation
    # δ ≈ d·ε·‖Σ‖ of an eigenvalue λ ≈ 0 moves √λ by up to √δ, in either method; with up to d such
    # eigenvalues the trace term, doubled, moves by ≤ 2d·√(d·ε·‖Σ‖). Well-conditioned cases agree to
    # ~1e-13 relative; this bound only bites on the singular ones.
    scale = float(sigma1.trace() + sigma2.trace())
    tolerance = 2 * d * math.sqrt(d * EPS * scale) + 1e-10 * (scale + float((mu1 - mu2).square().sum()))
    assert ours == pytest.approx(reference, abs=tolerance)
    assert ours >= 0


def test_frechet_distance_equals_the_closed_form_for_commuting_covariances():
    """Σ₁ = Q diag(a) Qᵀ, Σ₂ = Q diag(b) Qᵀ: tr(Σ₁Σ₂)^{1/2} = Σ √(aᵢbᵢ) exactly, zero eigenvalues included
    (where scipy's sqrtm of a singular product is least accurate)."""
    generator = torch.Generator().manual_seed(3)
    d = 32
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=F64))
    a, b = torch.rand(d, generator=generator, dtype=F64) * 4, torch.rand(d, generator=generator, dtype=F64) * 4
    a[:10], b[5:15] = 0.0, 1e-14     # singular and near-singular directions
    mu1, mu2 = torch.randn(d, generator=generator, dtype=F64), torch.randn(d, generator=generator, dtype=F64)
    exact = float((mu1 - mu2).square().sum() + a.sum() + b.sum() - 2 * (a * b).sqrt().sum())
    ours = frechet_distance(mu1, q @ torch.diag(a) @ q.T, mu2, q @ torch.diag(b) @ q.T)
    # |a|,|b| ≤ 4: zero eigenvalues of Σ₁^{1/2}Σ₂Σ₁^{1/2} come out as ±d·ε·16 ≈ 1e-13, whose clamped
    # square roots add ≤ d·√(1e-13) ≈ 1e-5 in the worst case; the rest agrees to ~1e-13.
    assert ours == pytest.approx(exact, abs=d * math.sqrt(d * EPS * 16))


def test_frechet_distance_is_zero_for_identical_statistics_and_symmetric():
    generator = torch.Generator().manual_seed(1)
    d = 16
    mu1, mu2 = torch.randn(d, generator=generator, dtype=F64), torch.randn(d, generator=generator, dtype=F64)
    sigma1, sigma2 = random_spd(d, d, generator), random_spd(d, 4, generator)
    assert frechet_distance(mu1, sigma1, mu1, sigma1) == pytest.approx(0.0, abs=1e-10 * float(sigma1.trace()))
    assert frechet_distance(mu2, sigma2, mu2, sigma2) == pytest.approx(0.0, abs=2 * d * math.sqrt(d * EPS * 4))
    forward, backward = frechet_distance(mu1, sigma1, mu2, sigma2), frechet_distance(mu2, sigma2, mu1, sigma1)
    assert forward > 1 and forward == pytest.approx(backward, rel=1e-9)
    # only the mean differs: d² = |μ₁ − μ₂|²
    assert frechet_distance(mu1, sigma1, mu2, sigma1) == pytest.approx(float((mu1 - mu2).square().sum()), rel=1e-9)


def test_frechet_distance_refuses_bad_shapes_and_values():
    mu, sigma = torch.zeros(3), torch.eye(3)
    with pytest.raises(ValueError, match=r"sigma2 must be \(3, 3\)"):
        frechet_distance(mu, sigma, mu, torch.eye(4))
    with pytest.raises(ValueError, match="means must be vectors of one length"):
        frechet_distance(mu, sigma, torch.zeros(4), sigma)
    with pytest.raises(ValueError, match="mu1 holds NaN"):
        frechet_distance(torch.full((3,), math.nan), sigma, mu, sigma)


def test_streaming_statistics_equal_one_shot_mean_and_torch_cov():
    generator = torch.Generator().manual_seed(2)
    features = 100.0 + torch.randn(1000, 12, generator=generator, dtype=F64) * torch.linspace(0.1, 3, 12, dtype=F64)
    accumulator = FeatureStatistics()
    for batch in features.float().split(97):       # uneven batches, float32 in, float64 accumulated
        accumulator.update(batch)
    mu, sigma = accumulator.finalize()
    assert mu.dtype == sigma.dtype == F64
    exact = features.float().double()
    torch.testing.assert_close(mu, exact.mean(dim=0), rtol=1e-12, atol=1e-10)
    # large mean (100) against unit spread: the shifted sums keep float64's precision
    torch.testing.assert_close(sigma, torch.cov(exact.T), rtol=1e-10, atol=1e-11)
    mu2, sigma2 = feature_statistics(iter(exact.split(333)))
    torch.testing.assert_close(sigma2, sigma, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 feature rows"):
        feature_statistics(exact[:1])
    with pytest.raises(ValueError, match=r"a batch of 5 features after batches of 12"):
        FeatureStatistics().update(exact[:4]).update(exact[:4, :5])
    with pytest.raises(ValueError, match="the features hold NaN"):
        FeatureStatistics().update(torch.full((3, 2), math.nan))


class Projection:
    """A stand-in extractor: a fixed random projection of the flattened images, counting its calls."""

    def __init__(self, pixels, features=6, seed=0):
        self.weight = torch.randn(pixels, features, generator=torch.Generator().manual_seed(seed))
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        return images.flatten(1) @ self.weight


def images(n, seed, shift=0.0):
    return (torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1 + shift).clamp(-1, 1)


def test_the_metric_caches_data_statistics_by_content_and_recomputes_samples():
    extractor = Projection(16)
    assert isinstance(extractor, FeatureExtractor)
    metric = frechet_metric(extractor, batch_size=40)
    data, samples = images(100, 0), images(100, 1)
    first = metric(samples, data)
    assert extractor.calls == 3 + 3            # 100 images in batches of 40, samples then data
    assert metric(samples, data.clone()) == first   # same contents, another tensor: cache hit
    assert extractor.calls == 6 + 3            # only the samples were extracted again
    assert metric(images(100, 2, shift=0.5), data) > first
    metric(samples, images(100, 3))            # other data: computed
    assert extractor.calls == 9 + 3 + 6
    assert tensor_digest(data) == tensor_digest(data.clone()) != tensor_digest(data.double())


def test_the_on_disk_cache_is_atomic_and_survives_a_crash(tmp_path, monkeypatch):
    data, samples = images(64, 0), images(64, 1)
    extractor = Projection(16)
    entry = tmp_path / f"proj-{tensor_digest(data)}.pt"
    # a killed writer: the replace into place never happens, so no entry exists afterwards
    crashing = frechet_metric(extractor, name="proj", cache_dir=tmp_path)
    monkeypatch.setattr("flowcore.eval.frechet.os.replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        crashing(samples, data)
    monkeypatch.undo()
    assert not entry.exists() and not list(tmp_path.glob("*.tmp"))
    # a leftover half-written temporary file (a SIGKILL mid-write) is never read
    (tmp_path / f".proj-{tensor_digest(data)}.abc123.tmp").write_bytes(b"PK\x03\x04 half a zip")
    writer = frechet_metric(Projection(16), name="proj", cache_dir=tmp_path)
    value = writer(samples, data)
    assert entry.is_file()
    # a fresh process (a new metric) reads the entry instead of extracting the data again
    reader_extractor = Projection(16)
    reader = frechet_metric(reader_extractor, name="proj", cache_dir=tmp_path)
    assert reader(samples, data) == pytest.approx(value, rel=1e-12)
    assert reader_extractor.calls == 1         # the samples only
    # a corrupt entry is recomputed and replaced
    entry.write_bytes(b"not a checkpoint")
    mended_extractor = Projection(16)
    assert frechet_metric(mended_extractor, name="proj", cache_dir=tmp_path)(samples, data) == pytest.approx(value)
    assert mended_extractor.calls == 2 and torch.load(entry, weights_only=True)["mu"].shape == (6,)
    with pytest.raises(ValueError, match="needs a name for the extractor"):
        frechet_metric(Projection(16), name="a/b", cache_dir=tmp_path)


def test_the_metric_refuses_what_is_not_images_and_bad_extractors():
    metric = frechet_metric(Projection(16))
    with pytest.raises(ValueError, match=r"the samples must be images shaped \(N, C, H, W\), got \(10, 2\)"):
        metric(torch.zeros(10, 2), images(10, 0))
    with pytest.raises(ValueError, match=r"samples of shape \(1, 8, 8\) against data of shape \(1, 4, 4\)"):
        metric(torch.zeros(10, 1, 8, 8), images(10, 0))
    broken = frechet_metric(lambda x: x.flatten(1)[:, :3].reshape(-1))
    with pytest.raises(ValueError, match=r"10 images gave \(30,\); expected \(10, D\)"):
        broken(images(10, 1), images(10, 0))


def test_a_registered_frechet_metric_is_chosen_by_eval_metrics_for_images_only(registries):
    register_metric("fd_projection", frechet_metric(Projection(16)), kinds=("images",))
    assert "fd_projection" in [m.name for m in select_metrics("images")]
    assert "fd_projection" not in [m.name for m in select_metrics("points2d")]
    (chosen,) = select_metrics("images", ["fd_projection"])
    assert chosen(images(50, 1), images(50, 0)) > 0
    with pytest.raises(ValueError, match="cannot score 'checkerboard' data"):
        select_metrics("checkerboard", ["fd_projection"])
    # through evaluation, as the trainer's eval.metrics does: an images data set, a net that keeps x0
    register_dataset("tiny_images", lambda n, generator=None, dtype=torch.float32:
                     torch.rand(n, 1, 4, 4, generator=generator, dtype=dtype) * 2 - 1,
                     shape=(1, 4, 4), kind="images", std=0.5)
    results = evaluate_sampler(lambda s, t, x: torch.zeros_like(x), [1, 2], 64, dataset="tiny_images")
    assert list(results[1]) == ["energy", "sw2", "fd_projection"]   # the images defaults, in registration order
    results = evaluate_sampler(lambda s, t, x: torch.zeros_like(x), [1], 64, dataset="tiny_images",
                               metrics=["fd_projection"])
    assert list(results[1]) == ["fd_projection"] and results[1]["fd_projection"] > 0
