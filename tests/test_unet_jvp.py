"""FlowMapUNet's native ``jvp`` / ``jvp_many`` (flowcore.nn.unet.jvp; docs/math.md §4, the image UNet)
against ``torch.func.jvp`` of the same module's ``forward``, in float64.

Values, and the gradients of random cotangents on the primal and on every live tangent w.r.t. every
parameter, x, s, t and the tangents themselves (LSD trains THROUGH the tangent); several tangents,
dead ones (no graph), zero ones (None), dropout with a seed (the same masks as the forward); each
nonlinear piece alone, through its hand-written backward or recomputation and through the plain
ops (gradcheck / gradgradcheck of the former); one convolution call per layer on the stack; bf16
autocast; and every built-in objective compiled (torch and cpu backends) with the native UNet
against the reference interpreter, which only calls ``forward``: the native path checked end to end.

Tolerance: flowcore.testing.FLOAT64_RTOL (1e-9) on norms. The two sides compute the same function
with other op orders and factorisations (the pixel norm's tangent as ``(ẋ − y·ṙ)/(r + ε)`` rather
than autograd's chain), a few thousand float64 ops at 1.1e-16 each with O(1) intermediates: the
observed error is ~1e-14, so the bound has five orders of margin and any formula slip (O(1)) fails.
"""
from __future__ import annotations

from unittest import mock

import pytest
import torch
from backends import available
from hypothesis import given, settings
from hypothesis import strategies as st

import flowcore as fc
from flowcore import objectives
from flowcore.nn import FlowMapUNet
from flowcore.nn.unet import jvp as jets
from flowcore.nn.unet import layers
from flowcore.nn.unet.embedding import PositionalEmbedding
from flowcore.nn.unet.pointwise import ClipJet, SiluJet
from flowcore.terms import draw_noise_and_times
from flowcore.testing import FLOAT64_RTOL, compare_with_reference, relative_error
import unets

F64 = torch.float64
RES = 8


def tiny_unet(seed: int = 0, dropout: float = 0.0, time_scale: float = 1000.0) -> FlowMapUNet:
    """The shared tiny UNet (tests/unets.py): two heads of 8 channels, every gain non-zero."""
    return unets.tiny_unet(seed, dropout=dropout, time_scale=time_scale)


def inputs(batch: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    s, t = torch.rand(batch, generator=gen, dtype=F64), torch.rand(batch, generator=gen, dtype=F64)
    return s, t, torch.randn(batch, 1, RES, RES, generator=gen, dtype=F64)


def tangent(batch: int, seed: int, zero: str = "") -> tuple:
    """``(ṡ, ṫ, ẋ)`` with the entries named in `zero` ("s", "t", "x") None."""
    gen = torch.Generator().manual_seed(1000 + seed)
    ds, dt = torch.randn(batch, generator=gen, dtype=F64), torch.randn(batch, generator=gen, dtype=F64)
    dx = torch.randn(batch, 1, RES, RES, generator=gen, dtype=F64)
    return tuple(None if name in zero else value for name, value in zip("stx", (ds, dt, dx)))


def leaves(net, s, t, x, tangents) -> list[torch.Tensor]:
    """Every parameter, then s, t, x and the given tangent tensors, all requiring grad."""
    tensors = [s, t, x] + [u for tg in tangents for u in tg if u is not None]
    for u in tensors:
        u.requires_grad_(True)
    return list(net.parameters()) + tensors


def reference(net, s, t, x, tangents, dropout_seed=None):
    """``(v, [v̇_j])`` by torch.func.jvp of the forward, one pass per tangent (None -> zeros)."""
    f = lambda a, b, c: net(a, b, c, dropout_seed=dropout_seed)  # noqa: E731
    v, dots = net(s, t, x, dropout_seed=dropout_seed), []
    for tg in tangents:
        full = tuple(torch.zeros_like(p) if u is None else u for u, p in zip(tg, (s, t, x)))
        dots.append(torch.func.jvp(f, (s, t, x), full)[1])
    return v, dots


def assert_native_equals_reference(net, batch: int, tangents: list, live=None, dropout_seed=None, seed: int = 0):
    s, t, x = inputs(batch, seed)
    wrt = leaves(net, s, t, x, tangents)
    live_flags = [True] * len(tangents) if live is None else live
    v, dots = net.jvp_many(s, t, x, tangents, live=live, dropout_seed=dropout_seed)
    v_ref, dots_ref = reference(net, s, t, x, tangents, dropout_seed)
    assert relative_error(v, v_ref) <= FLOAT64_RTOL
    assert len(dots) == len(tangents)
    for dot, dot_ref, keep in zip(dots, dots_ref, live_flags):
        assert dot.shape == x.shape
        assert relative_error(dot, dot_ref) <= FLOAT64_RTOL
        assert dot.requires_grad == keep   # a dead tangent is outside the graph

    gen = torch.Generator().manual_seed(seed + 7)
    cot = [torch.randn(v.shape, generator=gen, dtype=F64) for _ in range(1 + len(tangents))]
    loss = (cot[0] * v).sum() + sum((c * d).sum() for c, d, keep in zip(cot[1:], dots, live_flags) if keep)
    loss_ref = (cot[0] * v_ref).sum() + sum((c * d).sum() for c, d, keep in zip(cot[1:], dots_ref, live_flags)
                                            if keep)
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    grads_ref = torch.autograd.grad(loss_ref, wrt, allow_unused=True)
    for g, g_ref, leaf in zip(grads, grads_ref, wrt):
        g = torch.zeros_like(leaf) if g is None else g
        g_ref = torch.zeros_like(leaf) if g_ref is None else g_ref
        assert relative_error(g, g_ref) <= FLOAT64_RTOL, (tuple(leaf.shape), relative_error(g, g_ref))
    return v, dots


# -- the pieces, one at a time ------------------------------------------------------------------------
PE = PositionalEmbedding(6, scale=1000.0).to(F64)
# name: (jet version, plain version, input shapes, input scale); clip's inputs reach past ±256
PIECES = {
    "mp_silu": (jets.mp_silu, layers.mp_silu, [(2, 4, 3, 3)], 2.0),
    "pixel_norm": (jets.pixel_norm, layers.pixel_norm, [(2, 4, 3, 3)], 1.0),
    "pixel_norm_heads": (lambda j: jets.pixel_norm(j, dim=2), lambda z: layers.pixel_norm(z, dim=2),
                         [(2, 2, 4, 3, 5)], 1.0),
    "clip": (jets.clip_activations, layers.clip_activations, [(2, 4, 3, 3)], 300.0),
    "film": (jets.film, lambda y, lin: y * (lin + 1)[:, :, None, None], [(2, 4, 3, 3), (2, 4)], 1.0),
    "positional": (lambda tau: jets.positional(PE, tau), PE, [(2,)], 1.0),
}


@pytest.mark.parametrize("functions", [True, False], ids=["functions", "plain-ops"])
@pytest.mark.parametrize("name", sorted(PIECES))
def test_each_piece_equals_torch_func(name, functions):
    """Each nonlinear piece's jet (two live tangents, one dead) against torch.func.jvp of the layer,
    values and the gradients of the live outputs w.r.t. the primal and the tangents — through the
    hand-written backward of flowcore.nn.unet.pointwise and through the plain torch ops used
    under torch.func transforms."""
    if not functions:
        with mock.patch.object(jets, "plain_autograd", return_value=False):
            test_each_piece_equals_torch_func(name, True)
        return
    jet_fn, plain, shapes, scale = PIECES[name]
    gen = torch.Generator().manual_seed(len(name))

    def draw() -> list[torch.Tensor]:
        return [(scale * torch.randn(shape, generator=gen, dtype=F64)).requires_grad_() for shape in shapes]
    primal, live_tangents, dead = draw(), [draw(), draw()], draw()
    first, second = live_tangents
    stacked = [jets.Jet(torch.cat([p, a, b]), d, batch=shapes[0][0]) for p, a, b, d in zip(primal, first, second, dead)]
    out = jet_fn(*stacked)
    value, moving = out.live.split(shapes[0][0])[0], out.blocks("live")
    refs = [torch.func.jvp(plain, tuple(primal), tuple(tg)) for tg in [*live_tangents, dead]]
    if name == "clip":
        assert (primal[0].abs() > layers.CLIP).any() and (primal[0].abs() < layers.CLIP).any()
    assert relative_error(value, refs[0][0]) <= FLOAT64_RTOL
    for got, (_, want) in zip([*moving, out.dead], refs):
        assert relative_error(got, want) <= FLOAT64_RTOL
    assert not out.dead.requires_grad
    gen_c = torch.Generator().manual_seed(1)
    cots = [torch.randn(value.shape, generator=gen_c, dtype=F64) for _ in range(3)]
    wrt = primal + [u for tg in live_tangents for u in tg]
    loss = sum((c * o).sum() for c, o in zip(cots, [value, *moving]))
    loss_ref = (cots[0] * refs[0][0]).sum() + sum((c * r[1]).sum() for c, r in zip(cots[1:], refs[:2]))
    for g, g_ref in zip(torch.autograd.grad(loss, wrt), torch.autograd.grad(loss_ref, wrt)):
        assert relative_error(g, g_ref) <= FLOAT64_RTOL


@pytest.mark.parametrize("function", [SiluJet, ClipJet], ids=["silu", "clip"])
def test_pointwise_functions_pass_gradcheck_and_gradgradcheck(function):
    """The hand-written backward, and its own derivative (double backward), by finite differences.
    Clip's inputs avoid ±256 by more than gradcheck's step (its derivative jumps there)."""
    gen = torch.Generator().manual_seed(0)
    stack = torch.randn(3 * 2, 3, 2, generator=gen, dtype=F64)
    if function is ClipJet:
        stack = stack * 200 + 100 * stack.sign()
    stack.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: function.apply(z, 2), (stack,))
    assert torch.autograd.gradgradcheck(lambda z: function.apply(z, 2), (stack,))


def test_pixel_norm_recomputed_in_backward_passes_gradgradcheck():
    """The pixel norm's live stack is recomputed in the backward (activation checkpointing: only its
    input is kept); its gradient and double backward by finite differences."""
    gen = torch.Generator().manual_seed(1)
    stack = torch.randn(3 * 2, 4, 2, 2, generator=gen, dtype=F64).requires_grad_()
    dead = torch.randn(2, 4, 2, 2, generator=gen, dtype=F64)
    fn = lambda z: jets.pixel_norm(jets.Jet(z, dead, 2)).live  # noqa: E731
    assert torch.autograd.gradcheck(fn, (stack,))
    assert torch.autograd.gradgradcheck(fn, (stack,))


# -- values and gradients -------------------------------------------------------------------------------
def test_jvp_equals_torch_func_with_gradients_through_both_outputs():
    net = tiny_unet()
    s, t, x = inputs(3, 0)
    ds, dt, dx = tangent(3, 0)
    v, v_dot = net.jvp(s, t, x, ds, dt, dx)
    v_ref, (dot_ref,) = reference(net, s, t, x, [(ds, dt, dx)])
    assert relative_error(v, v_ref) <= FLOAT64_RTOL and relative_error(v_dot, dot_ref) <= FLOAT64_RTOL
    assert v_dot.norm() > 1e-3 * v.norm() > 0   # a real derivative, not zeros on both sides
    assert_native_equals_reference(net, 3, [tangent(3, 0)])


def test_several_tangents_share_one_primal():
    assert_native_equals_reference(tiny_unet(1), 2, [tangent(2, j) for j in range(3)], seed=1)


def test_dead_tangents_are_outside_the_graph():
    net = tiny_unet(2)
    assert_native_equals_reference(net, 2, [tangent(2, 0), tangent(2, 1), tangent(2, 2)],
                                   live=[False, True, False], seed=2)
    # only dead tangents: the primal still carries the graph, the tangent none
    v, (dot,) = assert_native_equals_reference(net, 2, [tangent(2, 3)], live=[False], seed=3)
    assert v.requires_grad and dot.grad_fn is None


def test_zero_tangents_given_as_none():
    tangents = [tangent(2, 0, zero="sx"), tangent(2, 1, zero="tx"), tangent(2, 2, zero="st"), (None, None, None)]
    _, dots = assert_native_equals_reference(tiny_unet(3), 2, tangents, seed=4)
    assert torch.equal(dots[3], torch.zeros_like(dots[3]))
    assert all(dot.norm() > 0 for dot in dots[:3])


def test_dropout_masks_are_the_forwards():
    net = tiny_unet(4, dropout=0.4)
    s, t, x = inputs(2, 5)
    with torch.no_grad():   # the seed does change the function, so equal values below mean equal masks
        assert relative_error(net(s, t, x, dropout_seed=11), net(s, t, x)) > 1e-2
    assert_native_equals_reference(net, 2, [tangent(2, 0), tangent(2, 1)], live=[True, False], dropout_seed=11,
                                   seed=5)
    assert_native_equals_reference(net, 2, [tangent(2, 2)], seed=5)   # no seed: no dropout


@settings(deadline=None)
@given(batch=st.integers(1, 3), flags=st.lists(st.booleans(), min_size=0, max_size=3),
       zeros=st.lists(st.sampled_from(["", "s", "t", "x", "st", "stx"]), min_size=3, max_size=3),
       seed=st.integers(0, 3), dropout_seed=st.sampled_from([None, 3]))
def test_jvp_many_equals_torch_func(batch, flags, zeros, seed, dropout_seed):
    net = tiny_unet(seed % 2, dropout=0.3)
    tangents = [tangent(batch, seed + j, zeros[j]) for j in range(len(flags))]
    assert_native_equals_reference(net, batch, tangents, live=flags, dropout_seed=dropout_seed, seed=seed)


def test_no_tangents_is_the_forward_and_no_grad_saves_no_graph():
    net = tiny_unet(5)
    s, t, x = inputs(2, 6)
    v, dots = net.jvp_many(s, t, x, [])
    assert dots == [] and torch.equal(v, net(s, t, x))
    with torch.no_grad():
        v, v_dot = net.jvp(s, t, x, *tangent(2, 0))
    assert not v.requires_grad and not v_dot.requires_grad
    _, (dot_ref,) = reference(net, s, t, x, [tangent(2, 0)])
    assert relative_error(v_dot, dot_ref) <= FLOAT64_RTOL


def test_every_convolution_runs_once_on_the_stack():
    """The stacking claim: primal and live tangents share each convolution call (as many conv2d calls
    as the forward, on (1 + k)·B rows); dead tangents add one call per convolution, no more."""
    net = tiny_unet(6)
    s, t, x = inputs(2, 7)
    conv2d = torch.nn.functional.conv2d
    with mock.patch("torch.nn.functional.conv2d", side_effect=conv2d) as spy:
        net(s, t, x)
        forward_calls = spy.call_count
        spy.reset_mock()
        net.jvp_many(s, t, x, [tangent(2, 0), tangent(2, 1)])
        assert spy.call_count == forward_calls
        assert {call.args[0].shape[0] for call in spy.call_args_list} == {3 * 2}
        spy.reset_mock()
        net.jvp_many(s, t, x, [tangent(2, 0), tangent(2, 1)], live=[True, False])
        assert spy.call_count == 2 * forward_calls


def test_bf16_autocast_runs_and_stays_near_float32():
    """The trainer's bf16 autocast wraps jvp too (flowcore.train.precision). bf16 keeps 8 mantissa bits
    (a rounding of 2⁻⁹ ≈ 2e-3 per op); through ~30 layers, each re-rounding an O(1) normalised
    activation, the errors add up like a random walk to a few 1e-2 (measured 1-3% over four seeds,
    and the same for torch.func.jvp under autocast): 8e-2 holds that with margin and still fails a
    wrong formula (O(1)).
    The paper's time scale 1 here: with 1000 the time tangent is amplified by ω ≤ 1000 and the
    rounding of the angles ωτ dominates whichever way the JVP is taken."""
    net = tiny_unet(7, dropout=0.2, time_scale=1.0).float()
    s, t, x = (u.float() for u in inputs(3, 8))
    ds, dt, dx = (u.float() for u in tangent(3, 8))
    want = net.jvp(s, t, x, ds, dt, dx, dropout_seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = net.jvp(s, t, x, ds, dt, dx, dropout_seed=5)
    assert got[0].dtype == torch.bfloat16
    for g, w in zip(got, want):
        assert relative_error(g.float(), w) <= 8e-2
    sum(g.float().sum() for g in got).backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in net.parameters())


def test_bad_tangents_are_named():
    net = tiny_unet()
    s, t, x = inputs(2, 0)
    with pytest.raises(ValueError, match=r"tangent dx \(tangent 1\) must be shaped like x"):
        net.jvp_many(s, t, x, [tangent(2, 0), (None, None, x[:1])])
    with pytest.raises(ValueError, match="tangent 0 must be a triple"):
        net.jvp_many(s, t, x, [(None, None)])
    with pytest.raises(ValueError, match=r"time tangents ds, dt of tangent 0"):
        net.jvp(s, t, x, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="2 live flags for 1 tangents"):
        net.jvp_many(s, t, x, [tangent(2, 0)], live=[True, False])


# -- compiled objectives through the native path ------------------------------------------------------
COMPILED = [b for b in available() if b.values[0] != "cuda"]
BATCH = 6   # with η = 0.75 every term of the built-ins gets samples
# built-ins whose terms only evaluate the net (flow matching, semigroup and shortcut residuals):
# their compiled calls are plain evaluations, jvp_many with no tangents
NO_NET_DERIVATIVE = {"fm", "psd_u", "psd_m", "pfmm", "shortcut"}


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("name", objectives.names())
def test_builtin_compiled_with_the_native_unet_matches_reference(name, backend):
    """The reference interpreter calls only ``forward`` (torch.func.jvp); the compiled objective's JVPs
    go through ``jvp_many`` / ``jvp`` — checked to be called with tangents wherever the objective
    differentiates the net — so equal losses and gradients check the native path end to end."""
    program = fc.compile(objectives.get(name), backend=backend)
    objective = program.objective
    net = tiny_unet(8)
    teacher = tiny_unet(9).requires_grad_(False) if objective.needs_teacher else None
    teacher_fn = None if teacher is None else (lambda a, x_: teacher(a, a, x_))
    gen = torch.Generator().manual_seed(3)
    x1 = torch.rand(BATCH, 1, RES, RES, generator=gen, dtype=F64) * 2 - 1
    drawn = draw_noise_and_times(objective, x1, gen)
    times = {term.name: term_times for term, term_times in zip(objective.terms, drawn.times)}
    tangents_pushed = []
    native = FlowMapUNet.jvp_many

    def counting(self, s, t, x, tangents, live=None, **options):
        if self is net:
            tangents_pushed.append(len(tangents))
        return native(self, s, t, x, tangents, live, **options)

    with mock.patch.object(FlowMapUNet, "jvp_many", counting):
        result = compare_with_reference(program, objective, net, x1, drawn.x0, times, teacher=teacher_fn, z=drawn.z)
    assert len(result.gradients) == len(list(net.parameters())) + 2
    assert result.worst <= FLOAT64_RTOL, result
    assert tangents_pushed, "the compiled objective never called the native path"
    differentiates = sum(tangents_pushed) > 0
    assert differentiates == (name not in NO_NET_DERIVATIVE), (name, tangents_pushed)
