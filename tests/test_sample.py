"""flowcore.eval.sample: k-step flow-map sampling, ODE sampling of the diagonal, time grids (docs/math.md §1)."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from flowcore.nn import FlowMapMLP
from flowcore.eval.sample import flow_map_sample, ode_sample, time_grid, trajectories


class GaussianFlowMap(nn.Module):
    """The exact flow map for data N(μ, s² I), noise N(0, σ² I) and the linear interpolant.

    The marginal at time t is N(tμ, r_t² I) with ``r_t² = (1 − t)² σ² + t² s²``; the probability
    flow keeps ``(x − tμ) / r_t`` fixed, so ``X_{s,t}(x) = tμ + (r_t / r_s)(x − sμ)``, and the
    diagonal is the drift ``b_t(x) = μ + (ṙ_t / r_t)(x − tμ)``, ``ṙ_t = (t s² − (1 − t) σ²) / r_t``.
    """

    def __init__(self, mu: torch.Tensor, data_std: float, sigma: float):
        super().__init__()
        self.register_buffer("mu", mu)
        self.data_std, self.sigma = data_std, sigma

    def r(self, t):
        return torch.sqrt((1 - t) ** 2 * self.sigma ** 2 + t ** 2 * self.data_std ** 2)

    def forward(self, s, t, x):
        s_, t_ = s[:, None], t[:, None]
        r_s, r_t = self.r(s_), self.r(t_)
        mapped = t_ * self.mu + (r_t / r_s) * (x - s_ * self.mu)
        gap = t_ - s_
        off_diagonal = (mapped - x) / torch.where(gap == 0, torch.ones_like(gap), gap)
        r_dot = (s_ * self.data_std ** 2 - (1 - s_) * self.sigma ** 2) / r_s
        diagonal = self.mu + (r_dot / r_s) * (x - s_ * self.mu)
        return torch.where(gap == 0, diagonal, off_diagonal)


class Recorder(nn.Module):
    """A constant velocity that records the (s, t, batch size) of each call."""

    def __init__(self, value: float = 0.0):
        super().__init__()
        self.value, self.calls = value, []

    def forward(self, s, t, x):
        assert s.shape == t.shape == (x.shape[0],) and s.dtype == x.dtype
        self.calls.append((s[0].item() if len(s) else None, t[0].item() if len(t) else None, x.shape[0]))
        return torch.full_like(x, self.value)


MU, DATA_STD, SIGMA = torch.tensor([0.7, -0.3], dtype=torch.float64), 0.25, 0.6


@pytest.fixture(scope="module")
def exact():
    return GaussianFlowMap(MU, DATA_STD, SIGMA)


def noise(n, seed=0, dims=(2,)):
    return SIGMA * torch.randn(n, *dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_one_step_of_the_exact_map_samples_the_data(exact):
    x0 = noise(65536)
    x1 = flow_map_sample(exact, x0)
    torch.testing.assert_close(x1, MU + (DATA_STD / SIGMA) * x0)  # X_{0,1} exactly
    # ... hence the data's statistics (tolerance: 5 standard errors at n = 65536)
    assert torch.allclose(x1.mean(0), MU, atol=5 * DATA_STD / 256)
    assert torch.allclose(x1.std(0), torch.tensor(DATA_STD, dtype=torch.float64), atol=5 * DATA_STD / 362)


@given(st.lists(st.floats(0.01, 0.99), max_size=6))
def test_any_grid_gives_the_same_samples_for_an_exact_map(exact, inner):
    """The semigroup property: composing the exact map over any grid equals one step."""
    grid = [0.0] + sorted(set(inner)) + [1.0]
    x0 = noise(64, seed=1)
    torch.testing.assert_close(flow_map_sample(exact, x0, grid=grid), flow_map_sample(exact, x0))


@pytest.mark.parametrize("steps", [1, 2, 3, 8])
def test_k_steps_call_the_net_on_the_uniform_grid_and_add_the_velocity(steps):
    net = Recorder(0.5)
    x0 = torch.randn(10, 3)
    out = flow_map_sample(net, x0, steps=steps)
    torch.testing.assert_close(out, x0 + 0.5)  # Σ (t_{i+1} − t_i) · c = c
    assert [(round(s, 6), round(t, 6)) for s, t, _ in net.calls] == [
        (round(i / steps, 6), round((i + 1) / steps, 6)) for i in range(steps)]


def test_zero_velocity_is_the_identity_for_any_k_and_shape():
    x0 = torch.randn(5, 3, 4, 4)
    for k in (1, 4, 16):
        assert torch.equal(flow_map_sample(Recorder(0.0), x0, steps=k), x0)


def test_chunks_bound_the_batch_and_do_not_change_the_result():
    net = FlowMapMLP(dim=2, width=16, depth=2)
    x0 = torch.randn(103, 2, generator=torch.Generator().manual_seed(0))
    whole = flow_map_sample(net, x0, steps=3)
    recorder = Recorder()
    flow_map_sample(recorder, x0, steps=2, chunk_size=25)
    assert max(b for _, _, b in recorder.calls) == 25 and sum(b for _, _, b in recorder.calls) == 2 * 103
    torch.testing.assert_close(flow_map_sample(net, x0, steps=3, chunk_size=30), whole)


def test_no_grad_by_default_and_gradients_on_request():
    net = FlowMapMLP(dim=2, width=8, depth=1)
    x0 = torch.randn(4, 2)
    assert not flow_map_sample(net, x0, steps=2).requires_grad
    out = flow_map_sample(net, x0, steps=2, no_grad=False)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_ode_sampling_converges_to_the_exact_map_at_the_right_order(exact):
    """Euler is first order, Heun second: the max error falls by 2^order per halving of the step
    (asymptotically; at 16 → 32 steps the observed rates are 0.97 and 1.87)."""
    x0 = noise(64, seed=2)
    target = flow_map_sample(exact, x0)
    for method, order in (("euler", 1), ("heun", 2)):
        e = [float((ode_sample(exact, x0, k, method=method) - target).abs().max()) for k in (8, 16, 32)]
        rates = [math.log2(e[i] / e[i + 1]) for i in range(2)]
        assert abs(rates[-1] - order) < 0.2 and min(rates) > order - 0.4, (method, e, rates)
        if method == "heun":
            assert e[-1] < 1e-3


def test_ode_sampling_calls_the_diagonal():
    net = Recorder(1.0)
    ode_sample(net, torch.zeros(3, 2), 4, method="heun")
    assert all(s == t for s, t, _ in net.calls) and len(net.calls) == 8


def test_trajectories_start_at_the_noise_and_end_at_the_samples(exact):
    x0 = noise(20, seed=3)
    path = trajectories(exact, x0, steps=5, chunk_size=7)
    assert path.shape == (6, 20, 2)
    assert torch.equal(path[0], x0)
    torch.testing.assert_close(path[-1], flow_map_sample(exact, x0, steps=5))
    # the exact path follows the Gaussian marginals: mean tμ at t_i = i/5
    torch.testing.assert_close(trajectories(exact, x0, grid=[0.0, 0.5, 1.0])[1], 0.5 * MU + exact.r(torch.tensor(0.5))
                               / SIGMA * x0)
    assert trajectories(Recorder(), x0, steps=3, method="euler").shape == (4, 20, 2)


def test_grid_as_tensor_and_time_grid_values():
    assert time_grid() == [0.0, 1.0]
    assert time_grid(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert time_grid(grid=torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)) == [0.0, 0.3, 1.0]


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 2, "grid": [0.0, 1.0]}, "not both"),
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"steps": 2.0}, "steps must be an int >= 1"),
    ({"grid": [0.0]}, "at least 2 times"),
    ({"grid": [0.1, 0.5, 1.0]}, "must start at 0"),
    ({"grid": [0.0, 0.5, 0.9]}, "must end at 1"),
    ({"grid": [0.0, 0.6, 0.4, 1.0]}, "strictly increasing, but t\\[1\\] = 0.6 >= t\\[2\\] = 0.4"),
    ({"grid": [0.0, 0.5, 0.5, 1.0]}, "strictly increasing"),
    ({"grid": [0.0, float("nan"), 1.0]}, "non-finite"),
    ({"grid": torch.zeros(2, 2)}, "one-dimensional"),
    ({"grid": ["a", 1.0]}, "sequence of numbers"),
])
def test_bad_grids_are_refused_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        flow_map_sample(Recorder(), torch.zeros(2, 2), **kwargs)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="chunk_size"):
        flow_map_sample(Recorder(), torch.zeros(2, 2), chunk_size=0)
    with pytest.raises(ValueError, match="shaped \\(B, \\*dims\\)"):
        flow_map_sample(Recorder(), torch.zeros(2))
    with pytest.raises(ValueError, match="unknown ODE method"):
        ode_sample(Recorder(), torch.zeros(2, 2), 2, method="rk4")
    with pytest.raises(ValueError, match="unknown method"):
        trajectories(Recorder(), torch.zeros(2, 2), method="ode")
