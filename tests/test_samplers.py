"""Time samplers: distributions, supports, reproducibility, dtypes, and batch splitting by share.

Statistical checks draw N = 200,000 samples from a seeded generator and allow 5 standard errors
(a two-sided 5σ band: a correct sampler fails it with probability ≈ 6e-7 per check, and with a
fixed seed the result is deterministic anyway). Standard errors are the exact CLT ones:
  mean of a U[0,1]:           sqrt(1/12 / N)
  sample variance of U[0,1]:  sqrt((E(U−½)⁴ − (1/12)²) / N) = sqrt((1/80 − 1/144) / N) = sqrt(1/180 / N)
  min / max of two U[0,1] (Beta(1,2) / Beta(2,1), variance 1/18): sqrt(1/18 / N)
  a frequency p:              sqrt(p(1 − p) / N)
  a sample correlation of independent variables: ≈ 1 / sqrt(N)
"""
from __future__ import annotations

import math

import pytest
import sympy
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowcore.lang import (Constant, DeclarationError, Derived, Diagonal, Dyadic, I, Joint, Objective, Square, Term,
                           Uniform, UpperTriangle, V, between, param, s, sqnorm, t, u, x0)

N = 200_000
SIGMAS = 5
gamma = param("gamma")


def draw(sampler, seed: int = 0, n: int = N, dtype=torch.float64):
    return sampler.sample(n, torch.Generator().manual_seed(seed), dtype)


def assert_close_stat(value: torch.Tensor | float, expected: float, se: float, what: str):
    value = float(value)
    assert abs(value - expected) <= SIGMAS * se, (
        f"{what}: {value:.6f} vs {expected:.6f}, off by {abs(value - expected) / se:.1f} standard errors")


def assert_frequency(hits: torch.Tensor, p: float, what: str):
    n = hits.numel()
    assert_close_stat(hits.double().mean(), p, math.sqrt(p * (1 - p) / n), what)


# -- distributions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("low, high", [(0.0, 1.0), (0.25, 0.5), (-1.0, 3.0)])
def test_uniform_mean_variance_and_support(low, high):
    values = draw(Uniform(gamma, low=low, high=high))[gamma]  # a param may leave [0, 1]; a time may not
    span = high - low
    assert values.shape == (N,)
    assert (values >= low).all() and (values <= high).all()
    unit = (values - low) / span
    assert_close_stat(unit.mean(), 0.5, math.sqrt(1 / 12 / N), "mean")
    assert_close_stat(unit.var(), 1 / 12, math.sqrt(1 / 180 / N), "variance")
    # the lowest and highest tenth are as frequent as they should be (no clipping to one end)
    assert_frequency(unit < 0.1, 0.1, "P(U < 0.1)")
    assert_frequency(unit > 0.9, 0.1, "P(U > 0.9)")


def test_uniform_draws_each_symbol_independently():
    values = draw(Uniform(s, t))
    assert set(values) == {s, t}
    corr = torch.corrcoef(torch.stack([values[s], values[t]]))[0, 1]
    assert_close_stat(corr, 0.0, 1 / math.sqrt(N), "corr(s, t)")


def test_upper_triangle_is_uniform_below_the_diagonal():
    values = draw(UpperTriangle(s, t))
    a, b = values[s], values[t]
    assert (a <= b).all()
    assert (a >= 0).all() and (b <= 1).all()
    se = math.sqrt(1 / 18 / N)
    assert_close_stat(a.mean(), 1 / 3, se, "E[s]")
    assert_close_stat(b.mean(), 2 / 3, se, "E[t]")
    assert_close_stat(a.var(), 1 / 18, math.sqrt(1 / N), "Var[s]")  # generous: Var of a variance < 1/N here
    # uniform on the triangle: P(t − s > ½) is the area of the corner triangle over the area, ¼
    assert_frequency(b - a > 0.5, 0.25, "P(t - s > 1/2)")


def test_diagonal_has_s_equal_t():
    values = draw(Diagonal(s, t))
    assert torch.equal(values[s], values[t])
    assert values[s].data_ptr() != values[t].data_ptr()  # two tensors: changing one leaves the other
    assert_close_stat(values[t].mean(), 0.5, math.sqrt(1 / 12 / N), "E[t]")
    assert_close_stat(values[t].var(), 1 / 12, math.sqrt(1 / 180 / N), "Var[t]")


def test_square_draws_s_and_t_independently():
    values = draw(Square(s, t))
    a, b = values[s], values[t]
    se = math.sqrt(1 / 12 / N)
    assert_close_stat(a.mean(), 0.5, se, "E[s]")
    assert_close_stat(b.mean(), 0.5, se, "E[t]")
    assert_close_stat(torch.corrcoef(torch.stack([a, b]))[0, 1], 0.0, 1 / math.sqrt(N), "corr(s, t)")
    assert_frequency(a > b, 0.5, "P(s > t)")  # backward pairs are included


@pytest.mark.parametrize("levels", [1, 3, 7])
def test_dyadic_times_lie_on_the_grid(levels):
    values = draw(Dyadic(s, t, levels), n=50_000)
    a, b = values[s], values[t]
    step = b - a
    # t − s is a power of two, 2^(1−k) with k in 1..levels
    k = 1 - torch.log2(step)
    assert torch.equal(k, k.round()), "t - s is not a power of two"
    assert int(k.min()) >= 1 and int(k.max()) <= levels
    # s is a multiple of the step, inside [0, 1]; t stays within [0, 1]
    ratio = a / step
    assert torch.equal(ratio, ratio.round()), "s is not a multiple of t - s"
    assert (a >= 0).all() and (b <= 1).all()
    # every level is used equally often
    for level in range(1, levels + 1):
        assert_frequency(k == level, 1 / levels, f"P(k = {level})")
    # within the finest level, every slot is equally likely
    finest = ratio[k == levels]
    slots = 2 ** (levels - 1)
    for j in {0, slots - 1}:
        p, count = 1 / slots, finest.numel()
        assert abs(float((finest == j).double().mean()) - p) <= SIGMAS * math.sqrt(p * (1 - p) / count)


def test_dyadic_rejects_zero_levels():
    with pytest.raises(DeclarationError, match="at least one level"):
        Dyadic(s, t, 0)


@pytest.mark.parametrize("pair", [UpperTriangle(s, t), Square(s, t)], ids=["upper-triangle", "square"])
def test_between_lies_between_s_and_t(pair):
    values = draw(pair & between(u, s, t, gamma))
    a, b, g, m = values[s], values[t], values[gamma], values[u]
    assert ((g >= 0) & (g <= 1)).all()
    assert_close_stat(g.mean(), 0.5, math.sqrt(1 / 12 / N), "E[gamma]")
    tol = 1e-12
    assert (m >= torch.minimum(a, b) - tol).all() and (m <= torch.maximum(a, b) + tol).all()
    torch.testing.assert_close(m, a + g * (b - a), rtol=0, atol=1e-15)


@given(fixed=st.floats(0, 1), seed=st.integers(0, 2**31 - 1))
def test_between_with_fixed_gamma(fixed, seed):
    values = draw(UpperTriangle(s, t) & between(u, s, t, gamma, fixed=fixed), seed=seed, n=64)
    assert torch.equal(values[gamma], torch.full((64,), fixed, dtype=torch.float64))
    torch.testing.assert_close(values[u], values[s] + fixed * (values[t] - values[s]), rtol=0, atol=1e-15)


def test_constant_and_derived():
    values = draw(Constant(gamma, 0.25) & Uniform(t) & Derived(s, t * t - gamma), n=1000)
    assert torch.equal(values[gamma], torch.full((1000,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(values[s], values[t] ** 2 - 0.25, rtol=0, atol=1e-15)
    derived = draw(Uniform(t) & Derived(s, sympy.cos(sympy.pi * t / 2)), n=1000)
    torch.testing.assert_close(derived[s], torch.cos(math.pi * derived[t] / 2), rtol=0, atol=1e-15)


# -- reproducibility and dtypes ------------------------------------------------------------------------
SAMPLERS = {
    "uniform": lambda: Uniform(t),
    "uniform2": lambda: Uniform(s, t, low=0.1, high=0.9),
    "diagonal": lambda: Diagonal(s, t),
    "upper": lambda: UpperTriangle(s, t),
    "square": lambda: Square(s, t),
    "dyadic": lambda: Dyadic(s, t, 5),
    "psd_u": lambda: UpperTriangle(s, t) & between(u, s, t, gamma),
    "psd_m": lambda: UpperTriangle(s, t) & between(u, s, t, gamma, fixed=0.5),
    "shortcut": lambda: Dyadic(s, t, 4) & between(u, s, t, gamma, fixed=0.5),
}


@given(name=st.sampled_from(sorted(SAMPLERS)), seed=st.integers(0, 2**31 - 1), n=st.integers(1, 300))
def test_same_seed_same_times(name, seed, n):
    first, second = draw(SAMPLERS[name](), seed, n), draw(SAMPLERS[name](), seed, n)
    assert list(first) == list(second)
    for sym in first:
        assert torch.equal(first[sym], second[sym]), sym


@given(name=st.sampled_from(sorted(SAMPLERS)), seed=st.integers(0, 2**31 - 2))
def test_different_seeds_different_times(name, seed):
    first, second = draw(SAMPLERS[name](), seed, 256), draw(SAMPLERS[name](), seed + 1, 256)
    # a continuous draw of 256 values never repeats; a dyadic one (5 levels: 31 grid pairs) would with
    # probability far below 1e-100
    random = [sym for sym in first if sym is not gamma or name == "psd_u"]
    assert random
    assert all(not torch.equal(first[sym], second[sym]) for sym in random)


def test_no_generator_uses_the_global_rng():
    torch.manual_seed(123)
    first = UpperTriangle(s, t).sample(100)
    torch.manual_seed(123)
    second = UpperTriangle(s, t).sample(100)
    assert torch.equal(first[s], second[s]) and torch.equal(first[t], second[t])
    assert not torch.equal(first[s], UpperTriangle(s, t).sample(100)[s])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(SAMPLERS) + ["constant", "derived"])
def test_dtype_is_honoured(name, dtype):
    extra = {"constant": lambda: Constant(gamma, 0.5), "derived": lambda: Uniform(t) & Derived(s, t / 2)}
    sampler = (SAMPLERS | extra)[name]()
    values = draw(sampler, n=50, dtype=dtype)
    assert set(values) == set(sampler.produces)
    for sym, value in values.items():
        assert value.dtype == dtype, sym
        assert value.shape == (50,), sym
        assert value.device.type == "cpu"


def test_float32_uniform_is_drawn_in_float32():
    # a float32 draw is a valid U[0, 1) draw in its own precision, not a float64 draw rounded to 1.0
    single = draw(Uniform(t), dtype=torch.float32)[t]
    assert (single >= 0).all() and (single < 1).all()
    assert_close_stat(single.double().mean(), 0.5, math.sqrt(1 / 12 / N), "mean (float32)")


# -- Joint.requires ------------------------------------------------------------------------------------
def test_joint_requires_what_no_earlier_part_produces():
    derived = Derived(u, s + gamma * (t - s))
    assert derived.requires == {s, t, gamma}
    assert Uniform(t).requires == frozenset()
    assert between(u, s, t, gamma).requires == {s, t}
    assert (UpperTriangle(s, t) & derived).requires == {gamma}
    assert (UpperTriangle(s, t) & Uniform(gamma) & derived).requires == frozenset()
    assert (UpperTriangle(s, t) & between(u, s, t, gamma)).requires == frozenset()
    # order matters: what a later part produces does not satisfy an earlier one
    assert (derived & UpperTriangle(s, t) & Uniform(gamma)).requires == {s, t, gamma}
    assert (Uniform(t) & derived & Uniform(s)).requires == {s, gamma}
    # joints flatten, so nesting does not change the answer
    nested = Joint(UpperTriangle(s, t), Joint(Uniform(gamma), derived))
    assert (UpperTriangle(s, t) & (Uniform(gamma) & derived)).parts == Joint(
        UpperTriangle(s, t), Uniform(gamma), derived).parts
    assert nested.requires == frozenset()
    assert (UpperTriangle(s, t) & between(u, s, t, gamma)).produces == (s, t, gamma, u)


# -- batch split by share ------------------------------------------------------------------------------
def objective_with_shares(shares):
    terms = [Term(f"term{i}", sqnorm(V(t, t, I(t)) - x0), Uniform(t), share) for i, share in enumerate(shares)]
    return Objective("mix", terms)


@st.composite
def shares(draw_):
    weights = draw_(st.lists(st.integers(1, 1000), min_size=1, max_size=6))
    total = sum(weights)
    values = [w / total for w in weights]
    values[-1] = 1 - sum(values[:-1])  # exact in float up to 1e-15; must stay > 0
    return values


@given(shares=shares(), batch=st.integers(0, 5000))
def test_split_counts_follow_the_shares(shares, batch):
    objective = objective_with_shares(shares)
    counts = objective.split(batch)
    assert len(counts) == len(shares)
    assert sum(counts) == batch
    assert all(isinstance(c, int) and c >= 0 for c in counts)
    for count, share in zip(counts, shares):
        assert abs(count - share * batch) < 1 + 1e-9, (counts, shares, batch)  # floor or ceil of share·B
    assert objective.split(batch) == counts
    assert objective_with_shares(shares).split(batch) == counts  # a rebuilt objective splits the same way


@pytest.mark.parametrize("shares, batch, counts", [
    ((0.75, 0.25), 100, (75, 25)),
    ((0.75, 0.25), 10, (8, 2)),  # 7.5 / 2.5: one extra sample by largest remainder, ties to the first
    ((0.5, 0.5), 3, (2, 1)),
    ((1 / 3, 1 / 3, 1 / 3), 10, (4, 3, 3)),
    ((0.1, 0.9), 1, (0, 1)),
    ((1.0,), 7, (7,)),
])
def test_split_examples(shares, batch, counts):
    assert objective_with_shares(shares).split(batch) == counts
