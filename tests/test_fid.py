"""FID (flowcore/eval/fid.py, docs/math.md §5): the code path end to end with a stand-in feature
network (no weights), the input conversion, the missing-weights error, the statistics cache, and —
where torch-fidelity is installed (the dev extra) — its Inception built from a local weights file."""
import math
import os

import pytest
import torch

from flowcore.eval import fid as fid_module
from flowcore.eval.fid import (WEIGHTS_ENV, WEIGHTS_FILE, WEIGHTS_URL, FIDFeatures, InceptionWeightsMissing, fid,
                               fid_metric, inception_weights_path, load_inception, to_uint8_rgb)
from flowcore.eval.frechet import feature_statistics, frechet_distance
from flowcore.eval.metrics import METRICS, select_metrics


class StandIn(torch.nn.Module):
    """A small fixed random conv net in Inception's place: it demands what torch-fidelity's
    Inception demands (uint8, three channels) and counts the images it has seen."""

    def __init__(self, features: int = 12, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(features, 3, 3, 3, generator=generator), requires_grad=False)
        self.images_seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3, (images.dtype, images.shape)
        self.images_seen += images.shape[0]
        x = (images.to(torch.float64) - 128) / 128
        return torch.nn.functional.conv2d(x, self.weight.to(torch.float64)).relu().mean(dim=(2, 3))


def images(n: int, seed: int, channels: int = 3, size: int = 8, spread: float = 0.5) -> torch.Tensor:
    """Images in [-spread, spread], so a shift up to 1 - spread is never clipped."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, channels, size, size, generator=generator, dtype=torch.float64) * 2 - 1) * spread


# ------------------------------------------------------------------------- the code path with a stand-in


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    metric = fid_metric(StandIn())
    x = images(256, 0, spread=0.4)
    same = metric(x, x)
    # Identical features on both sides: only the eigendecompositions' float64 rounding remains,
    # about eps·D·|Σ| with |Σ| < 1 for these features.
    assert 0 <= same < 1e-10
    values = [metric(x + shift, x) for shift in (0.05, 0.2, 0.4, 0.6)]
    assert values[0] > 1e-4 and all(a < b for a, b in zip(values, values[1:])), values


def test_fid_is_frechet_of_the_networks_features_of_the_uint8_images():
    network = StandIn()
    samples, data = images(200, 1), images(300, 2, spread=0.7)
    expected = frechet_distance(*feature_statistics(network(to_uint8_rgb(samples))),
                                *feature_statistics(network(to_uint8_rgb(data))))
    got = fid_metric(network, batch_size=64)(samples, data)   # batched: streamed statistics
    assert math.isclose(got, expected, rel_tol=1e-9), (got, expected)


def test_grayscale_images_are_scored_as_three_equal_channels():
    grey, data = images(128, 3, channels=1), images(128, 4, channels=1)
    rgb = fid_metric(StandIn())(grey.expand(-1, 3, -1, -1), data.expand(-1, 3, -1, -1))
    assert fid_metric(StandIn())(grey, data) == rgb


def test_the_uint8_conversion_inverts_flowcores_scaling_and_clips():
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    scaled = levels.to(torch.float32) / 127.5 - 1          # flowcore.data.arrays: x / 127.5 - 1
    assert torch.equal(to_uint8_rgb(scaled), levels.expand(-1, 3, -1, -1))
    assert to_uint8_rgb(torch.full((1, 3, 2, 2), 7.0)).unique().tolist() == [255]
    assert to_uint8_rgb(torch.full((1, 3, 2, 2), -7.0)).unique().tolist() == [0]
    with pytest.raises(ValueError, match=r"\(N, 3 or 1, H, W\).*got \(1, 2, 4, 4\)"):
        to_uint8_rgb(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        to_uint8_rgb(torch.full((1, 3, 2, 2), float("nan")))


def test_the_registered_metric_takes_a_stand_in_through_its_options():
    assert METRICS["fid"].kinds == ("images",) and not METRICS["fid"].default and METRICS["fid"].lower_is_better
    x, y = images(64, 5), images(64, 6)
    assert fid(x, y, features=StandIn()) == fid_metric(StandIn())(x, y)
    (chosen,) = select_metrics("images", ["fid"], {"fid": {"features": StandIn()}})   # no weights needed
    assert chosen.name == "fid"
    with pytest.raises(ValueError, match="cannot score 'digits' data"):
        select_metrics("digits", ["fid"])


# ------------------------------------------------------------------------- statistics cache


def test_the_datas_statistics_are_computed_once_and_cached_on_disk(tmp_path):
    network = StandIn()
    metric = fid_metric(network, name="standin", cache_dir=tmp_path)
    samples, data = images(50, 7), images(80, 8)
    first = metric(samples, data)
    assert network.images_seen == 130
    assert metric(samples, data) == first and network.images_seen == 180          # samples only
    assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == ["standin"]
    fresh = StandIn()                                    # a new process: the disk entry is read
    assert fid_metric(fresh, name="standin", cache_dir=tmp_path)(samples, data) == first
    assert fresh.images_seen == 50


# ------------------------------------------------------------------------- weights from a local file only


def test_unset_weights_are_an_error_naming_the_file_to_fetch(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(InceptionWeightsMissing) as error:
        inception_weights_path()
    message = str(error.value)
    assert f"{WEIGHTS_ENV} is not set" in message and WEIGHTS_FILE in message and WEIGHTS_URL in message
    with pytest.raises(InceptionWeightsMissing, match=WEIGHTS_FILE):
        select_metrics("images", ["fid"])              # before a run trains, not at its first evaluation
    with pytest.raises(FileNotFoundError, match="never downloads"):   # what `flowcore` reports as one line
        fid(images(4, 0), images(4, 1))


def test_a_missing_or_wrong_weights_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(InceptionWeightsMissing, match=r"nowhere\.pth \(from FLOWCORE_INCEPTION_WEIGHTS\) does not"):
        inception_weights_path()
    with pytest.raises(InceptionWeightsMissing, match="is a directory"):
        inception_weights_path(tmp_path)
    pytest.importorskip("torch_fidelity")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(InceptionWeightsMissing, match="not the Inception state dict"):
        load_inception(tmp_path / "other.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a pickle")
    with pytest.raises(InceptionWeightsMissing, match=f"garbage.pth is not a readable state dict.*{WEIGHTS_FILE}"):
        load_inception(tmp_path / "garbage.pth")


# ------------------------------------------------------------------------- torch-fidelity itself


@pytest.fixture
def fake_inception_weights(tmp_path, monkeypatch):
    """A state dict with every key and shape of torch-fidelity's Inception (random weights: the
    real file is 91 MB from the internet), and no way to download anything."""
    inception = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")

    def no_download(*args, **kwargs):
        raise AssertionError(f"tried to download {args or kwargs}")

    monkeypatch.setattr(inception, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)

    class Unloaded(inception.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None        # its randomly initialised tensors are what we want to save

    torch.save({}, tmp_path / "empty.pth")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = Unloaded("shape", ["2048"], feature_extractor_weights_path=str(tmp_path / "empty.pth")).state_dict()
    path = tmp_path / WEIGHTS_FILE
    torch.save(state, path)
    return path


def test_our_url_and_file_are_torch_fidelitys():
    inception = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    assert inception.URL_INCEPTION_V3 == WEIGHTS_URL and WEIGHTS_URL.endswith("/" + WEIGHTS_FILE)


def test_torch_fidelitys_inception_loads_a_local_file_and_gives_pool3_features(fake_inception_weights, tmp_path,
                                                                               monkeypatch):
    network = load_inception(fake_inception_weights)
    assert not network.training and not any(p.requires_grad for p in network.parameters())
    features = FIDFeatures(lambda: network, "inception")(images(1, 9, channels=1, size=32, spread=1.0))
    assert features.shape == (1, 2048) and features.dtype == torch.float32 and torch.isfinite(features).all()
    # The registered metric, through the environment variable, its data statistics cached on disk
    # under the flowcore cache dir, keyed by the layer and the weights file's hash. On the 64-d
    # first pooling layer: two eigendecompositions of 2048 x 2048 take half a minute on two cores.
    monkeypatch.setattr(fid_module, "FEATURE_LAYER", "64")
    monkeypatch.setenv(WEIGHTS_ENV, str(fake_inception_weights))
    monkeypatch.setenv("FLOWCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fid_module, "_METRICS", {})
    value = fid(images(3, 10, size=16), images(4, 11, size=16), batch_size=2)
    assert math.isfinite(value) and value >= 0
    (entry,) = os.listdir(tmp_path / "cache" / "fid")
    assert entry.startswith(f"inception64-{fid_module.weights_digest(fake_inception_weights)[:16]}-")


def test_a_run_that_lists_fid_checks_eval_inception_weights_before_training(tmp_path, monkeypatch):
    """eval.inception_weights reaches the metric's check when the Trainer is built: a run listing
    "fid" with a missing file stops before its first step, naming the file and the config key's value."""
    import numpy as np

    from flowcore.train import Trainer, load_config

    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    images = tmp_path / "images.npy"
    np.save(images, np.random.default_rng(0).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8))
    config = load_config(None, [f"data.name={images}", "data.batch=8", "network.kind=unet", "network.model_channels=8",
                                "network.channel_mult=[1, 2]", "network.num_blocks=1", "network.attn_resolutions=[]",
                                "network.channels_per_head=8", "eval.metrics=[\"fid\"]",
                                f"eval.inception_weights={tmp_path / 'missing.pth'}", f"out={tmp_path / 'run'}"])
    assert config.eval.metric_options() == {"fid": {"weights": str(tmp_path / "missing.pth")}}
    with pytest.raises(InceptionWeightsMissing, match=r"missing\.pth"):
        Trainer(config)
    assert not (tmp_path / "run" / "checkpoints").exists()
