"""flowcore.eval.plots for images: the PNG grid (one row per k, then the data) has the size its
formula says and the pixels of the images, and the sample figure is chosen by data kind — a grid
for images, a scatter for points — in the trainer and in `flowcore sample` alike."""
import numpy as np
import pytest
import torch
from matplotlib import image as mpimg
from PIL import Image

from flowcore.cli import main
from flowcore.data import DATASETS, register_dataset
from flowcore.eval.plots import SAMPLE_FIGURES, plot_image_grid, plot_samples, register_sample_figure, sample_figure
from flowcore.nn import registry
from flowcore.testing.nets import SmoothVelocity
from flowcore.train import Trainer, load_config


def test_the_grid_has_the_documented_pixel_size_and_the_images_pixels(tmp_path):
    samples = {4: torch.full((5, 1, 8, 8), -3.0), 1: torch.full((5, 1, 8, 8), 5.0)}  # out of range: clipped
    data = torch.zeros(7, 1, 8, 8)
    data[0, 0, 0, 0] = 1.0
    path = plot_image_grid(samples, data, tmp_path / "figs" / "grid.png", per_row=6, scale=2, pad=1, title="t")
    picture = np.asarray(Image.open(path))
    # 3 rows (k=1, k=4, data) of 8·2 pixels and 4 pads of 1; 6 columns of 16 and 7 pads
    assert picture.shape == (3 * 16 + 4, 6 * 16 + 7) and picture.dtype == np.uint8
    assert (picture[1:17, 1:17] == 255).all()              # k=1 first: +5 clipped to +1 → white
    assert (picture[18:34, 1:17] == 0).all()               # k=4: −3 clipped to −1 → black
    assert (picture[35:37, 1:3] == 255).all() and picture[35, 3] == 128  # data: +1 upscaled 2×, then 0 → mid grey
    assert (picture[1:17, 5 * 17 + 1:] == 255).all()       # only 5 samples: the sixth cell stays white
    assert Image.open(path).text["Description"] == "rows: 1 step, 4 steps, data"


def test_rgb_grids_the_default_scale_nan_and_the_npz_beside(tmp_path):
    generator = torch.Generator().manual_seed(0)
    samples = {2: torch.rand(20, 3, 4, 4, generator=generator) * 2 - 1}
    samples[2][0, :, 0, 0] = float("nan")
    data = torch.rand(3, 3, 4, 4, generator=generator) * 2 - 1
    path = plot_image_grid(samples, data, tmp_path / "rgb.png", save_npz=True)
    picture = mpimg.imread(path)                           # floats in [0, 1], (H, W, 3)
    scale = 32 // 4                                        # the default: about 32 pixels an image
    assert picture.shape == (2 * 4 * scale + 3 * 2, 16 * 4 * scale + 17 * 2, 3)
    assert np.allclose(picture[2, 2], 128 / 255)           # NaN draws as mid grey
    saved = np.load(path.with_suffix(".npz"))
    assert sorted(saved.files) == ["data", "k2"] and saved["k2"].shape == (20, 3, 4, 4)


def test_bad_images_are_errors_naming_what_is_wrong(tmp_path):
    data = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"samples for k=2: plot_image_grid draws images shaped \(N, C, H, W\) "
                                         r"with 1 or 3 channels, got \(4, 2, 8, 8\)"):
        plot_image_grid({2: torch.zeros(4, 2, 8, 8)}, data, tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"samples for k=1: images of shape \(1, 4, 4\) in a grid of \(1, 8, 8\)"):
        plot_image_grid({1: torch.zeros(4, 1, 4, 4)}, data, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_image_grid({}, data, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="per_row and scale must be ints >= 1"):
        plot_image_grid({1: data}, data, tmp_path / "bad.png", scale=0)


def test_the_figure_is_chosen_by_data_kind():
    assert sample_figure("images", (1, 8, 8)).plot is plot_image_grid
    assert sample_figure("checkerboard", (2,)).plot is plot_samples
    assert sample_figure("points2d", (2,)).plot is plot_samples
    assert sample_figure("ring", (2,)).plot is plot_samples       # a kind of its own, shaped like 2-D points
    assert sample_figure("my_pictures", (3, 4, 4)).plot is plot_image_grid
    assert sample_figure("points", (5,)) is None                  # flat vectors: no figure
    with pytest.raises(ValueError, match="data kind 'images' already has a sample figure"):
        register_sample_figure("images", plot_samples, samples=10)


@pytest.fixture
def image_run(monkeypatch, tmp_path):
    """A tiny image set and a network of any shape, registered for this test only."""
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    registry.register_network("smooth", lambda config, shape, sigma: SmoothVelocity(shape, width=4,
                                                                                     dtype=torch.float32))
    register_dataset("tiny_blobs", lambda n, generator=None, dtype=torch.float32:
                     torch.rand(n, 1, 4, 4, generator=generator, dtype=dtype) * 2 - 1,
                     shape=(1, 4, 4), kind="images", std=0.58)
    yield tmp_path
    del DATASETS["tiny_blobs"]


def test_the_trainer_and_flowcore_sample_draw_image_data_as_grids(image_run):
    out = image_run / "run"
    config = load_config(None, ["steps=2", "data.name=tiny_blobs", "network.kind=smooth", "data.batch=16",
                                "eval.samples=64", "eval.steps=1,2", "eval.ema=0.999", "log.tensorboard=false",
                                "log.figures=true", "log.progress=off", "checkpoint.every=0", f"out={out}"])
    summary = Trainer(config).train()
    # 3 rows (k=1, k=2, data) of 16 images, each 4·8 pixels (default scale) with 2-pixel pads
    assert np.asarray(Image.open(summary.samples)).shape == (3 * 32 + 4 * 2, 16 * 32 + 17 * 2)
    assert main(["sample", str(out), "--steps", "1", "--n", "10", "--out", str(image_run / "drawn")]) == 0
    one = np.asarray(Image.open(image_run / "drawn" / "samples_k1.png"))
    assert one.shape == (2 * 32 + 3 * 2, 16 * 32 + 17 * 2)   # one k row (10 samples) and the data row
    assert not (image_run / "drawn" / "samples.png").exists()  # one k: nothing to put together
    assert main(["sample", str(out), "--steps", "1", "2", "4", "--n", "10", "--out", str(image_run / "all")]) == 0
    every = np.asarray(Image.open(image_run / "all" / "samples.png"))
    assert every.shape == (4 * 32 + 5 * 2, 16 * 32 + 17 * 2)   # a row per k, then the data
    assert set(SAMPLE_FIGURES) >= {"images", "points2d", "checkerboard"}
