"""What derivatives, bindings, stop-gradients and weights MEAN, checked on the reference interpreter.

Every expected value is computed by hand, in float64, with torch.func.jvp on plain functions of the
network and, independently, with central finite differences. Finite-difference tolerances:
- first derivative, (f(τ+h) − f(τ−h)) / 2h with h = 1e-5: truncation h²/6·|f'''| ≈ 2e-11·|f'''| and
  rounding ≈ ε|f|/h ≈ 1e-16·|f|/1e-5 ≈ 1e-11·|f|; with |f|, |f'''| = O(10) here, atol 1e-7 leaves a
  ≥ 100× margin and is still 1e4× below the O(1e-3..1) effects the tests tell apart (partial vs total).
- second derivatives, mixed or pure central second differences with h = 5e-5: truncation
  ≈ h²/12·|f⁽⁴⁾| ≈ 2e-10·|f⁽⁴⁾| (|f⁽⁴⁾| reaches O(1e3) for these nets), rounding ≈ 4ε|f|/h² ≈
  2e-7·|f|; second derivatives reach O(50), so the bound is relative: rtol = atol = 1e-5 (the worst
  error seen over 400 draws was 4e-7 relative).
"""
from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from flowcore.lang import (D, Ds, Dt, Dx, I, Term, UpperTriangle, V, Var, X, adaptive, dot, fixed, learned_logvar,
                           linear, s, sg, sqnorm, t, trig, x0, x1)
from flowcore.reference import Interpreter, Scope, evaluate_term
from flowcore.testing.nets import SmoothLogVar, SmoothVelocity

x = Var("x")
SHAPES = [(3,), (2, 2), (1, 2, 3)]
H1, TOL1 = 1e-5, 1e-7  # first-derivative finite differences (see the module docstring)
H2, TOL2 = 5e-5, 1e-5  # second-derivative finite differences (relative and absolute)
EXACT = dict(rtol=1e-10, atol=1e-10)  # two exact computations of one quantity (jvp vs jvp): rounding only


# -- hand-written ground truth ------------------------------------------------------------------------
def alpha_beta(name: str, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "linear":
        return 1 - tau, tau
    return torch.cos(math.pi * tau / 2), torch.sin(math.pi * tau / 2)


INTERPOLANTS = {"linear": linear, "trig": trig}


class Case:
    """A batch, a network, per-sample times and hand-written versions of I and X."""

    def __init__(self, seed: int, interp: str = "linear", shape=(3,), batch: int = 4):
        gen = torch.Generator().manual_seed(seed)
        self.net = SmoothVelocity(shape, width=12, seed=seed)
        self.a = torch.randn((batch, *shape), generator=gen, dtype=torch.float64)  # x0
        self.b = torch.randn((batch, *shape), generator=gen, dtype=torch.float64)  # x1
        pair = torch.rand(2, batch, generator=gen, dtype=torch.float64)
        self.s, self.t = pair.min(0).values, pair.max(0).values
        self.name = interp
        self.interpolant = INTERPOLANTS[interp]()
        self.shape = shape
        self.c = torch.randn((batch, *shape), generator=gen, dtype=torch.float64)  # a fixed probe tensor

    def per_sample(self, v):
        return v.reshape(v.shape + (1,) * len(self.shape))

    def I(self, tau):  # noqa: E743
        alpha, beta = alpha_beta(self.name, tau)
        return self.per_sample(alpha) * self.a + self.per_sample(beta) * self.b

    def I_dot(self, tau):
        return torch.func.jvp(self.I, (tau,), (torch.ones_like(tau),))[1]

    def X(self, a, b, y, net=None):
        return y + self.per_sample(b - a) * (net or self.net)(a, b, y)

    def ones(self):
        return torch.ones_like(self.s)

    def reference(self, expr, net=None, **kwargs):
        interpreter = Interpreter(net or self.net, self.a, self.b, self.interpolant, **kwargs)
        return interpreter.evaluate(expr, Scope(times={s: self.s, t: self.t}, vars={}))


def jvp(f, at, direction=None):
    return torch.func.jvp(f, (at,), (torch.ones_like(at) if direction is None else direction,))[1]


def central(f, at, h=H1):
    return (f(at + h) - f(at - h)) / (2 * h)


cases = st.builds(Case, seed=st.integers(0, 2**31 - 1), interp=st.sampled_from(sorted(INTERPOLANTS)),
                  shape=st.sampled_from(SHAPES), batch=st.integers(1, 5))


# -- (a), (b), (c): partial vs total derivatives --------------------------------------------------------
@given(case=cases)
def test_binding_after_ds_is_the_partial_derivative(case):
    """``Ds(X(s,t,x))[x := I(s)]`` = ∂_s X_{s,t}(y) at y = I_s, with y held fixed."""
    got = case.reference(Ds(X(s, t, x)).bind(x=I(s)))
    y = case.I(case.s)  # I_s, a constant for the derivative
    partial = lambda v: case.X(v, case.t, y)  # noqa: E731
    torch.testing.assert_close(got, jvp(partial, case.s), **EXACT)
    torch.testing.assert_close(got, central(partial, case.s), rtol=0, atol=TOL1)
    # the same through a per-sample scalar: a dot with a fixed tensor
    scalar = case.reference(dot(Ds(X(s, t, x)), x1).bind(x=I(s)))
    torch.testing.assert_close(scalar, (got * case.b).flatten(1).sum(1), **EXACT)
    # and it is NOT the total derivative (it misses ∇X·İ_s, which is O(1) here)
    total = jvp(lambda v: case.X(v, case.t, case.I(v)), case.s)
    assert (total - got).abs().max() > 1e-3


@given(case=cases)
def test_ds_of_a_bound_interpolant_is_the_total_derivative(case):
    """``Ds(X(s,t,I(s)))`` = d/ds [X_{s,t}(I_s)], the chain through I_s included."""
    total = lambda v: case.X(v, case.t, case.I(v))  # noqa: E731
    expected = jvp(total, case.s)
    torch.testing.assert_close(case.reference(Ds(X(s, t, I(s)))), expected, **EXACT)
    torch.testing.assert_close(case.reference(Ds(X(s, t, I(s)))), central(total, case.s), rtol=0, atol=TOL1)
    # binding INSIDE the derivative is the same total derivative
    torch.testing.assert_close(case.reference(Ds(X(s, t, x).bind(x=I(s)))), expected, **EXACT)
    # and in t (I_s does not depend on t, so total = partial there)
    torch.testing.assert_close(case.reference(Dt(X(s, t, I(s)))), jvp(lambda v: case.X(case.s, v, case.I(case.s)),
                                                                       case.t), **EXACT)


@given(case=cases)
def test_total_minus_partial_is_the_chain_term(case):
    """d/ds X(s,t,I_s) − ∂_s X(s,t,x)|_{x=I_s} = ∇X_{s,t}(I_s)·İ_s."""
    total = case.reference(Ds(X(s, t, I(s))))
    partial = case.reference(Ds(X(s, t, x)).bind(x=I(s)))
    chain = case.reference(Dx(X(s, t, x), x, along=Ds(I(s))).bind(x=I(s)))
    y = case.I(case.s)
    expected = jvp(lambda w: case.X(case.s, case.t, w), y, case.I_dot(case.s))
    torch.testing.assert_close(chain, expected, **EXACT)
    torch.testing.assert_close(total - partial, chain, **EXACT)
    # the derivative of the interpolant itself: α̇x0 + β̇x1
    torch.testing.assert_close(case.reference(Ds(I(s))), case.I_dot(case.s), **EXACT)


# -- (d) stop-gradient ---------------------------------------------------------------------------------
def grads(value: torch.Tensor, inputs) -> list[torch.Tensor]:
    """d(sum value)/d inputs; zeros where the value does not depend on them at all."""
    inputs = list(inputs)
    if not value.requires_grad:
        return [torch.zeros_like(p) for p in inputs]
    found = torch.autograd.grad(value.sum(), inputs, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(inputs, found)]


@given(case=cases, tau=st.sampled_from([s, t]),
       which=st.sampled_from(["flow-map", "velocity-at-flow-map", "bound"]))
def test_derivative_of_sg_has_the_value_and_no_gradient(case, tau, which):
    e = {"flow-map": X(s, t, I(s)), "velocity-at-flow-map": V(t, t, X(s, t, I(s))),
         "bound": X(s, t, x).bind(x=I(s))}[which]
    case.a.requires_grad_(True)
    params = list(case.net.parameters()) + [case.a]
    plain = case.reference(dot(D(e, tau), x1))
    stopped = case.reference(dot(D(sg(e), tau), x1))
    outer = case.reference(dot(sg(D(e, tau)), x1))
    torch.testing.assert_close(stopped, plain, **EXACT)
    torch.testing.assert_close(outer, plain, **EXACT)
    for g in grads(stopped, params) + grads(outer, params):
        assert torch.count_nonzero(g) == 0
    # without sg the same quantity does carry gradient (so the check above can fail)
    assert any(torch.count_nonzero(g) > 0 for g in grads(plain, case.net.parameters()))
    assert torch.count_nonzero(grads(plain, [case.a])[0]) > 0


@given(case=cases)
def test_sg_inside_an_expression_blocks_only_its_part(case):
    """LSD's teacher ``sg(V(t, t, sg(X)))``: the gradient is that of ∂_t X alone."""
    loss = sqnorm(Dt(X(s, t, x)) - sg(V(t, t, sg(X(s, t, x))))).bind(x=I(s))
    got = case.reference(loss)
    y = case.I(case.s)
    dxdt = jvp(lambda v: case.X(case.s, v, y), case.t)
    with torch.no_grad():
        target = case.net(case.t, case.t, case.X(case.s, case.t, y))
    expected = (dxdt - target).square().flatten(1).sum(1)
    torch.testing.assert_close(got, expected, **EXACT)
    params = list(case.net.parameters())
    for g, h in zip(grads(got, params), grads(expected, params)):
        torch.testing.assert_close(g, h, **EXACT)


# -- (e) nested second derivatives -----------------------------------------------------------------------
@given(case=cases)
def test_nested_mixed_derivative_matches_nested_jvp_and_finite_differences(case):
    got = case.reference(Ds(Dt(X(s, t, x))).bind(x=I(s)))
    y = case.I(case.s)
    f = lambda a, b: case.X(a, b, y)  # noqa: E731
    dt = lambda a: jvp(lambda b: f(a, b), case.t)  # noqa: E731
    torch.testing.assert_close(got, jvp(dt, case.s), **EXACT)
    torch.testing.assert_close(got, central(dt, case.s), rtol=0, atol=TOL1)  # FD of an exact first derivative
    h = H2
    mixed = (f(case.s + h, case.t + h) - f(case.s + h, case.t - h) - f(case.s - h, case.t + h)
             + f(case.s - h, case.t - h)) / (4 * h * h)
    torch.testing.assert_close(got, mixed, rtol=TOL2, atol=TOL2)  # no jvp at all
    # mixed partials commute
    torch.testing.assert_close(case.reference(Dt(Ds(X(s, t, x))).bind(x=I(s))), got, **EXACT)


@given(case=cases)
def test_second_total_derivative_along_the_interpolant(case):
    """``Ds(Ds(V(s, t, I(s))))``: both derivatives see I_s (MeanFlow-style total derivative, twice)."""
    got = case.reference(Ds(Ds(V(s, t, I(s)))))
    f = lambda a: case.net(a, case.t, case.I(a))  # noqa: E731
    torch.testing.assert_close(got, jvp(lambda a: jvp(f, a), case.s), **EXACT)
    h = H2
    second = (f(case.s + h) - 2 * f(case.s) + f(case.s - h)) / (h * h)
    torch.testing.assert_close(got, second, rtol=TOL2, atol=TOL2)
    # the partial version differs: y := I(s) bound outside both derivatives
    partial = case.reference(Ds(Ds(V(s, t, x))).bind(x=I(s)))
    y = case.I(case.s)
    torch.testing.assert_close(partial, jvp(lambda a: jvp(lambda b: case.net(b, case.t, y), a), case.s), **EXACT)


# -- (f) spatial derivatives -----------------------------------------------------------------------------
@given(case=cases, along=st.sampled_from(["x1", "scaled", "velocity", "sg-velocity"]))
def test_dx_is_the_jvp_in_x(case, along):
    w = {"x1": x1, "scaled": (t - s) * x1, "velocity": V(s, s, x), "sg-velocity": sg(V(s, s, x))}[along]
    got = case.reference(Dx(X(s, t, x), x, along=w).bind(x=I(s)))
    y = case.I(case.s)
    direction = {"x1": case.b, "scaled": case.per_sample(case.t - case.s) * case.b,
                 "velocity": case.net(case.s, case.s, y), "sg-velocity": case.net(case.s, case.s, y)}[along]
    g = lambda v: case.X(case.s, case.t, v)  # noqa: E731
    torch.testing.assert_close(got, jvp(g, y, direction), **EXACT)
    fd = (g(y + H1 * direction) - g(y - H1 * direction)) / (2 * H1)
    torch.testing.assert_close(got, fd, rtol=0, atol=TOL1)


@given(case=cases)
def test_dx_of_a_scalar_and_linearity(case):
    got = case.reference(Dx(sqnorm(X(s, t, x)), x, along=x0).bind(x=I(s)))
    y = case.I(case.s)
    expected = jvp(lambda v: case.X(case.s, case.t, v).square().flatten(1).sum(1), y, case.a)
    torch.testing.assert_close(got, expected, **EXACT)
    one = case.reference(Dx(V(s, t, x), x, along=x0 + x1).bind(x=I(s)))
    two = case.reference(Dx(V(s, t, x), x, along=x0).bind(x=I(s)) + Dx(V(s, t, x), x, along=x1).bind(x=I(s)))
    torch.testing.assert_close(one, two, **EXACT)
    # ESD's residual: ∂_s X_{s,t}(y) + ∇X_{s,t}(y)·v̂_{s,s}(y) at y = I_s, as one expression
    esd = case.reference((Ds(X(s, t, x)) + Dx(X(s, t, x), x, along=V(s, s, x))).bind(x=I(s)))
    g = lambda v: case.X(case.s, case.t, v)  # noqa: E731
    expected = jvp(lambda a: case.X(a, case.t, y), case.s) + jvp(g, y, case.net(case.s, case.s, y))
    torch.testing.assert_close(esd, expected, **EXACT)


# -- (g) weights -------------------------------------------------------------------------------------------
def residual_loss(case: Case) -> tuple:
    """ℓ = |X_{s,t}(I_s) − x1|² in the language and by hand."""
    expr = sqnorm(X(s, t, I(s)) - x1)
    by_hand = (case.X(case.s, case.t, case.I(case.s)) - case.b).square().flatten(1).sum(1)
    return expr, by_hand


def evaluate(case, loss, **kwargs):
    term = Term("w", loss, UpperTriangle(s, t), 1.0)
    return evaluate_term(term, case.net, case.a, case.b, {s: case.s, t: case.t}, interpolant=case.interpolant,
                         **kwargs)


@given(case=cases)
def test_fixed_weight(case):
    expr, ell = residual_loss(case)
    got = evaluate(case, fixed(expr, (t - s) ** 2 + 1 / (1 + t)))
    torch.testing.assert_close(got, ((case.t - case.s) ** 2 + 1 / (1 + case.t)) * ell, **EXACT)


@given(case=cases, head_seed=st.integers(0, 1000))
def test_learned_logvar_weight(case, head_seed):
    head = SmoothLogVar(seed=head_seed)
    expr, ell = residual_loss(case)
    got = evaluate(case, learned_logvar(expr), weight_net=head)
    w = head(case.s, case.t)
    expected = torch.exp(-w) * ell + w
    torch.testing.assert_close(got, expected, **EXACT)
    params = list(case.net.parameters()) + list(head.parameters())
    for g, h in zip(grads(got, params), grads(expected, params)):
        torch.testing.assert_close(g, h, **EXACT)
    # the head's times can be other expressions of the times
    other = evaluate(case, learned_logvar(expr, t, t), weight_net=head)
    torch.testing.assert_close(other, torch.exp(-head(case.t, case.t)) * ell + head(case.t, case.t), **EXACT)


@given(case=cases, c=st.floats(1e-3, 10.0), p=st.sampled_from([0.5, 1.0, 2.0, 0.75]))
def test_adaptive_weight_value_and_gradient(case, c, p):
    expr, ell = residual_loss(case)
    got = evaluate(case, adaptive(expr, c=c, p=p))
    torch.testing.assert_close(got, ell / (ell + c) ** p, **EXACT)
    detached = ell / (ell.detach() + c) ** p
    params = list(case.net.parameters())
    for g, h in zip(grads(got, params), grads(detached, params)):
        torch.testing.assert_close(g, h, **EXACT)
    # it is not the gradient of ℓ/(ℓ+c)^p with the denominator live (unless that happens to agree)
    live = ell / (ell + c) ** p
    diff = max((g - h).abs().max() for g, h in zip(grads(got, params), grads(live, params)))
    assert diff > 0
