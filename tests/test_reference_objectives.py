"""The reference interpreter against hand-written PyTorch, for every built-in objective.

``tests/handwritten.py`` spells every term of every built-in out in plain torch from docs/math.md; here
hypothesis draws batches, data shapes, interpolants, per-term times (s = t exactly and |t − s| < 1e-6
included), γ, η, the reduction and the seeds, and checks in float64 that the reference's loss, its
per-sample losses, and the gradients w.r.t. every network parameter and w.r.t. x0 and x1 all equal
the hand-written ones.

Tolerance: ‖a − b‖ ≤ RTOL · max(‖b‖, TINY) per tensor, RTOL = 1e-10. Both sides compute the same
formulas in float64 (eps 2.2e-16) through op chains of depth ~10² at most (interpolant, a two-layer
network, a jvp, a backward through it), so honest rounding differences are ~1e-15..1e-14 relative:
RTOL leaves orders of magnitude of margin, while a real mistake (a wrong sign, a missing chain-rule
term, a stop-gradient in the wrong place, a misplaced sample) is O(1) relative.

TINY = 1e-8 is a floor for tensors that are tiny only because a residual (nearly) vanishes. With
the O(1) networks, data and times used here, generic (s, t) (|t − s| ≥ 0.05) give loss and gradient
norms from ~1e-6 (pfmm_self, esd_none: residuals that vanish to higher order at s = t) to O(1);
tensors below 1e-8 come only from (near-)diagonal samples. There the comparison can be
ill-conditioned, and is for ``esd_none`` (no stop-gradient) at |t − s| = h ≪ 1: its residual AND the
residual's x-derivative are both O(h) differences of O(1) terms, so ∂loss/∂x0 and ∂loss/∂x1 are
O(h²) while their rounding error is O(eps·h) — measured relative error ≈ eps/h between two correct
implementations (7e-3 at h = 1e-14, 1.5e-10 at h = 9e-7), worst absolute error ~5e-21 over
h ∈ [1e-14, 1e-1] (every other built-in stayed below 1e-12 relative in that scan). The floor
compares such tensors to RTOL·TINY = 1e-18 absolute: ~1e-12 of the smallest generic scale, i.e.
rounding level. It cannot hide a real bug: a mistake that shows near the diagonal shows at generic
(s, t) too, which every test draws, far above the floor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import sympy
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import flowcore
from flowcore import objectives
from flowcore.testing.nets import SmoothTeacher, SmoothVelocity

try:  # tests/ as a plain directory (pytest's rootdir-relative sys.path entry) or as a package
    from handwritten import (CASES, FIXED_GAMMA, INTERPOLANTS, TEACHER_DIAGONAL, USES_U, distill_term_name,
                             handwritten_loss, handwritten_term_loss, split_counts, term_layout)
except ImportError:  # pragma: no cover
    from .handwritten import (CASES, FIXED_GAMMA, INTERPOLANTS, TEACHER_DIAGONAL, USES_U, distill_term_name,
                              handwritten_loss, handwritten_term_loss, split_counts, term_layout)

RTOL = 1e-10
TINY = 1e-8  # see the module docstring: only near-cancelling tensors fall below it
DTYPE = torch.float64
SHAPES = [(2,), (1, 3, 3), (2, 2, 3)]
ETAS = [0.0, 0.25, 0.5, 0.75, 0.9]


# -- helpers --------------------------------------------------------------------------------------
def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(expected).all(), f"{what}: the hand-written value is not finite"
    err = (actual - expected).norm().item()
    scale = max(expected.norm().item(), TINY)
    assert err <= RTOL * scale, (f"{what}: ‖ref − hand‖ = {err:.3e} > {RTOL:g}·{scale:.3e} "
                                 f"(rel {err / scale:.3e})")


def build(case: str, eta: float | None):
    name, options = CASES[case]
    if case == "fm":
        return objectives.get(name, **options)
    return objectives.get(name, eta=eta, **options)


def make_models(shape, seed: int):
    return SmoothVelocity(shape, width=8, seed=seed), SmoothTeacher(shape, seed=seed + 1000)


def make_data(shape, batch: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn((batch, *shape), generator=gen, dtype=DTYPE)
    x1 = 0.6 * torch.randn((batch, *shape), generator=gen, dtype=DTYPE) + 0.2
    return x0, x1


def gradients(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]


# -- scenarios --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    """One drawn check; `times` is {term name: {symbol name: per-sample floats}}."""

    case: str
    batch: int
    shape: tuple
    interp: str
    eta: float | None
    reduction: str
    net_seed: int
    data_seed: int
    times: dict = field(default_factory=dict)


UNIT = st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0.0, 1.0))
NEAR = st.floats(0.0, 1e-6, exclude_max=True)  # |t − s| < 1e-6, 0 (s = t) and subnormal gaps included


@st.composite
def pair(draw, mode: str, dyadic: bool):
    """One (s, t) with s ≤ t: generic, exactly equal, within 1e-6, or (shortcut) on the dyadic grid."""
    if mode == "equal":
        s = t = draw(UNIT)
    elif mode == "near":
        s, gap = draw(UNIT), draw(NEAR)
        s, t = (s, s + gap) if s + gap <= 1 else (s - gap, s)
    elif mode == "dyadic" and dyadic:
        d = 2.0 ** -draw(st.integers(1, 7))
        s = draw(st.integers(0, round(1 / (2 * d)) - 1)) * 2 * d
        t = s + 2 * d
    else:
        a, b = draw(UNIT), draw(UNIT)
        s, t = min(a, b), max(a, b)
    return s, t


@st.composite
def scenarios(draw, case: str):
    eta = None if case == "fm" else draw(st.one_of(st.sampled_from(ETAS), st.floats(0.0, 0.95)))
    batch = draw(st.integers(1, 12))
    layout = term_layout(case, eta)
    counts = split_counts([share for _, share, _ in layout], batch)
    # a batch-wide mode forces every pair onto the diagonal / near it; "mixed" (the most frequent,
    # so that most examples also exercise generic pairs) draws the mode per sample
    batch_mode = draw(st.sampled_from(["mixed", "equal", "near", "mixed", "mixed"]))
    modes = ["generic", "equal", "near"] + (["dyadic"] if case == "shortcut" else [])
    times = {}
    for (name, _, symbols), count in zip(layout, counts):
        if symbols == ("t",):
            times[name] = {"t": draw(st.lists(UNIT, min_size=count, max_size=count))}
            continue
        ss, ts, gs, us = [], [], [], []
        for _ in range(count):
            mode = draw(st.sampled_from(modes)) if batch_mode == "mixed" else batch_mode
            s, t = draw(pair(mode, case == "shortcut"))
            ss.append(s)
            ts.append(t)
            if case in USES_U:
                g = FIXED_GAMMA.get(case)
                g = draw(UNIT) if g is None else g
                gs.append(g)
                us.append(s + g * (t - s))
        times[name] = {"s": ss, "t": ts}
        if case in USES_U:
            times[name].update(gamma=gs, u=us)
    return Scenario(case=case, batch=batch, shape=draw(st.sampled_from(SHAPES)),
                    interp=draw(st.sampled_from(sorted(INTERPOLANTS))), eta=eta,
                    reduction=draw(st.sampled_from(["batch", "term_mean"])),
                    net_seed=draw(st.integers(0, 2**16)), data_seed=draw(st.integers(0, 2**16)), times=times)


def tensor_times(times: dict) -> dict:
    return {term: {sym: torch.tensor(values, dtype=DTYPE) for sym, values in by_sym.items()}
            for term, by_sym in times.items()}


# -- the comparison ---------------------------------------------------------------------------------
def compare(scn: Scenario) -> None:
    objective = build(scn.case, scn.eta)
    interp = INTERPOLANTS[scn.interp]
    net, teacher = make_models(scn.shape, scn.net_seed)
    params = list(net.parameters())
    x0, x1 = make_data(scn.shape, scn.batch, scn.data_seed)
    times = tensor_times(scn.times)
    # the hand-written split must be the objective's
    assert [term.name for term in objective.terms] == [name for name, _, _ in term_layout(scn.case, scn.eta)]
    assert list(objective.split(scn.batch)) == split_counts([term.share for term in objective.terms], scn.batch)

    x0_ref, x1_ref = x0.clone().requires_grad_(True), x1.clone().requires_grad_(True)
    ev = flowcore.evaluate(objective, net, x1_ref, x0_ref, times=times, teacher=teacher,
                           interpolant=interp.flowcore(), reduction=scn.reduction)
    ref_grads = gradients(ev.loss, params + [x0_ref, x1_ref])

    x0_hand, x1_hand = x0.clone().requires_grad_(True), x1.clone().requires_grad_(True)
    loss, per_term = handwritten_loss(scn.case, net, x0_hand, x1_hand, times, interp, teacher=teacher,
                                      eta=scn.eta, reduction=scn.reduction)
    hand_grads = gradients(loss, params + [x0_hand, x1_hand])

    assert set(ev.terms) == set(per_term)
    for name, losses in per_term.items():
        assert_close(ev.terms[name].per_sample.detach(), losses.detach(), f"{scn.case}: per-sample loss of {name}")
    assert_close(ev.loss.detach(), loss.detach(), f"{scn.case}: loss")
    # evaluate_term, with times keyed by the sampler's symbols, gives the same per-sample losses
    start = 0
    for term, count in zip(objective.terms, objective.split(scn.batch)):
        rows = slice(start, start + count)
        start += count
        by_symbol = {sym: times[term.name][str(sym)] for sym in term.sampler.produces}
        alone = flowcore.evaluate_term(term, net, x0[rows], x1[rows], by_symbol, interpolant=interp.flowcore(),
                                       teacher=teacher)
        assert_close(alone.detach(), per_term[term.name].detach(), f"{scn.case}: evaluate_term {term.name}")
    labels = [f"∂/∂{name}" for name, _ in net.named_parameters()] + ["∂/∂x0", "∂/∂x1"]
    for label, got, want in zip(labels, ref_grads, hand_grads):
        assert_close(got, want, f"{scn.case}: {label}")


# Regressions: failures hypothesis found (in this file's own code), kept as explicit @example's of
# the case's test.
REGRESSIONS: dict[str, list[Scenario]] = {
    # an empty term (B = 1, η = 0.25 gives the diagonal 0 samples): the hand-written |r|² used
    # reshape(0, -1), which is ambiguous for an empty batch
    "consistency": [Scenario("consistency", 1, (2,), "cosmix", 0.25, "batch", 0, 0,
                             {"diagonal": {"t": []}, "consistency": {"s": [0.0], "t": [0.0]}})],
    # no stop-gradient, η = 0, ten pairs with s = t and one at |t − s| = 7.9e-7: ∂loss/∂x0 has norm
    # 3.6e-15 (O(h²)) and the two implementations differ by 5e-25 (rounding, O(eps·h)) — relative
    # 1.4e-10, which a floor of 1e-300 rejected; see TINY in the module docstring
    "esd_none": [Scenario("esd_none", 11, (2,), "cosmix", 0.0, "batch", 0, 0,
                          {"esd_none": {"s": [0.0] * 9 + [0.5, 0.0],
                                        "t": [0.0] * 9 + [0.5000007885798097, 0.0]}})],
}


def _hypothesis_test(case: str):
    def test(scn: Scenario):
        compare(scn)

    for regression in REGRESSIONS.get(case, []):
        test = example(scn=regression)(test)
    test = given(scn=scenarios(case))(test)
    test.__name__ = test.__qualname__ = f"test_reference_matches_handwritten_{case}"
    test.__doc__ = f"{case}: reference loss, per-sample losses and gradients == hand-written (float64, 1e-10)."
    return test


# one hypothesis test per case, so each gets the profile's full example budget and its own @example's
for _case in sorted(CASES):
    globals()[f"test_reference_matches_handwritten_{_case}"] = _hypothesis_test(_case)
del _case


# Explicit regression and corner examples (run in every profile).
CORNERS = [
    # every pair on the diagonal, no diagonal term (η = 0): the off-diagonal term alone
    *(Scenario(case, 3, (2,), "cosmix", 0.0, "batch", 1, 2,
               {distill_term_name(case): dict(s=[0.0, 0.3, 1.0], t=[0.0, 0.3, 1.0],
                                              **({"gamma": [0.0, 0.5, 1.0], "u": [0.0, 0.3, 1.0]}
                                                 if case in USES_U else {}))})
      for case in sorted(CASES) if case != "fm"),
    # |t − s| = 1e-7 on every pair, term_mean, image-shaped data
    *(Scenario(case, 4, (2, 2, 3), "expmix", 0.5, "term_mean", 3, 4,
               {("diagonal" if case in TEACHER_DIAGONAL else "fm"):
                {"t": [0.0, 1.0]},
                distill_term_name(case): dict(s=[0.2, 0.9999999], t=[0.2000001, 1.0],
                                              **({"gamma": [FIXED_GAMMA.get(case, 0.3)] * 2,
                                                  "u": [0.2 + FIXED_GAMMA.get(case, 0.3) * 1e-7,
                                                        0.9999999 + FIXED_GAMMA.get(case, 0.3) * 1e-7]}
                                                 if case in USES_U else {}))})
      for case in sorted(CASES) if case != "fm"),
    # generic pairs, γ away from 0, ½, 1, both terms populated
    *(Scenario(case, 6, (1, 3, 3), "trig", 0.5, "batch", 5, 6,
               {("diagonal" if case in TEACHER_DIAGONAL else "fm"):
                {"t": [0.1, 0.45, 0.8]},
                distill_term_name(case): dict(s=[0.05, 0.3, 0.0], t=[0.7, 0.55, 1.0],
                                              **({"gamma": [FIXED_GAMMA.get(case, g) for g in (0.2, 0.6, 0.9)],
                                                  "u": [s + FIXED_GAMMA.get(case, g) * (t - s) for s, t, g in
                                                        ((0.05, 0.7, 0.2), (0.3, 0.55, 0.6), (0.0, 1.0, 0.9))]}
                                                 if case in USES_U else {}))})
      for case in sorted(CASES) if case != "fm"),
    Scenario("fm", 1, (1, 3, 3), "square", None, "term_mean", 0, 0, {"fm": {"t": [0.0]}}),
    Scenario("fm", 5, (2,), "expmix", None, "batch", 7, 8, {"fm": {"t": [0.0, 0.2, 0.5, 0.9, 1.0]}}),
]


@pytest.mark.parametrize("scn", CORNERS, ids=lambda scn: f"{scn.case}-{scn.interp}-{scn.batch}")
def test_reference_matches_handwritten_corners(scn):
    compare(scn)


# -- the sampler path --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 12), shape=st.sampled_from(SHAPES),
       eta=st.sampled_from(ETAS), reduction=st.sampled_from(["batch", "term_mean"]), give_x0=st.booleans())
def test_default_sampler_path_matches_explicit_times(case, seed, batch, shape, eta, reduction, give_x0):
    """times=None with a seeded generator == passing the times each term's sampler draws from it.

    evaluate() draws x0 (when not given) first, then each term's times in term order, all from the one
    generator; replaying that sequence from the same seed must give identical results, and the drawn
    times must satisfy the samplers' contracts.
    """
    eta = None if case == "fm" else eta
    objective = build(case, eta)
    net, teacher = make_models(shape, seed)
    x0, x1 = make_data(shape, batch, seed + 1)
    interp = INTERPOLANTS["linear"]  # the objective's default interpolant
    assert objective.interpolant == interp.flowcore()

    gen = torch.Generator().manual_seed(seed)
    default = flowcore.evaluate(objective, net, x1, x0 if give_x0 else None, generator=gen, teacher=teacher,
                                reduction=reduction)

    replay = torch.Generator().manual_seed(seed)
    if not give_x0:
        x0 = objective.sigma * torch.randn(x1.shape, generator=replay, dtype=DTYPE)
    drawn = {term.name: term.sampler.sample(count, replay, DTYPE)
             for term, count in zip(objective.terms, objective.split(batch))}
    explicit = flowcore.evaluate(objective, net, x1, x0, times=drawn, teacher=teacher, reduction=reduction)

    assert torch.equal(default.loss, explicit.loss)
    for term in objective.terms:
        got = default.terms[term.name]
        assert {str(k) for k in got.times} == {str(k) for k in drawn[term.name]}
        for sym, value in drawn[term.name].items():
            assert torch.equal(got.times[sym], value), f"{term.name}: {sym}"
        assert torch.equal(got.per_sample, explicit.terms[term.name].per_sample)

        # the samplers' contracts
        by_name = {str(k): v for k, v in drawn[term.name].items()}
        assert all(((v >= 0) & (v <= 1)).all() for v in by_name.values())
        if "s" in by_name:
            s, t = by_name["s"], by_name["t"]
            assert (s <= t).all()
            if case == "shortcut":
                gap = t - s
                assert torch.equal(torch.log2(gap), torch.log2(gap).round()), "t − s must be 2·2^-k"
                assert torch.equal(torch.remainder(s, gap), torch.zeros_like(s)), "s must lie on the grid of t − s"
        if "u" in by_name:
            s, t, g, u = by_name["s"], by_name["t"], by_name["gamma"], by_name["u"]
            assert_close(u, s + g * (t - s), f"{case}: u = s + γ(t − s)")
            if case in FIXED_GAMMA:
                assert torch.equal(g, torch.full_like(g, FIXED_GAMMA[case]))

    # and the default path agrees with the hand-written objective at those times
    hand_times = {name: {str(k): v for k, v in by_sym.items()} for name, by_sym in drawn.items()}
    loss, per_term = handwritten_loss(case, net, x0, x1, hand_times, interp, teacher=teacher, eta=eta,
                                      reduction=reduction)
    assert_close(default.loss.detach(), loss.detach(), f"{case}: loss (sampler path)")
    for name, losses in per_term.items():
        assert_close(default.terms[name].per_sample.detach(), losses.detach(), f"{case}: {name} (sampler path)")


# -- the test's own pieces ---------------------------------------------------------------------------
def test_every_builtin_is_covered():
    assert set(objectives.names()) <= {name for name, _ in CASES.values()}
    for case in CASES:
        objective = build(case, 0.75 if case != "fm" else None)
        assert [term.name for term in objective.terms] == [name for name, _, _ in term_layout(case, 0.75)]
        for term, (_, share, symbols) in zip(objective.terms, term_layout(case, 0.75)):
            assert term.share == share
            assert {str(sym) for sym in term.sampler.produces} == set(symbols)


@pytest.mark.parametrize("name", sorted(INTERPOLANTS))
def test_handwritten_interpolants(name):
    """The hand-written α, β, α̇, β̇ agree with their sympy forms (values and sympy.diff), and the
    flowcore interpolant built from them is the same α, β with the right boundary values."""
    interp = INTERPOLANTS[name]
    tau = sympy.Symbol("tau", real=True)
    alpha, beta = interp.sympy_alpha(tau), interp.sympy_beta(tau)
    assert [alpha.subs(tau, 0), beta.subs(tau, 0), alpha.subs(tau, 1), beta.subs(tau, 1)] == [1, 0, 0, 1]
    grid = torch.linspace(0, 1, 17, dtype=DTYPE)
    for fn, expr in ((interp.alpha, alpha), (interp.beta, beta), (interp.dalpha, sympy.diff(alpha, tau)),
                     (interp.dbeta, sympy.diff(beta, tau))):
        want = torch.tensor([float(expr.subs(tau, sympy.Rational(i, 16))) for i in range(17)], dtype=DTYPE)
        assert_close(fn(grid), want, f"{name}: {expr}")
    built = interp.flowcore()
    assert sympy.simplify(built.alpha.subs(built.var, tau) - alpha) == 0
    assert sympy.simplify(built.beta.subs(built.var, tau) - beta) == 0


@given(batch=st.integers(0, 40), eta=st.one_of(st.sampled_from(ETAS), st.floats(0.0, 0.99)))
def test_handwritten_split(batch, eta):
    objective = build("lsd", eta)
    assert list(objective.split(batch)) == split_counts([term.share for term in objective.terms], batch)
    assert sum(split_counts([term.share for term in objective.terms], batch)) == batch


def test_handwritten_term_rejects_unknown_terms():
    net, teacher = make_models((2,), 0)
    x0, x1 = make_data((2,), 2, 0)
    with pytest.raises(KeyError):
        handwritten_term_loss("lsd", "diagonal", net, x0, x1, {"t": torch.zeros(2, dtype=DTYPE)},
                              INTERPOLANTS["linear"], teacher)
    with pytest.raises(KeyError):
        handwritten_term_loss("lsd", "psd_u", net, x0, x1, {"t": torch.zeros(2, dtype=DTYPE)},
                              INTERPOLANTS["linear"], teacher)
