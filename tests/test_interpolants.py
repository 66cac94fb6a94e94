"""Interpolants: boundary conditions at declaration, and what the reference makes of I(τ) and its derivative.

The expected values are computed independently of flowcore's numeric evaluator: α, β, γ (and their
sympy derivatives) are turned into numpy functions with `sympy.lambdify`.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowcore.lang import (DeclarationError, Dt, I, Interpolant, custom, linear, param, s, t, times, trig, u)
from flowcore.lang.interpolants import TAU
from flowcore.reference import Interpreter, Scope
from flowcore.testing.nets import SmoothVelocity

gamma = param("gamma")
r = sympy.Symbol("r", real=True)
E = sympy.E

INTERPOLANTS = {
    "linear": linear,
    "trig": trig,
    "squared": lambda: custom((1 - TAU) ** 2, TAU ** 2, name="squared"),
    "exp": lambda: custom(1 - TAU, (sympy.exp(TAU) - 1) / (E - 1), name="exp"),  # β(1) = 1 only after simplify
    "cos2": lambda: custom(sympy.cos(sympy.pi * TAU / 2) ** 2, sympy.sin(sympy.pi * TAU / 2) ** 2, name="cos2"),
    "other-var": lambda: custom(1 - r ** 3, r ** 3, var=r, name="other-var"),
    "stochastic": lambda: custom(1 - TAU, TAU, TAU * (1 - TAU), name="stochastic"),
    "stochastic-sin": lambda: custom(sympy.cos(sympy.pi * TAU / 2), sympy.sin(sympy.pi * TAU / 2),
                                     sympy.sin(sympy.pi * TAU) / 4, name="stochastic-sin"),
}


def numeric(interp: Interpolant, expr: sympy.Expr):
    return sympy.lambdify(interp.var, expr, "numpy")


def expected_I(interp: Interpolant, tau: torch.Tensor, a, b, noise, derivative: bool = False):
    """α(τ)x0 + β(τ)x1 (+ γ(τ)z), or its τ-derivative, with numpy."""
    total = 0
    for expr, source in ((interp.alpha, a), (interp.beta, b), (interp.gamma, noise)):
        if derivative:
            expr = sympy.diff(expr, interp.var)
        coef = np.broadcast_to(np.asarray(numeric(interp, expr)(tau.numpy()), dtype=np.float64), tau.shape)
        total = total + torch.from_numpy(coef.copy()).reshape(-1, *([1] * (a.ndim - 1))) * source
    return total


@pytest.mark.parametrize("name", sorted(INTERPOLANTS))
def test_boundary_conditions_hold(name):
    interp = INTERPOLANTS[name]()  # construction runs the checks
    assert [sympy.simplify(c) for c in interp.at(0)] == [1, 0, 0]
    assert [sympy.simplify(c) for c in interp.at(1)] == [0, 1, 0]
    assert interp.stochastic == name.startswith("stochastic")
    assert interp.name == name
    assert interp.alpha.free_symbols <= {interp.var} and interp.beta.free_symbols <= {interp.var}


def test_builtin_formulas():
    assert sympy.simplify(linear().alpha - (1 - TAU)) == 0 and linear().beta == TAU
    assert sympy.simplify(trig().alpha - sympy.cos(sympy.pi * TAU / 2)) == 0
    assert sympy.simplify(trig().beta - sympy.sin(sympy.pi * TAU / 2)) == 0
    assert not linear().stochastic and not trig().stochastic
    # `at` substitutes an expression of the times for τ
    assert linear().at(s + gamma * (t - s)) == (1 - s - gamma * (t - s), s + gamma * (t - s), 0)
    assert "α = 1 - tau" in str(linear()) and "γ" not in str(linear())
    assert "γ = " in str(INTERPOLANTS["stochastic"]())


@given(name=st.sampled_from(sorted(INTERPOLANTS)), seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 6),
       shape=st.sampled_from([(2,), (3,), (2, 3), (1, 2, 2)]))
def test_reference_I_is_alpha_x0_plus_beta_x1_plus_gamma_z(name, seed, batch, shape):
    interp = INTERPOLANTS[name]()
    gen = torch.Generator().manual_seed(seed)
    a, b, noise = (torch.randn((batch, *shape), generator=gen, dtype=torch.float64) for _ in range(3))
    tau = torch.rand(batch, generator=gen, dtype=torch.float64)
    tau[0] = 0.0 if seed % 2 else 1.0  # an end point in every example
    interpreter = Interpreter(SmoothVelocity(shape), a, b, interp, z=noise)
    got = interpreter.evaluate(I(t), Scope(times={t: tau}, vars={}))
    torch.testing.assert_close(got, expected_I(interp, tau, a, b, noise), rtol=1e-12, atol=1e-12)
    # the ends: noise at τ = 0, data at τ = 1
    end = b[0] if tau[0] == 1 else a[0]
    torch.testing.assert_close(got[0], end, rtol=1e-12, atol=1e-12)
    # İ_τ = α̇x0 + β̇x1 (+ γ̇z): the reference's jvp in τ against sympy's derivative
    velocity = interpreter.evaluate(Dt(I(t)), Scope(times={t: tau.clamp(0.01, 0.99)}, vars={}))
    torch.testing.assert_close(velocity, expected_I(interp, tau.clamp(0.01, 0.99), a, b, noise, derivative=True),
                               rtol=1e-10, atol=1e-10)


@given(name=st.sampled_from(["linear", "trig", "stochastic-sin"]), seed=st.integers(0, 2**31 - 1))
def test_reference_I_at_an_expression_of_the_times(name, seed):
    """I(s + γ(t − s)) is the interpolant at the per-sample value of u; its ∂_t is β̇(u)·γ·x1 + ..."""
    interp = INTERPOLANTS[name]()
    gen = torch.Generator().manual_seed(seed)
    a, b, noise = (torch.randn((5, 3), generator=gen, dtype=torch.float64) for _ in range(3))
    sv, tv, gv = (torch.rand(5, generator=gen, dtype=torch.float64) for _ in range(3))
    interpreter = Interpreter(SmoothVelocity((3,)), a, b, interp, z=noise)
    scope = Scope(times={s: sv, t: tv, gamma: gv}, vars={})
    uv = sv + gv * (tv - sv)
    got = interpreter.evaluate(I(s + gamma * (t - s)), scope)
    torch.testing.assert_close(got, expected_I(interp, uv, a, b, noise), rtol=1e-12, atol=1e-12)
    chain = interpreter.evaluate(Dt(I(s + gamma * (t - s))), scope)
    torch.testing.assert_close(chain, gv[:, None] * expected_I(interp, uv, a, b, noise, derivative=True),
                               rtol=1e-10, atol=1e-10)


def test_deterministic_interpolant_ignores_z():
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    tau = torch.rand(4, dtype=torch.float64)
    with_z = Interpreter(SmoothVelocity((3,)), a, b, linear(), z=torch.randn(4, 3, dtype=torch.float64))
    without = Interpreter(SmoothVelocity((3,)), a, b, linear())
    scope = Scope(times={t: tau}, vars={})
    assert torch.equal(with_z.evaluate(I(t), scope), without.evaluate(I(t), scope))


@pytest.mark.parametrize("alpha, beta, gamma_, var, stray", [
    (1 - t, t, 0, TAU, "t"),
    (1 - TAU, TAU + s * TAU * (1 - TAU), 0, TAU, "s"),
    (1 - sympy.Symbol("q"), sympy.Symbol("q"), 0, TAU, "q"),
    (1 - TAU, TAU, u * TAU * (1 - TAU), TAU, "u"),
    (1 - TAU, TAU, 0, r, "tau"),  # declared in r, written in tau
    (1 - r, r * (1 + gamma) - gamma * r, 0, r, "gamma"),
], ids=["a-time", "time-in-beta", "plain-symbol", "time-in-gamma", "wrong-var", "a-param"])
def test_expressions_of_another_symbol_are_rejected(alpha, beta, gamma_, var, stray):
    with pytest.raises(DeclarationError) as info:
        custom(alpha, beta, gamma_, var=var)
    assert f"['{stray}']" in info.value.reason
    assert f"depend on {var} only" in info.value.reason


def test_a_time_can_be_the_interpolants_own_variable():
    (tau,) = times("tau2")
    interp = custom(1 - tau, tau, var=tau)
    assert interp.at(s) == (1 - s, s, 0)
