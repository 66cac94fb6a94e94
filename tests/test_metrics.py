"""flowcore.eval: the checkerboard KL, energy distance, sliced W2, evaluate_sampler (docs/math.md §5)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_sample import GaussianFlowMap

from flowcore.data import FILLED, checkerboard
from flowcore.eval.checkerboard_kl import checkerboard_bin_mass, checkerboard_kl, discrete_kl, histogram_mass
from flowcore.eval.distances import energy_distance, sliced_wasserstein2
from flowcore.eval.evaluate import evaluate_sampler, format_table
from flowcore.nn import FlowMapMLP


def gen(seed):
    return torch.Generator().manual_seed(seed)


@given(st.integers(1, 80))
def test_bin_mass_is_the_exact_overlap_area(bins):
    """Against a midpoint rule on a 4× finer grid, on which the board's edges (multiples of 1/2) fall
    on sub-cell edges, so every sub-cell is wholly filled or empty and the rule is exact."""
    fine = 4 * bins
    centres = -1 + (torch.arange(fine, dtype=torch.float64) + 0.5) * (2 / fine)
    cell = ((centres + 1) * 2).floor().long()  # board cell of each sub-cell
    filled = torch.zeros(4, 4, dtype=torch.float64)
    for i, j in FILLED:
        filled[i, j] = 1
    sub = filled[cell[:, None], cell[None, :]] * (2 / fine) ** 2 / 2  # area / total filled area (2)
    expected = sub.reshape(bins, 4, bins, 4).sum(dim=(1, 3))
    mass = checkerboard_bin_mass(bins)
    torch.testing.assert_close(mass, expected, rtol=0, atol=1e-13)
    assert math.isclose(float(mass.sum()), 1.0, rel_tol=1e-12)


def test_bin_mass_on_the_board_grid():
    mass = checkerboard_bin_mass(4)
    for i in range(4):
        for j in range(4):
            assert mass[i, j] == (1 / 8 if (i + j) % 2 == 0 else 0)


def test_kl_is_zero_when_the_histogram_equals_the_target():
    bins = 50
    centres = -1 + (torch.arange(bins, dtype=torch.float64) + 0.5) * (2 / bins)
    points = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), dim=-1).reshape(-1, 2)
    weights = checkerboard_bin_mass(bins).reshape(-1)
    assert checkerboard_kl(points, bins, weights=weights) == pytest.approx(0.0, abs=1e-14)
    # the mirror image x → −x fills exactly the empty squares (the floored bins dominate)
    assert checkerboard_kl(points, bins, weights=weights.reshape(bins, bins).flip(0).reshape(-1)) > 10


def test_kl_of_exact_samples_is_the_histogram_noise():
    """For N exact samples, KL(p ‖ p̂) ≈ χ²_{M−1} / (2N) (second-order expansion; M = bins with
    p > 0): mean (M − 1)/(2N) ≈ 0.0106 at N = 65536, relative std √(2/(M − 1)) ≈ 3.8%. The third-order
    terms are O(Σ 1/(N² p)) ≈ 1e-5 here. A ±20% band is over five standard deviations."""
    n = 65536
    mass = checkerboard_bin_mass(50)
    expected = (int((mass > 0).sum()) - 1) / (2 * n)
    kl = checkerboard_kl(checkerboard(n, gen(0)))
    assert abs(kl / expected - 1) < 0.2, (kl, expected)


def test_kl_of_gaussian_samples_is_large():
    """A Gaussian with the board's std puts about half its mass on empty squares or off the board:
    KL ≳ log 2."""
    kl = checkerboard_kl(3 ** -0.5 * torch.randn(65536, 2, generator=gen(1)))
    assert kl > 0.7


def test_kl_counts_off_square_samples_in_the_total_only():
    inside = checkerboard(4000, gen(2), torch.float64)
    outside = torch.full((1000, 2), 3.0, dtype=torch.float64)
    mass = histogram_mass(torch.cat([inside, outside, torch.full((1, 2), math.nan, dtype=torch.float64)]))
    assert float(mass.sum()) == pytest.approx(4000 / 5001)
    # KL ≥ −log(share inside): the off-square mass is penalised
    assert checkerboard_kl(torch.cat([inside, outside])) >= -math.log(0.8)


def test_histogram_edges_are_closed_on_the_right():
    corners = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    mass = histogram_mass(corners, bins=2)
    assert torch.equal(mass, torch.tensor([[1 / 3, 0.0], [1 / 3, 1 / 3]], dtype=torch.float64))


def test_kl_floor_and_errors():
    p = torch.tensor([0.5, 0.5, 0.0])
    assert discrete_kl(p, torch.tensor([1.0, 0.0, 0.0]), floor=1e-10) == pytest.approx(
        0.5 * math.log(0.5) + 0.5 * math.log(0.5 / 1e-10))
    assert discrete_kl(p, torch.tensor([0.5, 0.5, 1.0])) == 0.0  # bins with p = 0 add nothing
    with pytest.raises(ValueError, match="shaped \\(N, 2\\)"):
        checkerboard_kl(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="no samples"):
        checkerboard_kl(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="bins"):
        checkerboard_bin_mass(0)


def test_energy_distance_same_distribution_shift_and_identity():
    """Two samples of 1024: the plug-in value is O(1/n) (≈ 2e-3, at most 4e-3 over several seeds);
    a shift by 0.2 gives ≈ 0.035."""
    a, b = checkerboard(1024, gen(3)), checkerboard(1024, gen(4))
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(a, b[torch.randperm(1024, generator=gen(5))]) == pytest.approx(energy_distance(a, b))
    same, shifted = energy_distance(a, b), energy_distance(a, b + torch.tensor([0.2, 0.0]))
    assert 0 <= same < 0.01 and shifted > 0.02
    assert energy_distance(a, b) == pytest.approx(energy_distance(b, a), rel=1e-9)


def test_energy_distance_of_two_gaussians_matches_the_closed_form():
    """1-D N(0, 1) against N(δ, 1): 2E|X − Y| − 2E|X − X'|, with E|N(m, 2)| = 2/√π·e^{−m²/4} + m·erf(m/2)."""
    delta = 1.0
    e_abs = lambda m: 2 / math.sqrt(math.pi) * math.exp(-m * m / 4) + m * math.erf(m / 2)
    exact = 2 * e_abs(delta) - 2 * e_abs(0.0)
    a = torch.randn(2048, 1, generator=gen(6), dtype=torch.float64)
    b = delta + torch.randn(2048, 1, generator=gen(7), dtype=torch.float64)
    assert energy_distance(a, b) == pytest.approx(exact, abs=0.03)


def test_energy_distance_subsamples_deterministically_and_flattens():
    a, b = torch.randn(3000, 2, 2, generator=gen(8)), torch.randn(2000, 2, 2, generator=gen(9))
    assert energy_distance(a, b, max_points=500) == energy_distance(a, b, max_points=500)
    assert energy_distance(a, b, max_points=500) != energy_distance(a, b, max_points=None)
    with pytest.raises(ValueError, match="sample shape"):
        energy_distance(torch.zeros(3, 2), torch.zeros(3, 3))


@given(st.integers(1, 5), st.floats(0.05, 2.0))
def test_sliced_w2_of_a_shift(d, scale):
    """For b = a + δ every projection's W2² is exactly (θ·δ)², and for θ uniform on the sphere in
    d dims E(θ·δ)² = |δ|²/d with Var = |δ|⁴·2(d − 1)/(d²(d + 2)); 2048 projections, 5 std errors."""
    a = torch.randn(512, d, generator=gen(d), dtype=torch.float64)
    delta = scale * torch.randn(d, generator=gen(100 + d), dtype=torch.float64)
    p = 2048
    sw2 = sliced_wasserstein2(a, a + delta, projections=p) ** 2
    norm2 = float(delta @ delta)
    tolerance = 5 * norm2 * math.sqrt(2 * (d - 1) / (d * d * (d + 2)) / p) + 1e-12
    assert abs(sw2 - norm2 / d) <= tolerance


def test_sliced_w2_exact_cases():
    a = torch.randn(300, 3, generator=gen(10), dtype=torch.float64)
    assert sliced_wasserstein2(a, a.flip(0)) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein2(a, torch.cat([a, a])) == pytest.approx(0.0, abs=1e-12)  # same distribution, N ≠ M
    # 1-D: W2²({0}, {1, 3}) = ½·1 + ½·9
    assert sliced_wasserstein2(torch.tensor([[0.0]]), torch.tensor([[1.0], [3.0]])) ** 2 == pytest.approx(5.0)
    # N ≠ M quantile matching against a brute-force fine grid: {0, 1, 2} vs {0, 10}
    u = (np.arange(600) + 0.5) / 600
    x, y = np.array([0.0, 1.0, 2.0]), np.array([0.0, 10.0])
    brute = np.mean((x[(u * 3).astype(int)] - y[(u * 2).astype(int)]) ** 2)
    assert sliced_wasserstein2(torch.tensor(x)[:, None], torch.tensor(y)[:, None]) ** 2 == pytest.approx(brute)
    assert sliced_wasserstein2(a, a + 0.1, generator=gen(1)) == sliced_wasserstein2(a, a + 0.1, generator=gen(1))
    with pytest.raises(ValueError, match="projections"):
        sliced_wasserstein2(a, a, projections=0)
    with pytest.raises(ValueError, match="non-empty"):
        sliced_wasserstein2(a[:0], a)


def test_evaluate_sampler_on_the_checkerboard_gives_a_row_per_k():
    net = FlowMapMLP(dim=2, width=16, depth=2, sigma=0.58)
    options = {"energy": {"max_points": 512}, "sw2": {"projections": 16}}
    results = evaluate_sampler(net, steps_list=(1, 2), n=2048, generator=gen(0), options=options)
    assert sorted(results) == [1, 2]
    assert all(set(row) == {"kl", "energy", "sw2"} and all(math.isfinite(v) and v >= 0 for v in row.values())
               for row in results.values())
    again = evaluate_sampler(net, steps_list=(1, 2), n=2048, generator=gen(0), options=options)
    assert again == results
    table = format_table(results)
    assert "k=1" in table and "kl" in table and "sw2" in table


def test_evaluate_sampler_with_an_exact_map_on_array_data(tmp_path):
    """Gaussian data in a .npy file and its exact flow map: every k samples the data, so the
    distances are at the level of two independent samples of it."""
    mu, std, sigma = torch.tensor([0.7, -0.3], dtype=torch.float64), 0.25, 0.6
    data = mu + std * torch.randn(4096, 2, generator=gen(11), dtype=torch.float64)
    np.save(tmp_path / "gauss.npy", data.numpy())
    net = GaussianFlowMap(mu, std, sigma)
    options = {"energy": {"max_points": 1024}, "sw2": {"projections": 64}}
    results = evaluate_sampler(net, steps_list=(1, 3), n=4096, sigma=sigma, dataset=tmp_path / "gauss.npy",
                               options=options)
    assert set(results[1]) == {"energy", "sw2"}
    for row in results.values():
        assert row["energy"] < 5e-3 and row["sw2"] < 0.02, row
    # with the wrong σ the exact map is wrong, and the metrics see it
    off = evaluate_sampler(net, steps_list=(1,), n=4096, sigma=2 * sigma, dataset=tmp_path / "gauss.npy",
                           options=options)
    assert off[1]["sw2"] > 0.1 and off[1]["energy"] > 0.02


def test_a_metrics_check_runs_with_its_options_when_selected_and_direction_is_recorded(registries):
    from flowcore.eval.metrics import METRICS, register_metric, select_metrics

    seen = []

    def needs_a_file(*, path=None, **_):
        seen.append(path)
        if path is None:
            raise FileNotFoundError("needs_file: give the option path")

    register_metric("needs_file", lambda samples, data, path=None: 0.0, default=False, check=needs_a_file,
                    lower_is_better=False)
    assert METRICS["needs_file"].lower_is_better is False and METRICS["energy"].lower_is_better is True
    with pytest.raises(FileNotFoundError, match="give the option path"):
        select_metrics("points2d", ["energy", "needs_file"])
    assert [m.name for m in select_metrics("points2d", ["needs_file"], {"needs_file": {"path": "x"}})] == ["needs_file"]
    assert seen == [None, "x"]
    assert "needs_file" not in [m.name for m in select_metrics("points2d")]   # not a default: never checked
    assert seen == [None, "x"]
    with pytest.raises(TypeError, match="lower_is_better must be True or False"):
        register_metric("bad_direction", lambda s, d: 0.0, lower_is_better="lower")
    with pytest.raises(TypeError, match="check must be a function"):
        register_metric("bad_check", lambda s, d: 0.0, check=3)
