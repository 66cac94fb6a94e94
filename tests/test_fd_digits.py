"""FD-digits (flowcore.eval.fd_digits): the digits classifier is accurate, trained deterministically
and cached once per cache dir (a corrupt entry retrained), its noise floor sits below the FD of
images that are not digits, and the metric is a default for digits data only, its floor printed in
the evaluation table (docs/math.md §5, docs/design.md metrics).

The classifier is trained once per test session in a temporary cache dir (a few CPU seconds)."""
import math

import pytest
import torch

from flowcore.data import make_source
from flowcore.data.digits import digits_with_labels
from flowcore.eval import fd_digits as fd
from flowcore.eval.evaluate import EvaluationResults, evaluate_sampler, format_table
from flowcore.eval.metrics import METRICS, register_metric, select_metrics


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fd-digits-cache")


@pytest.fixture(scope="session")
def trained(cache_dir):
    """(classifier, whether this call trained it): the session's one training."""
    return fd.load_or_train_classifier(cache_dir)


def test_the_classifier_is_accurate_on_the_held_out_digits_at_every_resolution(trained):
    model, was_trained = trained
    assert was_trained
    with torch.no_grad():
        for resolution in (0, 16):   # 16×16 digits are area-averaged to 8×8 before the classifier
            images, labels = digits_with_labels("test", resolution)
            accuracy = (model(images).argmax(1) == labels).double().mean().item()
            assert accuracy >= 0.97, (resolution, accuracy)


def test_two_trainings_in_fresh_cache_dirs_give_identical_weights(trained, tmp_path):
    again, was_trained = fd.load_or_train_classifier(tmp_path)
    assert was_trained and fd.classifier_path(tmp_path).is_file()
    first, second = trained[0].state_dict(), again.state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_the_cached_weights_are_used_the_second_time(trained, cache_dir, monkeypatch):
    def refuse():
        raise AssertionError("retrained although the cache holds the weights")

    monkeypatch.setattr(fd, "train_classifier", refuse)
    model, was_trained = fd.load_or_train_classifier(cache_dir)
    assert not was_trained
    reference = trained[0].state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in model.state_dict().items())


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "other_shapes"])
def test_a_corrupt_cache_entry_is_retrained_and_replaced(trained, cache_dir, tmp_path, monkeypatch, corruption):
    path = fd.classifier_path(tmp_path)
    path.parent.mkdir(parents=True)
    if corruption == "garbage":
        path.write_bytes(b"not a torch file")
    elif corruption == "truncated":
        path.write_bytes(fd.classifier_path(cache_dir).read_bytes()[:200])
    else:
        torch.save(fd.DigitsClassifier(channels=(4, 4)).state_dict(), path)
    calls = []
    monkeypatch.setattr(fd, "train_classifier", lambda: calls.append(1) or trained[0])   # stands in: no 2nd training
    model, was_trained = fd.load_or_train_classifier(tmp_path)
    assert was_trained and calls == [1] and model is trained[0]
    assert fd.load_or_train_classifier(tmp_path)[1] is False and calls == [1]   # the entry was replaced
    assert not list(path.parent.glob("*.tmp"))


def test_the_noise_floor_is_below_the_fd_of_noise_and_of_shuffled_digits(trained, cache_dir):
    metric = fd.fd_digits_metric(cache_dir)
    floor = fd.noise_floor(cache_dir=cache_dir)
    train = digits_with_labels("train")[0]
    held_out = digits_with_labels("test")[0]
    generator = torch.Generator().manual_seed(0)
    noise = (0.5 * torch.randn(held_out.shape, generator=generator)).clamp(-1, 1)
    # each image's pixels permuted: the same grey levels, no strokes
    order = torch.argsort(torch.rand(held_out.shape[0], 64, generator=generator), dim=1)
    shuffled = held_out.flatten(1).gather(1, order).view_as(held_out)
    assert 0 < floor and math.isfinite(floor)
    assert floor < metric(noise, train) / 10 and floor < metric(shuffled, train) / 10
    assert fd.noise_floor(16, cache_dir) < metric(torch.nn.functional.interpolate(shuffled, size=16),
                                                  digits_with_labels("train", 16)[0]) / 10


def test_fd_digits_refuses_images_that_are_not_one_channel_digits(cache_dir):
    metric = fd.fd_digits_metric(cache_dir)
    with pytest.raises(ValueError, match=r"FD-digits scores one-channel square digits \(N, 1, r, r\), r >= 8, "
                                         r"got \(4, 3, 8, 8\)"):
        metric(torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 8, 8))


def test_fd_digits_is_a_default_for_digits_data_and_refused_for_other_images():
    assert make_source("digits", 4).kind == "digits"
    assert "fd_digits" in [metric.name for metric in select_metrics("digits")]
    assert "fd_digits" not in [metric.name for metric in select_metrics("images")]
    assert {"energy", "sw2"} <= {metric.name for metric in select_metrics("digits")}   # every-kind metrics apply
    with pytest.raises(ValueError, match="'fd_digits' cannot score 'images' data"):
        select_metrics("images", ["fd_digits"])
    assert METRICS["fd_digits"].floor is fd.data_floor


def test_a_metric_floor_must_be_a_function():
    with pytest.raises(TypeError, match="metric 'floored': floor must be a function"):
        register_metric("floored", lambda samples, data: 0.0, floor=0.5)
    assert "floored" not in METRICS


def test_the_floor_shows_beside_the_evaluation_table_of_a_digits_run(trained, cache_dir, monkeypatch):
    monkeypatch.setenv("FLOWCORE_CACHE_DIR", str(cache_dir))
    # a "sampler" that returns its noise: far from digits, so above the floor
    results = evaluate_sampler(lambda s, t, x: torch.zeros_like(x), [1, 2], 300, dataset="digits",
                               metrics=["fd_digits", "sw2"], options={"sw2": {"projections": 8}})
    assert isinstance(results, EvaluationResults) and set(results.floors) == {"fd_digits"}
    assert results.floors["fd_digits"] == pytest.approx(fd.noise_floor(cache_dir=cache_dir))
    assert results[1]["fd_digits"] > results.floors["fd_digits"]
    table = format_table(results).splitlines()
    assert table[0].split() == ["metric", "k=1", "k=2", "floor"]
    fd_row = next(line.split() for line in table if line.startswith("fd_digits"))
    assert float(fd_row[-1]) == pytest.approx(results.floors["fd_digits"], abs=1e-4)
    assert next(line.split() for line in table if line.startswith("sw2"))[-1] == "—"   # no floor declared
    assert "floor" not in format_table({1: {"sw2": 0.1}})   # tables without floors are unchanged
