"""Expression nodes: structural equality and hashing, immutability, printing, and objective metadata."""
from __future__ import annotations

import dataclasses

import pytest
import sympy
from hypothesis import given
from hypothesis import strategies as st

import flowcore
import flowcore.objectives
from flowcore.lang import (D, Ds, Dt, Dx, I, Objective, Term, Uniform, UpperTriangle, V, Var, X, adaptive,
                           between, dot, exp, fixed, free_vars, learned_logvar, linear, param, s, sg, sqnorm, t,
                           times, trig, u, x0, x1)
from flowcore.lang import DeclarationError, derivative_order, symbols_used
from flowcore.lang import nodes as n

x = Var("x")
gamma = param("gamma")


def lsd_loss():
    x = Var("x")
    return sqnorm(Dt(X(s, t, x)) - sg(V(t, t, sg(X(s, t, x))))).bind(x=I(s))


def esd_loss():
    x = Var("x")
    return sqnorm(Ds(X(s, t, x)) + sg(Dx(X(s, t, x), x, along=V(s, s, x)))).bind(x=I(s))


def psd_loss():
    x = Var("x")
    return sqnorm(V(s, t, x) - sg(gamma * V(s, u, x) + (1 - gamma) * V(u, t, X(s, u, x)))).bind(x=I(s))


# -- structural equality and hashing --------------------------------------------------------------------
@pytest.mark.parametrize("build", [lsd_loss, esd_loss, psd_loss,
                                   lambda: learned_logvar(adaptive(sqnorm(V(s, t, I(s)) - Ds(I(s))), c=0.1)),
                                   lambda: fixed(dot(exp(X(s, t, x0)), x1 / (1 + t)), (t - s) ** 2)],
                         ids=["lsd", "esd", "psd", "weighted", "fixed"])
def test_equal_declarations_built_twice_are_equal(build):
    a, b = build(), build()
    assert a is not b
    assert a == b and not (a != b)
    assert hash(a) == hash(b)
    assert {a: "first"}[b] == "first"
    assert len({a, b}) == 1
    assert repr(a) == repr(b)


def test_times_declared_again_are_the_same_times():
    s2, t2 = times("s t")
    assert V(s2, t2, x0) == V(s, t, x0) and hash(V(s2, t2, x0)) == hash(V(s, t, x0))
    assert Var("x") == x and hash(Var("x")) == hash(x)
    # the coefficient algebra is sympy's: equal polynomials written differently are one node
    assert (t - s) * x0 == (-s + t) * x0
    assert V(s, t, x0) / 2 == sympy.Rational(1, 2) * V(s, t, x0)


@pytest.mark.parametrize("left, right", [
    (V(s, t, x0), V(t, s, x0)),
    (V(s, t, x0), X(s, t, x0)),
    (V(s, t, x0), V(s, t, x1)),
    (Ds(X(s, t, x)), Dt(X(s, t, x))),
    (X(s, t, x), sg(X(s, t, x))),
    (X(s, t, x).bind(x=I(s)), X(s, t, x).bind(x=I(t))),
    (X(s, t, x), X(s, t, Var("y"))),
    ((t - s) * x0, (s - t) * x0),
    (sqnorm(x0), dot(x0, x0)),
    (Dx(V(s, t, x), x, along=x0), Dx(V(s, t, x), x, along=x1)),
    (x0 + x1, x0 - x1),
    (x0 * x1, x0 + x1),
    (exp(x0), n.Func("sin", x0)),
    (V(s, t, x0) ** 2, V(s, t, x0) ** 3),
    (lsd_loss(), esd_loss()),
    (n.Source("x0"), Var("x0")),  # same name, different node type
], ids=lambda e: repr(e)[:30])
def test_different_declarations_differ(left, right):
    assert left != right and not (left == right)
    table = {left: 1, right: 2}
    assert len(table) == 2 and table[left] == 1 and table[right] == 2


@st.composite
def recipes(draw, depth=3):
    """A random well-formed tensor expression, as a nested tuple that `build` turns into nodes."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return ("leaf", draw(st.sampled_from(["x0", "x1", "x", "I(s)", "I(t)", "I(u)"])))
    op = draw(st.sampled_from(["V", "X", "sg", "D", "add", "scale", "mul", "exp", "bind", "Dx"]))
    child = draw(recipes(depth - 1))
    if op in ("V", "X"):
        times_ = draw(st.sampled_from([(s, t), (t, t), (s, u), (u, t)]))
        return (op, times_, child)
    if op == "D":
        return (op, draw(st.sampled_from([s, t, u])), child)
    if op in ("add", "mul", "Dx"):
        return (op, child, draw(recipes(depth - 1)))
    if op == "scale":
        return (op, draw(st.sampled_from([2, t - s, 1 - gamma, sympy.cos(sympy.pi * t / 2)])), child)
    if op == "bind":
        return (op, draw(st.sampled_from(["I(s)", "I(u)"])), child)
    return (op, child)


def build(recipe):
    op = recipe[0]
    if op == "leaf":
        return {"x0": x0, "x1": x1, "x": Var("x"), "I(s)": I(s), "I(t)": I(t), "I(u)": I(u)}[recipe[1]]
    if op in ("V", "X"):
        return (V if op == "V" else X)(*recipe[1], build(recipe[2]))
    if op == "D":
        return D(build(recipe[2]), recipe[1])
    if op == "add":
        return build(recipe[1]) + build(recipe[2])
    if op == "mul":
        return build(recipe[1]) * build(recipe[2])
    if op == "scale":
        return recipe[1] * build(recipe[2])
    if op == "sg":
        return sg(build(recipe[1]))
    if op == "exp":
        return exp(build(recipe[1]))
    inner = build(recipe[2] if op == "bind" else recipe[1])
    if "x" not in free_vars(inner):
        return inner
    if op == "bind":
        return inner.bind(x=build(("leaf", recipe[1])))
    return Dx(inner, Var("x"), along=build(recipe[2]))


@given(recipe=recipes(), other=recipes())
def test_structural_equality_of_random_expressions(recipe, other):
    a, b = build(recipe), build(recipe)
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)
    assert {a: 1}[b] == 1
    c = build(other)
    if a == c:
        assert hash(a) == hash(c) and repr(a) == repr(c)
    if repr(a) != repr(c):
        assert a != c
    # wrapping always makes a different node, and equal wrappers of equal nodes are equal
    assert sg(a) != a and Ds(a) != a and Ds(a) != Dt(a) and sqnorm(a) != a
    assert sg(a) == sg(b) and hash(Ds(a)) == hash(Ds(b))


# -- immutability ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("node, field", [
    (V(s, t, x0), "a"), (X(s, t, x), "x"), (Ds(X(s, t, x)), "tau"), (sg(x0), "arg"), (x, "name"),
    (lsd_loss(), "bindings"), (x0 + x1, "terms"), ((t - s) * x0, "coef"), (sqnorm(x0), "arg"),
])
def test_nodes_are_immutable(node, field):
    before, key = repr(node), hash(node)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(node, field, x1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.extra = 1  # no new attributes either
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(node, field)
    assert repr(node) == before and hash(node) == key


def test_terms_objectives_samplers_and_interpolants_are_immutable():
    term = Term("lsd", lsd_loss(), UpperTriangle(s, t), 1.0)
    objective = Objective("lsd", [term])
    for obj, field in ((term, "share"), (objective, "sigma"), (objective, "terms"), (UpperTriangle(s, t), "s"),
                       (Uniform(t), "low"), (linear(), "alpha")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, 0.5)
    assert isinstance(objective.terms, tuple)  # a list given is frozen into a tuple
    assert UpperTriangle(s, t) == UpperTriangle(s, t) and linear() == linear() and linear() != trig()


# -- printing -------------------------------------------------------------------------------------------
def test_lsd_prints_as_the_paper_writes_it():
    text = repr(lsd_loss())
    assert "∂_t[X(s, t, x)]" in text and "sg(" in text and "[x := I(s)]" in text
    assert text == "|∂_t[X(s, t, x)] - sg(V(t, t, sg(X(s, t, x))))|²[x := I(s)]"
    assert str(lsd_loss()) == text


@pytest.mark.parametrize("expr, text", [
    (esd_loss(), "|∂_s[X(s, t, x)] + sg(∇_x[X(s, t, x)]·V(s, s, x))|²[x := I(s)]"),
    (psd_loss(), "|V(s, t, x) - sg(gamma·V(s, u, x) + (1 - gamma)·V(u, t, X(s, u, x)))|²[x := I(s)]"),
    (sqnorm(V(t, t, I(t)) - Dt(I(t))), "|V(t, t, I(t)) - ∂_t[I(t)]|²"),
    (dot(x0, x1), "⟨x0, x1⟩"),
    ((t - s) * V(s, t, x0), "(t - s)·V(s, t, x0)"),
    (Ds(Dt(X(s, t, x))).bind(x=I(s)), "∂_s[∂_t[X(s, t, x)]][x := I(s)]"),
    (learned_logvar(sqnorm(x0)), "exp(-w(s, t)) * |x0|² + w(s, t)"),
    (x0 * (x1 + x0), "x0 * (x1 + x0)"),
    (-V(s, t, x0), "-V(s, t, x0)"),
    (I(s + gamma * (t - s)), "I(s + gamma*(t - s))"),
], ids=["esd", "psd", "fm", "dot", "scale", "nested", "logvar", "parens", "neg", "I-of-expr"])
def test_printing(expr, text):
    assert repr(expr) == text


def test_error_messages_print_nodes_the_same_way():
    with pytest.raises(DeclarationError) as info:
        Term("lsd", sqnorm(Dt(X(s, t, x)) - sg(V(t, t, sg(X(s, t, x))))), UpperTriangle(s, t), 1.0)
    assert "|∂_t[X(s, t, x)] - sg(V(t, t, sg(X(s, t, x))))|²" in str(info.value)


def test_objective_prints_its_terms():
    text = str(flowcore.objective("lsd"))
    for part in ("lsd", "interpolant linear", "fm (share 0.75", "lsd (share 0.25", "s = min(U, U')",
                 "|∂_t[X(s, t, x)] - sg(V(t, t, sg(X(s, t, x))))|²[x := I(s)]"):
        assert part in text, part


def test_pretty_prints_a_whole_objective_as_flowcore_show_does(capsys):
    from flowcore.cli.objectives import cmd_show

    objective = flowcore.objective("lsd")
    text = flowcore.pretty(objective)
    assert text.splitlines()[0] == "lsd: Lagrangian self-distillation"
    assert all(flowcore.pretty(term) in text for term in objective.terms)
    assert flowcore.pretty(objective.terms[1]).endswith("\n    " + flowcore.pretty(lsd_loss()))
    cmd_show(type("Args", (), {"objective": "lsd"})())
    assert capsys.readouterr().out == text + "\n"
    with pytest.raises(TypeError, match="no printing rule for int"):
        flowcore.pretty(42)


# -- analysis, derivatives, with_options ----------------------------------------------------------------
def test_analysis_helpers():
    loss = psd_loss()
    assert free_vars(loss) == frozenset() and free_vars(loss.arg) == {"x"}
    assert symbols_used(loss) == {s, t, u, gamma}
    assert derivative_order(loss) == 0 and derivative_order(lsd_loss()) == 1
    assert derivative_order(Ds(Dt(X(s, t, x)))) == 2


@pytest.mark.parametrize("name, expected", [
    ("fm", ()),  # İ_t alone is analytic: no network derivative
    ("lsd", ("∂_t",)),
    ("esd", ("∂_s", "∇_x·")),
    ("psd_u", ()),
    ("psd_m", ()),
    ("meanflow", ("∂_s",)),
    ("consistency", ("∂_s", "∇_x·")),
])
def test_builtin_objective_derivatives(name, expected):
    assert flowcore.objective(name).derivatives == expected


def test_objective_derivatives_collect_every_term_in_order():
    second = Term("second", sqnorm(Ds(Dt(X(s, t, x))).bind(x=I(s))), UpperTriangle(s, t), 0.5)
    first = Term("first", esd_loss(), UpperTriangle(s, t), 0.5)
    assert second.derivatives == ("∂_s", "∂_t", "2nd order")
    assert Objective("o", [first, second]).derivatives == ("∂_s", "∇_x·", "∂_t", "2nd order")
    assert Objective("o", [second, first]).derivatives == ("∂_s", "∂_t", "2nd order", "∇_x·")


def test_with_options_copies_with_other_defaults():
    original = flowcore.objective("psd_u")
    changed = original.with_options(interpolant=trig(), sigma=0.5, reduction="term_mean")
    assert changed is not original
    assert changed.interpolant == trig() and changed.sigma == 0.5 and changed.reduction == "term_mean"
    assert changed.terms == original.terms and changed.name == original.name
    assert changed.description == original.description and changed.equation == original.equation
    # the original is untouched
    assert original.interpolant == linear() and original.sigma == 1.0 and original.reduction == "batch"
    assert original.with_options().terms == original.terms
    renamed = original.with_options(name="psd_u_trig")
    assert renamed.name == "psd_u_trig" and "psd_u_trig" in str(renamed)
    # the copy is validated like any declaration
    with pytest.raises(DeclarationError, match="unknown reduction"):
        original.with_options(reduction="sum")
    with pytest.raises(DeclarationError, match="σ must be positive"):
        original.with_options(sigma=0.0)
    with pytest.raises(DeclarationError, match="unknown objective option"):
        original.with_options(eta=0.5)


def test_objective_flags():
    assert flowcore.objective("lmd").needs_teacher and not flowcore.objective("lsd").needs_teacher
    weighted = Objective("w", [Term("w", learned_logvar(sqnorm(V(s, t, I(s)))), UpperTriangle(s, t), 1.0)])
    assert weighted.needs_weight_net and not flowcore.objective("lsd").needs_weight_net
    psd = Objective("psd", [Term("psd", psd_loss(), UpperTriangle(s, t) & between(u, s, t, gamma), 1.0)])
    assert psd.derivatives == ()
