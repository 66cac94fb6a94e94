"""Declaration errors: every malformed declaration fails when it is built, naming what and why.

One test per kind of error. Each checks the error type, that `.where` and the message name the
offending sub-expression (a distinctive substring of it), and that `.reason` says why (a keyword).
"""
from __future__ import annotations

import re

import pytest
import sympy
import torch

import flowcore
import flowcore.objectives
from flowcore.lang import (D, DeclarationError, Derived, Dt, Dx, I, Objective, Teacher, Term, Uniform,
                           UpperTriangle, V, Var, X, custom, dot, learned_logvar, linear, param, s, sg, sqnorm,
                           t, u, x0, x1, z)
from flowcore.lang import nodes as n
from flowcore.lang.interpolants import TAU
from flowcore.reference import Interpreter, Scope, evaluate_term
from flowcore.testing.nets import SmoothLogVar, SmoothTeacher, SmoothVelocity

x = Var("x")
gamma = param("gamma")


def declaration_error(build, where: str, *reasons: str) -> DeclarationError:
    """Run `build`, which must raise DeclarationError naming `where` and giving every word of `reasons`."""
    with pytest.raises(DeclarationError) as info:
        build()
    err = info.value
    assert isinstance(err, ValueError)  # callers may catch it as a ValueError
    assert where in str(err.where), f"`.where` is {err.where!r}, expected it to name {where!r}"
    assert where in str(err), f"the message {str(err)!r} does not name {where!r}"
    for reason in reasons:
        assert reason.lower() in err.reason.lower(), f"the reason {err.reason!r} does not say {reason!r}"
        assert reason.lower() in str(err).lower()
    return err


def fm_term(name: str = "fm", share: float = 1.0, loss=None) -> Term:
    return Term(name, loss if loss is not None else sqnorm(V(t, t, I(t)) - Dt(I(t))), Uniform(t), share)


# -- derivatives -----------------------------------------------------------------------------------
@pytest.mark.parametrize("tau, where, reason", [
    (gamma, "D(V(s, t, x0), gamma)", "parameter, not a time"),
    (sympy.Symbol("q", real=True), "D(V(s, t, x0), q)", "time symbol"),
    (2 * t, "D(V(s, t, x0), 2*t)", "time symbol"),
    ("t", "D(V(s, t, x0), t)", "time symbol"),
], ids=["param", "plain-sympy-symbol", "expression-of-a-time", "string"])
def test_derivative_in_a_non_time_is_rejected(tau, where, reason):
    err = declaration_error(lambda: D(V(s, t, x0), tau), where, reason)
    assert str(tau) in err.reason


@pytest.mark.parametrize("along, where, kind", [
    (sqnorm(x1), "along=|x1|²", "scalar"),
    (dot(x0, x1), "along=⟨x0, x1⟩", "scalar"),
    (3, "along=3", "int"),
    (t, "along=t", "Time"),
], ids=["sqnorm", "dot", "number", "time-symbol"])
def test_dx_along_a_non_tensor_is_rejected(along, where, kind):
    declaration_error(lambda: Dx(X(s, t, x), x, along=along), where, "along a tensor", kind)


@pytest.mark.parametrize("wrt, name", [(x0, "x0"), (V(s, t, x0), "V(s, t, x0)"), (I(s), "I(s)")],
                         ids=["source", "network-call", "interpolant"])
def test_dx_in_a_non_variable_is_rejected(wrt, name):
    declaration_error(lambda: Dx(X(s, t, x), wrt, along=x1), f"Dx(X(s, t, x), {name}, along=x1)",
                      "free variable", f"got `{name}`")


# -- variables -------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss, var, where", [
    (sqnorm(X(s, t, x)), "x", "|X(s, t, x)|²"),
    (sqnorm(Dt(X(s, t, x))), "x", "∂_t[X(s, t, x)]"),
    (sqnorm(X(s, t, x)).bind(x=I(s)) + sqnorm(V(s, t, Var("y"))), "y", "V(s, t, y)"),
    (sqnorm(X(s, t, x)).bind(x=V(s, t, Var("w"))), "w", "[x := V(s, t, w)]"),
], ids=["plain", "inside-a-derivative", "one-of-two-vars", "inside-a-bound-value"])
def test_free_variable_never_bound_is_rejected_by_term(loss, var, where):
    declaration_error(lambda: Term("lsd", loss, UpperTriangle(s, t), 1.0), where, f"`{var}`", "never bound",
                      "term 'lsd'")


def test_binding_an_unknown_variable_is_rejected():
    err = declaration_error(lambda: X(s, t, x).bind(y=I(s)), "X(s, t, x)", "unknown variable `y`")
    assert "free: ['x']" in err.reason
    # a variable already bound inside is not free any more either
    declaration_error(lambda: X(s, t, x).bind(x=I(s)).bind(x=I(t)), "[x := I(s)]", "unknown variable `x`")


def test_binding_a_variable_to_a_non_tensor_is_rejected():
    declaration_error(lambda: X(s, t, x).bind(x=sqnorm(x0)), "[x := |x0|²]", "value bound to `x`", "scalar")


# -- kinds (shapes) --------------------------------------------------------------------------------
@pytest.mark.parametrize("loss, where, kind", [
    (X(s, t, x0), "X(s, t, x0)", "tensor"),
    (V(s, t, I(s)) - sg(V(s, t, I(t))), "V(s, t, I(s)) - sg(V(s, t, I(t)))", "tensor"),
    (n.Coef(t - s), "t - s", "coef"),
], ids=["flow-map", "residual", "coefficient"])
def test_term_loss_must_be_a_per_sample_scalar(loss, where, kind):
    declaration_error(lambda: Term("bad", loss, UpperTriangle(s, t), 1.0), where, "per-sample scalar",
                      f"this is a {kind}")


def test_term_loss_must_be_an_expression():
    declaration_error(lambda: Term("bad", 3.0, UpperTriangle(s, t), 1.0), "3.0", "expression of the language")


@pytest.mark.parametrize("build, where, role", [
    (lambda: X(s, t, x0) + sqnorm(x1), "X(s, t, x0) + |x1|²", "cannot add the tensor"),
    (lambda: sqnorm(x1) - V(s, t, x0), "V(s, t, x0)", "cannot add the scalar `|x1|²`"),
    (lambda: sqnorm(sqnorm(x1)), "|x1|²", "argument of sqnorm"),
    (lambda: dot(x0, sqnorm(x1)), "dot(x0, |x1|²)", "right operand of dot"),
    (lambda: dot(dot(x0, x1), x1), "dot(⟨x0, x1⟩, x1)", "left operand of dot"),
    (lambda: V(s, t, sqnorm(x0)), "V(s, t, |x0|²)", "the input"),
    (lambda: X(s, t, 2 * t), "X(s, t, 2*t)", "the input"),
], ids=["tensor+scalar", "scalar-tensor", "sqnorm-of-scalar", "dot-right-scalar", "dot-left-scalar",
        "network-input-scalar", "flow-map-input-coefficient"])
def test_shape_incompatible_operands_are_rejected(build, where, role):
    declaration_error(build, where, "shape-incompatible", role)


def test_non_constant_exponent_is_rejected():
    declaration_error(lambda: V(s, t, x0) ** t, "(V(s, t, x0))^(t)", "constant")
    declaration_error(lambda: sqnorm(x0) ** (1 - gamma), "(|x0|²)^(1 - gamma)", "constant")


# -- interpolants ----------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha, beta, gamma_, where, condition", [
    (2 - TAU, TAU, 0, "2 - tau", "α(0) = 1"),
    (1 - TAU, TAU + sympy.Rational(1, 3), 0, "tau + 1/3", "β(0) = 0"),
    (sympy.cos(TAU), TAU, 0, "cos(tau)", "α(1) = 0"),
    (1 - TAU, TAU / 2, 0, "tau/2", "β(1) = 1"),
    (1 - TAU, TAU, 1 - TAU, "1 - tau", "γ(0) = 0"),
    (1 - TAU, TAU, sympy.sqrt(TAU), "sqrt(tau)", "γ(1) = 0"),
], ids=["alpha0", "beta0", "alpha1", "beta1", "gamma0", "gamma1"])
def test_boundary_violating_interpolant_is_rejected(alpha, beta, gamma_, where, condition):
    err = declaration_error(lambda: custom(alpha, beta, gamma_, name="mine"), where, condition, "'mine'")
    assert err.where == sympy.sympify(where, locals={"tau": TAU})


# -- samplers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss, sampler, where, symbol", [
    (sqnorm(V(s, t, x0)), Uniform(t), "V(s, t, x0)", "s"),
    (sqnorm(V(s, u, x0)), UpperTriangle(s, t), "V(s, u, x0)", "u"),
    (sqnorm((1 - gamma) * x0), UpperTriangle(s, t), "(1 - gamma)·x0", "gamma"),
    (sqnorm(Dt(X(s, t, x))).bind(x=I(u)), UpperTriangle(s, t), "I(u)", "u"),
], ids=["call-time", "second-call-time", "param-in-coefficient", "interpolant-time"])
def test_sampler_that_does_not_produce_a_used_time_is_rejected(loss, sampler, where, symbol):
    declaration_error(lambda: Term("psd", loss, sampler, 1.0), where, f"uses `{symbol}`", "does not produce",
                      str(sampler))


@pytest.mark.parametrize("sampler, where, missing", [
    (Derived(u, s + gamma * (t - s)), "u = s + gamma*(t - s)", "gamma, s, t"),
    (UpperTriangle(s, t) & Derived(u, s + gamma * (t - s)) & Uniform(gamma), "u = s + gamma*(t - s)", "gamma"),
    (Derived(u, s + gamma * (t - s)) & UpperTriangle(s, t) & Uniform(gamma), "u = s + gamma*(t - s)",
     "gamma, s, t"),
], ids=["alone", "param-drawn-after", "everything-drawn-after"])
def test_derived_sampler_with_inputs_not_produced_before_it_is_rejected(sampler, where, missing):
    declaration_error(lambda: Term("psd", sqnorm(V(s, u, x0)), sampler, 1.0), where, f"needs {missing}",
                      "before it")


def test_symbol_produced_twice_is_rejected():
    declaration_error(lambda: UpperTriangle(s, t) & Uniform(t), "t ~ U[0, 1]", "t produced twice")


def test_sampling_a_non_symbol_is_rejected():
    declaration_error(lambda: Uniform(sympy.Symbol("q")), "q", "time", "parameter")


# -- unknown names ---------------------------------------------------------------------------------
@pytest.mark.parametrize("build, role", [
    (lambda: sympy.Symbol("k") * V(s, t, x0), "operand"),
    (lambda: V(s, t, x0) / (1 + sympy.Symbol("k")), "divisor"),
    (lambda: V(s, sympy.Symbol("k"), x0), "time argument `b`"),
    (lambda: I(sympy.Symbol("k") / 2), "time of I"),
    (lambda: flowcore.fixed(sqnorm(x0), sympy.Symbol("k") * t), "fixed weight"),
    (lambda: Derived(u, s + sympy.Symbol("k")), "definition of u"),
], ids=["coefficient", "divisor", "call-time", "interpolant-time", "fixed-weight", "derived-time"])
def test_unknown_sympy_symbol_is_rejected(build, role):
    declaration_error(build, "k", "unknown name(s) k", role)


def test_unknown_function_name_is_rejected():
    declaration_error(lambda: n.Func("erf", x0), "erf", "unknown function", "exp")


def test_unknown_source_is_rejected():
    declaration_error(lambda: n.Source("x2"), "x2", "unknown source", "x0, x1, z")


def test_unknown_builtin_objective_is_rejected():
    with pytest.raises(KeyError, match=r"unknown objective 'nope'.*lsd"):
        flowcore.objectives.get("nope")
    with pytest.raises(KeyError, match="nope"):
        flowcore.objective("nope")


# -- objectives ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shares, total", [((0.5,), "0.5"), ((0.75, 0.5), "1.25"), ((0.3, 0.3, 0.3), "0.9")])
def test_shares_not_summing_to_one_are_rejected(shares, total):
    terms = [fm_term(f"t{i}", share) for i, share in enumerate(shares)]
    declaration_error(lambda: Objective("mix", terms), "mix", f"sum to {total}", "not 1")


@pytest.mark.parametrize("share", [0.0, -0.25, 1.5])
def test_share_outside_unit_interval_is_rejected(share):
    declaration_error(lambda: fm_term(share=share), str(share), "(0, 1]", "term 'fm'")


def test_duplicate_term_names_are_rejected():
    declaration_error(lambda: Objective("mix", [fm_term("a", 0.5), fm_term("b", 0.25), fm_term("a", 0.25)]),
                      "a", "two terms are named 'a'", "'mix'")


def test_unknown_reduction_is_rejected():
    declaration_error(lambda: Objective("mix", [fm_term()], reduction="median"), "median", "unknown reduction",
                      "batch", "term_mean")


def test_z_with_a_deterministic_interpolant_is_rejected():
    loss = sqnorm(V(t, t, I(t)) - Dt(I(t)) - z)
    declaration_error(lambda: Objective("noisy", [fm_term(loss=loss)]), "- z|²", "noisy", "uses z", "γ·z")
    stochastic = custom(1 - TAU, TAU, TAU * (1 - TAU), name="sto")
    objective = Objective("noisy", [fm_term(loss=loss)], interpolant=stochastic)  # fine with a γ·z part
    # ... and switching the interpolant away later is validated again
    declaration_error(lambda: objective.with_options(interpolant=linear()), "- z|²", "noisy", "uses z")


def test_unknown_objective_option_is_rejected():
    objective = Objective("mix", [fm_term()])
    declaration_error(lambda: objective.with_options(sigmaa=0.5), "sigmaa", "unknown objective option")
    declaration_error(lambda: objective.with_options(sigma=-1.0), "-1.0", "positive")


# -- the reference: missing callables --------------------------------------------------------------
def _batch(shape=(3,), batch=4):
    gen = torch.Generator().manual_seed(0)
    return (torch.randn((batch, *shape), generator=gen, dtype=torch.float64),
            torch.randn((batch, *shape), generator=gen, dtype=torch.float64))


def test_reference_requires_a_teacher_when_the_objective_distils_one():
    net, (a, b) = SmoothVelocity((3,)), _batch()
    objective = flowcore.objective("lmd")
    with pytest.raises(ValueError, match=r"'lmd' distils a teacher.*teacher="):
        flowcore.evaluate(objective, net, b, a)
    term = Term("diag", sqnorm(V(t, t, I(t)) - Teacher(t, I(t))), Uniform(t), 1.0)
    times = {t: torch.rand(4, dtype=torch.float64)}
    with pytest.raises(ValueError, match=re.escape("`Teacher(t, I(t))` needs a teacher")):
        evaluate_term(term, net, a, b, times, interpolant=linear())
    # given one, both evaluate
    assert flowcore.evaluate(objective, net, b, a, teacher=SmoothTeacher((3,))).loss.isfinite()
    assert evaluate_term(term, net, a, b, times, interpolant=linear(), teacher=SmoothTeacher((3,))).shape == (4,)


def test_reference_requires_a_weight_net_for_a_learned_weight():
    net, (a, b) = SmoothVelocity((3,)), _batch()
    term = Term("lw", learned_logvar(sqnorm(V(s, t, I(s)) - x1)), UpperTriangle(s, t), 1.0)
    objective = Objective("weighted", [term])
    with pytest.raises(ValueError, match=r"'weighted' has a learned weight.*weight_net="):
        flowcore.evaluate(objective, net, b, a)
    times = {s: torch.zeros(4, dtype=torch.float64), t: torch.ones(4, dtype=torch.float64)}
    with pytest.raises(ValueError, match=re.escape("`w(s, t)` needs a log-variance head")):
        evaluate_term(term, net, a, b, times, interpolant=linear())
    assert flowcore.evaluate(objective, net, b, a, weight_net=SmoothLogVar()).loss.isfinite()


def test_reference_requires_z_for_a_stochastic_interpolant_and_values_for_times():
    net, (a, b) = SmoothVelocity((3,)), _batch()
    stochastic = custom(1 - TAU, TAU, TAU * (1 - TAU))
    interpreter = Interpreter(net, a, b, stochastic)
    with pytest.raises(ValueError, match="no `z` tensor"):
        interpreter.evaluate(I(t), Scope(times={t: torch.full((4,), 0.5, dtype=torch.float64)}, vars={}))
    with pytest.raises(ValueError, match="`∂_s\\[V\\(s, t, x0\\)\\]` differentiates in `s`"):
        Interpreter(net, a, b, linear()).evaluate(D(V(s, t, x0), s), Scope(times={t: torch.zeros(4)}, vars={}))
