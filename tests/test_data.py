"""flowcore.data: the 2-D generators, .npy/.npz loading, and DataSource streams (docs/math.md §1, §5)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowcore.data import (
    BOARD_CELLS,
    CHECKERBOARD_STD,
    DATASETS,
    FILLED,
    DataSource,
    array_std,
    checkerboard,
    dataset_std,
    eight_gaussians,
    load_array,
    make_source,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_generators_shapes_dtypes_seeds_and_std(name):
    sample = DATASETS[name]
    x = sample(20000, gen(0), torch.float64)
    assert x.shape == (20000, 2) and x.dtype == torch.float64
    assert sample(5, gen(0)).dtype == torch.float32 and sample(0, gen(0)).shape == (0, 2)
    assert torch.equal(sample(100, gen(1)), sample(100, gen(1)))
    assert not torch.equal(sample(100, gen(1)), sample(100, gen(2)))
    # centred, inside [−1.3, 1.3]², std as declared (5 standard errors; std of x² ≤ 1.3² at n = 20000)
    assert x.mean(0).abs().max() < 5 * 1.3 / math.sqrt(20000)
    assert x.abs().max() < 1.3
    assert abs(array_std(x) - dataset_std(name)) < 5 * 1.3 / math.sqrt(20000)
    with pytest.raises(ValueError, match="number of samples"):
        sample(-1)


def test_checkerboard_points_lie_on_filled_squares_evenly():
    x = checkerboard(16000, gen(3))
    assert ((x >= -1) & (x <= 1)).all()
    cell = ((x + 1) * BOARD_CELLS / 2).floor().long().clamp(0, BOARD_CELLS - 1)
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    counts = torch.bincount(cell[:, 0] * BOARD_CELLS + cell[:, 1], minlength=16)
    assert all(abs(counts[i * 4 + j] - 2000) < 5 * math.sqrt(2000) for i, j in FILLED)
    assert dataset_std("checkerboard") == CHECKERBOARD_STD == 3 ** -0.5


def test_eight_gaussians_sit_on_their_circle():
    x = eight_gaussians(8000, gen(4), torch.float64)
    angle = torch.round(torch.atan2(x[:, 1], x[:, 0]) / (math.pi / 4)) * (math.pi / 4)
    centre = 0.8 * torch.stack([angle.cos(), angle.sin()], dim=1)
    assert abs(float((x - centre).std()) - 0.07) < 0.005


def test_load_npy_and_npz(tmp_path):
    data = np.random.default_rng(0).normal(size=(10, 3, 2)).astype(np.float32)
    np.save(tmp_path / "a.npy", data)
    np.savez(tmp_path / "one.npz", x=data)
    np.savez(tmp_path / "two.npz", x=data, y=2 * data)
    assert torch.equal(load_array(tmp_path / "a.npy"), torch.from_numpy(data))
    assert load_array(str(tmp_path / "one.npz")).dtype == torch.float32
    assert torch.equal(load_array(tmp_path / "two.npz", key="y"), torch.from_numpy(2 * data))


@pytest.mark.parametrize("array, error, message", [
    (np.zeros(5), ValueError, "at least 2 dimensions"),
    (np.zeros(()), ValueError, "at least 2 dimensions"),
    (np.zeros((0, 2)), ValueError, "N >= 1"),
    (np.zeros((4, 2), dtype=np.int64), ValueError, "floating-point"),
    (np.array([[0.0, np.nan], [1.0, 1.0], [np.inf, 0.0]]), ValueError, "2 of 3 samples hold NaN or infinite"),
])
def test_load_refuses_bad_arrays(tmp_path, array, error, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(error, match=message):
        load_array(tmp_path / "bad.npy")


def test_load_errors_for_paths_and_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_array(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="expected a .npy or .npz file"):
        load_array(tmp_path / "data.csv")
    np.savez(tmp_path / "two.npz", x=np.zeros((3, 2)), y=np.zeros((3, 2)))
    with pytest.raises(KeyError, match="no array 'z' in the archive; it holds: x, y"):
        load_array(tmp_path / "two.npz", key="z")
    with pytest.raises(ValueError, match="holds 2 arrays \\(x, y\\); choose one with key="):
        load_array(tmp_path / "two.npz")
    np.save(tmp_path / "a.npy", np.zeros((3, 2)))
    with pytest.raises(ValueError, match="only applies to .npz"):
        load_array(tmp_path / "a.npy", key="x")
    with pytest.raises(ValueError, match="unknown data 'nope'"):
        make_source("nope", 4)
    with pytest.raises(FileNotFoundError):
        make_source(tmp_path / "missing.npz", 4)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_builtin_source_reproduces_and_resumes(name):
    source = make_source(name, 16, seed=7)
    assert source.dims == (2,) and source.std == dataset_std(name) and source.name == name
    first = [next(source) for _ in range(3)]
    again = make_source(name, 16, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    state = source.state_dict()
    expected = [next(source) for _ in range(2)]
    fresh = make_source(name, 16, seed=0)
    fresh.load_state_dict(torch.load(_roundtrip(state), weights_only=True))
    assert all(torch.equal(a, next(fresh)) for a in expected)
    assert not torch.equal(next(make_source(name, 16, seed=8)), first[0])


def _roundtrip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@given(st.integers(1, 12), st.integers(1, 25), st.integers(0, 6))
def test_array_source_epochs_and_exact_resume(n, batch, before):
    """Shuffled epochs: every n consecutive draws hold each sample once (aligned to epochs), and a
    state saved after any number of batches resumes bit for bit, also mid-epoch."""
    data = torch.arange(n * 2, dtype=torch.float64).reshape(n, 2)
    source = DataSource("arr", batch, 3, array=data, dtype=torch.float64)
    for _ in range(before):
        next(source)
    state = source.state_dict()
    expected = torch.cat([next(source) for _ in range(3)])
    resumed = DataSource("arr", batch, 99, array=data, dtype=torch.float64)
    resumed.load_state_dict(torch.load(_roundtrip(state), weights_only=True))
    assert torch.equal(torch.cat([next(resumed) for _ in range(3)]), expected)
    fresh = DataSource("arr", batch, 5, array=data, dtype=torch.float64)
    stream = torch.cat([next(fresh) for _ in range(-(-3 * n // batch))])[:3 * n, 0]
    assert all(sorted(epoch.tolist()) == list(range(0, 2 * n, 2)) for epoch in stream.reshape(3, n))


def test_array_source_from_a_file(tmp_path):
    data = np.random.default_rng(1).normal(1.0, 2.0, size=(50, 2, 3)).astype(np.float64)
    np.savez(tmp_path / "d.npz", samples=data)
    source = make_source(tmp_path / "d.npz", 8, seed=0, key="samples")
    batch = next(source)
    assert batch.shape == (8, 2, 3) and batch.dtype == torch.float32 and source.dims == (2, 3)
    assert source.std == pytest.approx(float(np.std(data)))  # one scalar: all entries, one mean
    assert iter(source) is source
    with pytest.raises(ValueError, match="this state is for data"):
        source.load_state_dict(make_source("checkerboard", 8).state_dict())


def test_source_arguments_are_checked():
    with pytest.raises(ValueError, match="batch_size"):
        make_source("checkerboard", 0)
    with pytest.raises(ValueError, match="exactly one of"):
        DataSource("x", 4, 0)
    custom = DataSource("custom", 4, 0, sampler=checkerboard)  # σ estimated from a seeded sample
    assert custom.std == pytest.approx(CHECKERBOARD_STD, rel=3e-3) and custom.dims == (2,)
