"""Compiled objectives equal the reference interpreter: loss and gradients, every backend present.

float64, relative error ≤ 1e-9 (flowcore.testing.FLOAT64_RTOL, justified there); hypothesis draws
interpolants, times (s = t exactly and |t − s| < 1e-6 included), shapes, batch sizes and seeds,
and random well-formed objectives. Shrunk failures are kept below as explicit regressions.
"""
from functools import lru_cache

import pytest
import sympy
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import flowcore as fc
from backends import available
from flowcore import objectives
from flowcore.testing import FLOAT64_RTOL, SmoothLogVar, SmoothTeacher, SmoothVelocity, compare_with_reference
from flowcore.testing.strategies import batches, interpolants
from flowcore.testing.strategies import objectives as random_objectives

VARIANTS = [(name, ()) for name in objectives.names()] + [("pfmm", (("teacher", "self"),)),
                                                           ("consistency", (("mode", "training"),))]


@lru_cache(maxsize=None)
def compiled(name: str, options: tuple, interpolant, backend: str):
    return fc.compile(objectives.get(name, **dict(options)), backend=backend, interpolant=interpolant)


def assert_matches_reference(program, objective, batch, seed=0, reduction=None):
    shape = batch["shape"]
    net = SmoothVelocity(shape, seed=seed)
    teacher = SmoothTeacher(shape, seed=seed + 1) if objective.needs_teacher else None
    weight_net = SmoothLogVar(seed=seed + 2) if objective.needs_weight_net else None
    result = compare_with_reference(program, objective, net, batch["x1"], batch["x0"], batch["times"],
                                    teacher=teacher, weight_net=weight_net, reduction=reduction)
    assert result.worst <= FLOAT64_RTOL, result


@pytest.mark.parametrize("backend", available())
@pytest.mark.parametrize("name,options", VARIANTS, ids=[n + "".join(f"-{v}" for _, v in o) for n, o in VARIANTS])
@settings(max_examples=6)
@given(data=st.data())
def test_builtin_matches_reference(name, options, backend, data):
    interpolant = data.draw(interpolants())
    program = compiled(name, options, interpolant, backend)
    batch = data.draw(batches(program.objective, max_batch=9))
    reduction = data.draw(st.sampled_from(["batch", "term_mean"]))
    assert_matches_reference(program, program.objective, batch, seed=batch["seed"] % 5, reduction=reduction)


@settings(max_examples=40)
@given(objective=random_objectives(), data=st.data())
def test_random_objectives_match_reference_on_torch(objective, data):
    batch = data.draw(batches(objective, max_batch=5))
    assert_matches_reference(fc.compile(objective, backend="torch"), objective, batch, seed=batch["seed"] % 5)


@pytest.mark.parametrize("backend", [b for b in available() if b.values[0] != "torch"])
@settings(max_examples=5)
@given(objective=random_objectives(max_depth=2), data=st.data())
def test_random_objectives_match_reference_on_compiled_backends(objective, data, backend):
    batch = data.draw(batches(objective, max_batch=4))
    assert_matches_reference(fc.compile(objective, backend=backend), objective, batch, seed=batch["seed"] % 5)


# -- regressions: shrunk failures of the strategies above ---------------------------------------------
x = fc.Var("x")
REGRESSIONS = {
    # after differentiation the bound variable vanished from the Bind (∂_t x = 0 for a bound x)
    "vanishing_binding": fc.sqnorm(fc.Dt(fc.X(fc.s, fc.t, fc.x0)) + fc.Dt(x)).bind(x=fc.I(fc.s)),
    # a loss kernel with no inputs at all, and a backward kernel with no outputs
    "constant_loss": fc.sqnorm(fc.D(fc.x0, fc.s)),
    # catastrophic cancellation at small t: compared with the scale floor, not relatively
    "cancellation": fc.sqnorm(fc.cos(fc.t) * fc.x0 - fc.x0),
    # a bias gradient that is exactly zero by cancellation of two O(1) contributions
    "cancelling_gradient": fc.sqnorm(fc.V(fc.s, fc.s, fc.x0) - fc.V(fc.s, fc.t, fc.x0)),
    # second order: a mixed partial of the map
    "second_order": fc.dot(fc.Ds(fc.Dt(fc.X(fc.s, fc.t, x))), fc.V(fc.t, fc.t, x)).bind(x=fc.I(fc.s)),
    # a direction that is the call's own primal: ∇v(x)·v(x) needs v(x) first (was a planning cycle)
    "self_direction": fc.sqnorm(fc.Dx(fc.V(fc.s, fc.s, x), x, along=fc.V(fc.s, fc.s, x)) - fc.x0).bind(x=fc.I(fc.s)),
    # x and sg(x) as one kernel's two outputs: CSE made them one tensor, which lost x's gradient
    "sg_direction": fc.sqnorm(fc.Dx(fc.V(fc.s, fc.s, x), x, along=fc.sg(x)) - fc.x0).bind(x=fc.I(fc.s)),
    # a spatial JVP along a call output, nested under a time derivative
    "dx_under_d": fc.sqnorm(fc.Dt(fc.Dx(fc.V(fc.s, fc.t, x), x, along=fc.V(fc.t, fc.t, x)))).bind(x=fc.I(fc.s)),
}


@pytest.mark.parametrize("backend", available())
@pytest.mark.parametrize("name", sorted(REGRESSIONS))
@settings(max_examples=4)
@given(data=st.data())
@example(data=None)
def test_regressions(name, backend, data):
    objective = fc.Objective(name, [fc.Term(name, REGRESSIONS[name], fc.Square(fc.s, fc.t), 1.0)])
    if data is None:  # the exact shrunk case: one sample, times equal or 1e-7 apart
        gen = torch.Generator().manual_seed(0)
        x0, x1 = torch.randn(2, 2, generator=gen, dtype=torch.float64), torch.randn(2, 2, generator=gen, dtype=torch.float64)
        batch = {"x0": x0, "x1": x1, "shape": (2,),
                 "times": {name: {"s": torch.tensor([0.3, 1e-7], dtype=torch.float64),
                                  "t": torch.tensor([0.3, 2e-7], dtype=torch.float64)}}}
    else:
        batch = data.draw(batches(objective, max_batch=5))
    assert_matches_reference(fc.compile(objective, backend=backend), objective, batch)


def test_sampled_times_are_the_references():
    """Without explicit times both paths draw the same times from the same generator state."""
    objective = objectives.get("psd_u")
    program = fc.compile(objective)
    net = SmoothVelocity((2,))
    x1 = torch.randn(8, 2, dtype=torch.float64)
    got = program(net, x1, generator=torch.Generator().manual_seed(3))
    want = fc.evaluate(objective, net, x1, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(got.loss, want.loss, rtol=1e-12, atol=0)
    for name in want.terms:
        for sym, value in want.terms[name].times.items():
            assert torch.equal(got.terms[name].times[sym], value)


def test_given_times_by_symbol_or_name_run_no_printer(monkeypatch):
    """Explicit times may be keyed by symbol or by name; matching them reads a symbol's name and
    never runs sympy's printer (once a few hundred µs of every benchmark step)."""
    objective = objectives.get("psd_u")
    program = fc.compile(objective)
    net = SmoothVelocity((2,))
    x1, x0 = torch.randn(2, 8, 2, dtype=torch.float64)
    sampled = program(net, x1, x0, generator=torch.Generator().manual_seed(3))
    by_symbol = {name: dict(term.times) for name, term in sampled.terms.items()}
    by_name = {name: {sym.name: value for sym, value in times.items()} for name, times in by_symbol.items()}

    def no_printer(self):
        raise AssertionError("sympy's printer ran")

    monkeypatch.setattr(sympy.Symbol, "__str__", no_printer)
    for times in (by_symbol, by_name):
        assert torch.equal(program(net, x1, x0, times=times).loss, sampled.loss)


def test_compile_by_name_with_options_and_errors():
    program = fc.compile("lsd", eta=0.5)
    assert [term.share for term in program.objective.terms] == [0.5, 0.5]
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        fc.compile("lsd", backend="gpu")
    with pytest.raises(KeyError, match="unknown objective"):
        fc.compile("lssd")
    with pytest.raises(ValueError, match="distils a teacher"):
        fc.compile("lmd")(SmoothVelocity((2,)), torch.randn(4, 2, dtype=torch.float64))


def test_float32_runs_and_agrees_to_float32_rounding():
    objective = objectives.get("lsd")
    program = fc.compile(objective)
    net = SmoothVelocity((2,), dtype=torch.float32)
    x1 = torch.randn(64, 2)
    got = program(net, x1, generator=torch.Generator().manual_seed(0))
    want = fc.evaluate(objective, net, x1, generator=torch.Generator().manual_seed(0))
    assert got.loss.dtype == torch.float32
    # float32: eps 1.2e-7 over a few hundred ops, summed over 64 samples
    assert torch.allclose(got.loss, want.loss, rtol=1e-5, atol=0)
