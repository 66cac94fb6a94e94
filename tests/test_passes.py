"""Each compiler pass alone: expand, differentiate, bind_values, plan_calls, lower, backward."""
import sympy
import torch

import flowcore as fc
from flowcore import objectives
from flowcore.compiler.differentiate import Tangent, bind_values, derive, eliminate_derivatives
from flowcore.compiler.driver import PASSES, compile_program
from flowcore.compiler.expand import expand
from flowcore.compiler.ir import NET, Jet, Zero
from flowcore.compiler.kernel import REDUCE, backward
from flowcore.compiler.lower import leaf_symbol, lower_segment
from flowcore.compiler.plan import plan_calls
from flowcore.lang import nodes as n
from flowcore.lang.analysis import walk

s, t, u, x0, x1 = fc.s, fc.t, fc.u, fc.x0, fc.x1
x = fc.Var("x")


def jets(expr):
    return [node for node in walk(expr) if isinstance(node, Jet)]


def test_passes_are_named_in_order():
    assert [p.name for p in PASSES] == ["expand", "differentiate", "bind_values", "plan_calls", "lower_segments"]


def test_expand_interpolant_flow_map_and_renaming():
    e = expand(fc.X(s, t, fc.I(s)), fc.linear())
    assert e == n.add(fc.I(s) if False else n.add(n.scale(1 - s, x0), n.scale(s, x1)),
                      n.scale(t - s, Jet(NET, s, t, n.add(n.scale(1 - s, x0), n.scale(s, x1)), ())))
    trig = expand(fc.I(t), fc.trig())
    assert trig == n.add(n.scale(sympy.cos(sympy.pi * t / 2), x0), n.scale(sympy.sin(sympy.pi * t / 2), x1))
    # two bindings of the same name get different names: no capture when substituted later
    nested = fc.sqnorm(fc.V(s, t, x) + fc.sqnorm(fc.V(s, t, x)).bind(x=x1) * x).bind(x=x0)
    names = {node.name for node in walk(expand(nested, fc.linear())) if isinstance(node, n.Var)}
    assert len(names) == 2 and "x" not in names


def test_time_derivative_becomes_a_jvp_with_unit_time_speed():
    d = eliminate_derivatives(expand(fc.Dt(fc.V(s, t, x)), fc.linear()))
    assert d == Jet(NET, s, t, x, ((sympy.Integer(0), sympy.Integer(1), None),))


def test_flow_map_derivative_has_product_rule_and_coefficient_derivative():
    d = eliminate_derivatives(expand(fc.Ds(fc.X(s, t, x)), fc.linear()))
    primal, tangent = Jet(NET, s, t, x, ()), Jet(NET, s, t, x, ((sympy.Integer(1), sympy.Integer(0), None),))
    assert d == n.add(n.scale(-1, primal), n.scale(t - s, tangent))


def test_spatial_derivative_and_stop_gradient_commute():
    d = eliminate_derivatives(expand(fc.Dx(fc.sg(fc.V(s, t, x)), x, along=x1), fc.linear()))
    assert isinstance(d, n.StopGrad) and d.arg == Jet(NET, s, t, x, ((0, 0, x1),))


def test_nested_derivatives_give_second_order_jets():
    d = eliminate_derivatives(expand(fc.Ds(fc.Dt(fc.V(s, t, x))), fc.linear()))
    assert Jet(NET, s, t, x, ((1, 0, None), (0, 1, None))) in jets(d)
    assert max(j.order for j in jets(d)) == 2


def test_derivative_of_constants_is_a_structural_zero():
    assert eliminate_derivatives(fc.D(x0, s)) == Zero(n.TENSOR)
    assert derive(expand(fc.V(s, t, x0), fc.linear()), Tangent(vars={"x": x1})) is None


def test_total_derivative_of_a_binding_adds_the_chain_term():
    total = bind_values(eliminate_derivatives(expand(fc.Ds(fc.V(s, t, x).bind(x=fc.I(s))), fc.linear())))
    # ∂_s V + ∇V·İ_s is ONE jvp along (ṡ, ṫ, ẋ) = (1, 0, İ_s)
    velocity = n.add(n.scale(-1, x0), x1)
    assert [j.directions for j in jets(total)] == [((1, 0, velocity),)]
    partial = bind_values(eliminate_derivatives(expand(fc.Ds(fc.V(s, t, x)).bind(x=fc.I(s)), fc.linear())))
    assert [j.directions for j in jets(partial)] == [((1, 0, None),)]


def test_plan_merges_jvps_at_one_primal_and_runs_sg_calls_without_grad():
    compilation = compile_program(objectives.get("lsd"), trace=True)
    plan = compilation.trace["plan_calls"]
    lsd_calls = plan.terms[1].calls
    first = next(call for call in lsd_calls if call.level == 0)
    assert first.outputs == ((), (0,)) and first.grad  # X and ∂_t X: one call, primal + one tangent
    teacher = next(call for call in lsd_calls if call.level == 1)
    assert not teacher.grad  # v(t, t, sg(X)) sits inside sg
    assert plan.levels == 2


def test_plan_merges_jets_at_one_primal_across_levels_keeping_liveness_per_output():
    """ESD: ∂_s X̂ (live) and the sg'd ∇X̂·v̂ (which must wait for v̂) share one call at level 1."""
    plan = compile_program(objectives.get("esd"), trace=True).trace["plan_calls"]
    calls = plan.terms[1].calls
    flow = next(call for call in calls if len(call.outputs) == 3)
    assert flow.level == 1 and sorted(flow.live) == [False, True, True] and flow.grad
    assert len([call for call in calls if call.fn == "net"]) == 2  # the flow map's call and v̂(s, s)


def test_plan_splits_a_primal_whose_jet_needs_that_primal():
    """``∇v(x)·v(x)``: the direction is the primal's own output, so the two cannot share a call."""
    loss = fc.sqnorm(fc.Dx(fc.V(s, t, x), x, along=fc.V(s, t, x))).bind(x=fc.I(s))
    plan = plan_calls([bind_values(eliminate_derivatives(expand(loss, fc.linear())))])
    assert sorted(call.level for call in plan.terms[0].calls) == [0, 1]


def test_plan_deduplicates_identical_calls():
    loss = fc.sqnorm(fc.V(s, t, x0) + fc.V(s, t, x0)) + fc.dot(fc.V(s, t, x0), x1)
    plan = plan_calls([eliminate_derivatives(expand(loss, fc.linear()))])
    assert len(plan.terms[0].calls) == 1


def test_plan_batches_compatible_calls_across_terms():
    plan = compile_program(objectives.get("psd_m"), trace=True).trace["plan_calls"]
    batched = [batch for batch in plan.batches if len(batch) > 1]
    # fm's v(t, t, I_t) and PSD's student v(s, t, I_s): same level, no tangents, both with grad
    assert any({call.term for call in batch} == {0, 1} for batch in batched)
    assert all(len({call.signature for call in batch}) == 1 for batch in plan.batches)


def test_lower_turns_reductions_into_steps_and_sg_into_lets():
    loss = fc.adaptive(fc.sqnorm(fc.V(s, t, x0) - x1), c=0.5)
    leaves = {x1: leaf_symbol("x1"), fc.x0: leaf_symbol("x0")}
    body = eliminate_derivatives(expand(loss, fc.linear()))
    leaves[jets(body)[0]] = leaf_symbol("net0")
    kernel = lower_segment("k", [("loss", body)], leaves)
    assert [step.kind for step in kernel.steps] == [REDUCE]  # |r|² used inside and under sg: one reduction
    assert len(kernel.lets) == 1
    assert {sym.name for sym in kernel.element_inputs} == {"net0", "x1"}


def test_backward_kernel_equals_sympy_gradient_of_the_forward():
    a, b, w = (leaf_symbol(name) for name in ("a", "b", "w"))
    kernel = lower_segment("k", [("loss", fc.dot(x0, x1) * fc.exp(fc.sqnorm(x0) * 0.1))],
                           {x0: a, x1: b})
    grad = backward(kernel)
    assert [sym.name for sym, _ in grad.element_outputs] == ["grad_a", "grad_b"]
    assert [sym.name for sym in grad.sample_inputs] == ["g_loss"]
    # its values: the vector-Jacobian product of the forward, computed by torch autograd
    from flowcore.codegen.torch import build

    library = build("k", "0", [kernel, grad])
    gen = torch.Generator().manual_seed(0)
    A, Bv, g = (torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in ((3, 4), (3, 4), (3,)))
    A.requires_grad_(True)
    Bv.requires_grad_(True)
    (loss,) = library["k"](A, 3, 4, A, Bv)
    want = torch.autograd.grad(loss, (A, Bv), g)
    got = library[grad.name](A, 3, 4, A.detach(), Bv.detach(), g)
    # float64, a dozen operations: agreement to a few ulps
    assert all(torch.allclose(x, y, rtol=1e-13, atol=0) for x, y in zip(got, want))


def test_gradcheck_and_gradgradcheck_of_segment_ops():
    """Finite differences see through sg, so kernels with stop-gradient lets are left out here
    (their sg semantics are checked against the reference in test_compiled)."""
    from flowcore.runtime.segment_op import run_kernel

    checked = 0
    for objective in ("lsd", "esd_none", "meanflow"):
      program = fc.compile(objectives.get(objective))
      for name, compiled in program.kernels.items():
        kernel = compiled.kernel
        if kernel.lets:
            continue
        checked += 1
        B, N = 3, 2
        gen = torch.Generator().manual_seed(0)
        elem = [torch.randn(B, N, generator=gen, dtype=torch.float64, requires_grad=True) for _ in kernel.element_inputs]
        samp = [torch.rand(B, generator=gen, dtype=torch.float64, requires_grad=sym not in kernel.no_grad_inputs)
                for sym in kernel.sample_inputs]
        like = torch.empty(B, dtype=torch.float64)
        fn = lambda *inputs: run_kernel(compiled, like, B, N, list(inputs))  # noqa: E731
        inputs = tuple(elem + samp)
        assert torch.autograd.gradcheck(fn, inputs), name
        assert torch.autograd.gradgradcheck(fn, inputs), name
    assert checked >= 6


def test_torch_printer_keeps_powers_in_denominators_and_folds_numbers():
    """x/(t*t) once printed as x/t*t (= x); a numeric sqrt(2) as torch.sqrt(2), a TypeError."""
    from flowcore.codegen.torch.printer import torch_code

    xs, ts = sympy.symbols("x t", real=True)
    expr = xs / ts**2 + 3 * ts / (1 + ts) ** 2 + sympy.sqrt(2) * xs
    value = eval(torch_code(expr), {"torch": torch, "x": torch.tensor(2.0, dtype=torch.float64),
                                    "t": torch.tensor(3.0, dtype=torch.float64)})
    assert abs(value.item() - float(expr.subs({xs: 2, ts: 3}))) < 1e-14
