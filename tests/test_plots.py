"""flowcore.eval.plots: sample panels and loss curves written as PNG files (Agg, no display)."""
import csv
import math

import pytest
import torch

from flowcore.data import checkerboard
from flowcore.eval.plots import plot_losses, plot_samples, read_loss_csv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from the PNG header."""
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_MAGIC
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_plot_samples_writes_one_panel_per_k_beside_the_data(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = checkerboard(3000, g)
    samples = {4: checkerboard(3000, g), 1: data + 0.1 * torch.randn(3000, 2, generator=g)}
    path = plot_samples(samples, data, tmp_path / "figs" / "samples.png", title="test")
    assert path == tmp_path / "figs" / "samples.png" and path.stat().st_size > 10_000
    width, height = png_size(path)
    assert width > 2.5 * height  # a row of three square panels
    two = plot_samples({1: samples[1]}, data, tmp_path / "two.png")
    assert png_size(two)[0] < width


def test_plot_samples_survives_nan_and_far_samples_and_refuses_bad_shapes(tmp_path):
    data = checkerboard(500)
    wild = torch.cat([checkerboard(500), torch.full((3, 2), math.nan), torch.full((3, 2), 50.0)])
    assert plot_samples({2: wild}, data, tmp_path / "wild.png").stat().st_size > 0
    with pytest.raises(ValueError, match="2-D points"):
        plot_samples({1: torch.zeros(5, 3)}, data, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="empty"):
        plot_samples({}, data, tmp_path / "bad.png")


def test_plot_losses_from_a_csv_and_from_a_dict(tmp_path):
    csv_path = tmp_path / "log.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "fm", "lsd", "objective"])
        for step in range(0, 200, 10):
            writer.writerow([step, 1 / (1 + step), "" if step == 50 else 0.1 * math.exp(-step / 50), "lsd"])
    columns = read_loss_csv(csv_path)
    assert set(columns) == {"step", "fm", "lsd"} and math.isnan(columns["lsd"][5])
    path = plot_losses(csv_path, tmp_path / "loss.png")
    assert png_size(path) and path.stat().st_size > 5_000
    negative = plot_losses({"weighted": [1.0, 0.3, -0.2, -0.4], "fm": [1.0, 0.5, 0.25, 0.1]}, tmp_path / "neg.png")
    assert negative.stat().st_size > 5_000
    with pytest.raises(ValueError, match="no loss series"):
        plot_losses({"step": [0, 1]}, tmp_path / "none.png")
