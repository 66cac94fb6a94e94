"""Declarations accepted or answered with a traceback before issue 15: each is now one named error.

Negative loss weights, times outside [0, 1], malformed arguments and objective files. Each test
checks the error type and that the message names the offending piece (docs/design.md, "The
language"); the CLI tests check one line on stderr and exit code 2.
"""
from __future__ import annotations

import pytest
import sympy
import torch

import flowcore as fc
import flowcore.objectives
from flowcore.catalog import load
from flowcore.cli import main
from flowcore.lang import (Constant, DeclarationError, Derived, Dt, I, Objective, Square, Teacher, Term, Uniform,
                           UpperTriangle, V, X, custom, fixed, param, s, sqnorm, sqrt, t, u)
from flowcore.testing.nets import SmoothVelocity

gamma = param("gamma")
LOSS = sqnorm(V(t, t, I(t)) - Dt(I(t)))
FLOW = sqnorm(V(s, t, I(s)) - Dt(I(s)))  # a loss of the pair (s, t)


def declaration_error(build, *words: str) -> DeclarationError:
    """Run `build`, which must raise DeclarationError whose one-line message contains every word."""
    with pytest.raises(DeclarationError) as info:
        build()
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, f"{message!r} does not say {word!r}"
    return info.value


# -- negative loss weights -------------------------------------------------------------------------
def test_a_negative_constant_weight_is_refused_where_it_is_given():
    declaration_error(lambda: fixed(LOSS, -2.0), "-2.0", "fixed weight", "negative", "unbounded below")


def test_a_weight_negative_on_the_sampled_times_is_refused_naming_the_term():
    declaration_error(lambda: Term("w", fixed(LOSS, t - 2), Uniform(t), 1.0),
                      "term 'w'", "t - 2", "negative", "t = 0")


def test_a_weight_negative_only_off_the_sampled_triangle_is_accepted_and_negative_on_the_square_refused():
    Term("w", fixed(FLOW, t - s), UpperTriangle(s, t), 1.0)  # t ≥ s on the upper triangle
    declaration_error(lambda: Term("w", fixed(FLOW, t - s), Square(s, t), 1.0), "term 'w'", "-s + t", "negative")


def test_a_weight_negative_inside_a_sum_of_losses_is_refused():
    declaration_error(lambda: Term("w", LOSS + fixed(LOSS, t - 0.5), Uniform(t), 1.0), "term 'w'", "negative")


@pytest.mark.parametrize("name", flowcore.objectives.names())
def test_every_builtin_still_declares(name):
    fc.objective(name)


def test_a_weight_that_is_not_real_on_the_sampled_times_is_refused():
    declaration_error(lambda: Term("w", fixed(LOSS, sympy.sqrt(-t)), Uniform(t), 1.0),
                      "term 'w'", "sqrt(-t)", "not a real number", "nan at t = 0.125")
    Term("w", fixed(LOSS, sympy.sin(t) / t), Uniform(t), 1.0)  # NaN only at t = 0: a removable singularity


def test_nonnegative_weights_of_every_kind_are_accepted():
    Term("w", fixed(LOSS, 1 - t), Uniform(t), 1.0)
    Term("w", fixed(LOSS, sympy.cos(sympy.pi * t / 2) ** 2), Uniform(t), 1.0)
    Term("w", fixed(fc.adaptive(LOSS), 0.5), Uniform(t), 1.0)
    Term("w", -fc.learned_logvar(LOSS, t, t) + 2 * fc.learned_logvar(LOSS, t, t), Uniform(t), 1.0)


def band_objective() -> Objective:
    """A weight negative only on the band 0.28 < t < 0.32, between the points the declaration
    checks: sympy can neither sign it nor find it negative there, so the first evaluation must."""
    weight = (t - sympy.Rational(3, 10)) ** 2 - sympy.Rational(1, 2500)
    return Objective("band", [Term("band", fixed(LOSS, weight), Uniform(t), 1.0)])


def batch() -> torch.Tensor:
    return torch.randn(4096, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_a_weight_sympy_cannot_sign_is_checked_at_first_evaluation_by_the_reference():
    with pytest.raises(DeclarationError) as info:
        fc.evaluate(band_objective(), SmoothVelocity((2,)), batch(), generator=torch.Generator().manual_seed(0))
    assert "term 'band'" in str(info.value) and "negative" in str(info.value) and "at t = 0." in str(info.value)


def test_a_weight_sympy_cannot_sign_is_checked_at_first_evaluation_when_compiled():
    compiled = fc.compile(band_objective(), backend="torch")
    with pytest.raises(DeclarationError) as info:
        compiled(SmoothVelocity((2,)), batch(), generator=torch.Generator().manual_seed(0))
    assert "term 'band'" in str(info.value) and "negative" in str(info.value)


# -- times outside [0, 1] --------------------------------------------------------------------------
def test_uniform_with_low_above_high_is_refused_not_swapped():
    declaration_error(lambda: Uniform(t, low=0.8, high=0.2), "Uniform", "low=0.8", "high=0.2")
    declaration_error(lambda: Uniform(gamma, low=0.8, high=0.2), "low=0.8", "high=0.2")


def test_uniform_times_outside_the_unit_interval_are_refused_but_params_may_leave_it():
    declaration_error(lambda: Uniform(t, low=-1, high=2), "`t`", "[0, 1]", "[-1, 2]")
    Uniform(gamma, low=-1, high=2)


@pytest.mark.parametrize("low, high", [("0", 1.0), (torch.tensor(0.1), 1.0), (0.0, float("nan"))])
def test_uniform_bounds_must_be_finite_numbers(low, high):
    declaration_error(lambda: Uniform(t, low=low, high=high), "Uniform", "number")


def test_a_constant_time_outside_the_unit_interval_is_refused():
    declaration_error(lambda: Constant(t, 1.5), "Constant", "1.5", "[0, 1]")
    declaration_error(lambda: Constant(t, "half"), "Constant", "number")
    Constant(gamma, 1.5)  # a parameter is not a time


@pytest.mark.parametrize("build, where", [
    (lambda: I(2.0), "I(2.0)"),
    (lambda: I(-0.5), "I(-0.5)"),
    (lambda: V(0, 1.5, I(t)), "1.5"),
], ids=["I-above", "I-below", "V"])
def test_a_constant_call_time_outside_the_unit_interval_is_refused(build, where):
    declaration_error(build, where, "[0, 1]")


def test_a_time_expression_leaving_the_unit_interval_on_the_sampled_times_is_refused():
    declaration_error(lambda: Term("far", sqnorm(V(t, t, I(2 * t))), Uniform(t), 1.0),
                      "term 'far'", "2*t", "[0, 1]")
    Term("near", sqnorm(V(t, t, I(2 * t))), Uniform(t, low=0.0, high=0.5), 1.0)
    declaration_error(lambda: Term("param", sqnorm(V(gamma, t, I(t))), Uniform(t) & Uniform(gamma, high=2), 1.0),
                      "term 'param'", "gamma", "V(gamma, t, I(t))", "[0, 1]")


def test_a_derived_time_leaving_the_unit_interval_is_refused():
    declaration_error(lambda: Term("d", FLOW, Uniform(t) & Derived(s, t + 1), 1.0), "term 'd'", "1 + t", "[0, 1]")
    Term("d", FLOW, Uniform(t, high=0.5) & Derived(s, 2 * t), 1.0)  # in [0, 1] where t is drawn
    sampler = UpperTriangle(s, t) & Uniform(gamma, low=-1, high=2) & Derived(u, s + gamma * (t - s))
    declaration_error(lambda: Term("psd", sqnorm(V(s, u, I(s))), sampler, 1.0), "term 'psd'", "u", "[0, 1]")
    Term("psd", sqnorm(V(s, u, I(s))), UpperTriangle(s, t) & fc.between(u, s, t, gamma), 1.0)


@pytest.mark.parametrize("pair", [Square, UpperTriangle, fc.Diagonal, fc.Dyadic])
def test_a_pair_sampler_of_one_symbol_twice_is_refused(pair):
    declaration_error(lambda: pair(s, s), f"{pair.__name__}(s, s)", "twice")
    declaration_error(lambda: Uniform(t, t), "twice")


@pytest.mark.parametrize("name", ["", "  ", None])
def test_empty_names_are_refused(name):
    declaration_error(lambda: fc.param(name), "name", "identifier")
    declaration_error(lambda: fc.times(name), "times")
    declaration_error(lambda: Term("a", LOSS, Uniform(), 1.0), "Uniform", "none")
    declaration_error(lambda: Term(name, LOSS, Uniform(t), 1.0), "term", "name")
    declaration_error(lambda: Objective(name, [Term("fm", LOSS, Uniform(t), 1.0)]), "objective", "name")


# -- arguments that raised bare Python errors ------------------------------------------------------
@pytest.mark.parametrize("build, words", [
    (lambda: V(t, I(t)), ("V", "3", "a, b, x", "got 2")),
    (lambda: V(s, t, I(t), I(t)), ("V", "got 4")),
    (lambda: X(t, I(t)), ("X", "got 2")),
    (lambda: Teacher(t, t, I(t)), ("Teacher", "a, x", "got 3")),
    (lambda: I(), ("I", "got 0")),
    (lambda: V(s, t, y=I(t)), ("V", "y")),
], ids=["V-2", "V-4", "X-2", "Teacher-3", "I-0", "V-keyword"])
def test_wrong_arity_of_a_call_is_a_declaration_error(build, words):
    declaration_error(build, *words)


def test_terms_given_as_expressions_are_refused():
    declaration_error(lambda: Objective("o", [LOSS]), "objective 'o'", "item 0", "Term(")


def test_terms_given_as_one_term_not_a_list_is_refused():
    declaration_error(lambda: Objective("o", Term("a", LOSS, Uniform(t), 1.0)), "objective 'o'", "list", "[Term(")


@pytest.mark.parametrize("share", ["half", None, True, torch.tensor(0.5)])
def test_a_share_that_is_not_a_number_is_refused(share):
    declaration_error(lambda: Term("a", LOSS, Uniform(t), share), "term 'a'", "share", "number")


@pytest.mark.parametrize("build", [
    lambda: V(t, t, torch.randn(3)),
    lambda: sqnorm(torch.ones(2)),
    lambda: fixed(LOSS, torch.tensor(2.0)),
    lambda: LOSS * torch.tensor(2.0),
    lambda: torch.tensor(2.0) * LOSS,
    lambda: I(torch.tensor(0.5)),
], ids=["V-input", "sqnorm", "weight", "times", "rtimes", "I"])
def test_a_torch_tensor_inside_a_declaration_is_refused(build):
    declaration_error(build, "torch tensor", "x0, x1")


@pytest.mark.parametrize("build, words", [
    (lambda: Objective("o", [Term("fm", LOSS, Uniform(t), 1.0)], sigma=torch.tensor(1.0)), ("objective 'o'", "σ")),
    (lambda: Objective("o", [Term("fm", LOSS, Uniform(t), 1.0)], sigma="1"), ("objective 'o'", "σ", "str")),
    (lambda: Objective("o", [Term("fm", LOSS, Uniform(t), 1.0)], reduction=["batch"]), ("reduction", "batch")),
    (lambda: fc.Dyadic(s, t, "3"), ("Dyadic", "levels", "str")),
    (lambda: fc.adaptive(LOSS, c="0.1"), ("adaptive", "c", "str")),
    (lambda: fc.objective("lsd", eta="half"), ("lsd", "eta", "str")),
    (lambda: fc.adaptive(LOSS, p=torch.tensor(1.0)), ("adaptive", "p", "Tensor")),
], ids=["sigma-tensor", "sigma-str", "reduction-list", "dyadic-levels", "adaptive-c", "eta", "adaptive-p"])
def test_options_that_are_not_numbers_are_named(build, words):
    with pytest.raises(ValueError) as info:  # a DeclarationError, or the built-ins' ValueError for eta
        build()
    for word in words:
        assert word in str(info.value)


def test_a_complex_coefficient_names_the_imaginary_unit_not_the_interpolant():
    err = declaration_error(lambda: sqrt(-1) * LOSS, "sqrt(-1)", "complex", "imaginary unit")
    assert "in `I`" not in str(err)
    declaration_error(lambda: fixed(LOSS, sympy.sqrt(-1)), "imaginary unit", "complex")


def test_a_custom_interpolant_from_strings_uses_its_variable():
    ours = custom("1-tau", "tau")
    assert ours.alpha == custom(1 - fc.lang.interpolants.TAU, fc.lang.interpolants.TAU).alpha
    declaration_error(lambda: custom("1-q", "q"), "interpolant 'custom'", "q", "tau")
    declaration_error(lambda: custom("1-", "tau"), "interpolant 'custom'", "alpha", "1-")


def test_a_look_alike_symbol_is_named_as_a_different_symbol():
    declaration_error(lambda: custom(1 - sympy.Symbol("tau"), sympy.Symbol("tau")), "different symbol", "TAU")


# -- objective files -------------------------------------------------------------------------------
def write(tmp_path, text: str):
    path = tmp_path / "mine.py"
    path.write_text("from flowcore import Objective, Term, Uniform, V, I, Dt, sqnorm, t\n" + text)
    return path


FM = "Objective('mine', [Term('fm', sqnorm(V(t, t, I(t)) - Dt(I(t))), Uniform(t), 1.0)])"


def one_line_error(argv, capsys, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, f"{err!r} does not say {word!r}"
    return err


@pytest.mark.parametrize("command", ["show", "compile"])
def test_a_build_returning_a_non_objective_is_a_named_error(tmp_path, capsys, command):
    path = write(tmp_path, "def build(**options):\n    return 42\n")
    one_line_error([command, str(path)], capsys, str(path), "build() returned int", "expected flowcore.Objective")


def test_one_objective_bound_to_two_names_counts_once(tmp_path):
    path = write(tmp_path, f"mine = {FM}\nalias = mine\n")
    assert load(str(path)).name == "mine"


def test_two_objectives_in_a_file_are_named(tmp_path):
    path = write(tmp_path, f"one = {FM}\ntwo = {FM.replace('mine', 'two')}\n")
    with pytest.raises(ValueError, match="found 2.*one, two"):
        load(str(path))


@pytest.mark.parametrize("body, words", [
    ("x = (\n", (":2:", "SyntaxError")),
    ("mine = Objective('mine', [Term('fm', sqnorm(V(t, t, I(t))), Uniform(t), 1.0)])\nboom = undefined_name\n",
     (":3:", "NameError", "undefined_name")),
    ("def build(**options):\n    return Objective('mine', [Term('', sqnorm(V(t, t, I(t))), Uniform(t), 1.0)])\n",
     (":3:", "name")),
    ("mine = Objective('mine', [Term('fm', sqnorm(V(t, I(t))), Uniform(t), 1.0)])\n",
     (":2:", "V takes 3 arguments")),
], ids=["syntax", "name", "declaration-in-build", "declaration-at-module-level"])
@pytest.mark.parametrize("command", ["show", "check"])
def test_an_error_in_a_user_file_is_one_line_with_file_and_line(tmp_path, capsys, body, words, command):
    path = write(tmp_path, body)
    one_line_error([command, str(path)], capsys, f"flowcore {command}: ", str(path), *words)
