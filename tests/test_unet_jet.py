"""The image UNet's pointwise jets on the CPU (csrc/unet_jet.h, csrc/unet_jet_cpu.cpp,
flowcore.nn.unet.pointwise): the ``flowcore::unet_*`` ops against the torch-op formulas in float64
(every output block; the backward ops against torch.autograd.grad of those formulas with random
cotangents on every block, for every input), the dead-tangent mode (``with_primal=False``) and the
dead helpers, float32 against float64, opcheck, the autograd Functions (gradcheck, gradgradcheck, the
FLOWCORE_UNET_FUSED=0 fallback, the fused path really taken) and the ops' argument errors; then the
same for the pixel norm's jet (§7: ``unet_pixel_norm_jet`` and its backward, PixelNormJet on the (B, C,
H, W) and attention layouts, pixel_norm_tangents) and for every MP weight's unit rows at once (§8:
``unet_unit_rows`` and its backward, UnitRows, NormalisedWeights on the tiny UNet of tests/unets.py).

Tolerances. float64: 1e-11, norm-wise per block of B rows, relative to the block or, where its
values cancel, to the natural size of its terms (`check_blocks`). Kernel and reference compute the
same function in another op order (~1e-16 per op over ~10 ops per element); the reference's own
``1 − σ(x)`` cancels for 5 ≲ x ≲ 37 (absolute error ≤ |x|·eps ≈ 4e-15 in a', a''), and the FiLM
weight gradients sum up to 700 pixel terms (random-walk rounding ≈ √S·eps relative to Σ|terms|).
Measured over 1500 draws of these strategies: ≤ 5e-15 for silu and the FiLM values, 9e-14 for g_y,
1.1e-12 for g_l (y0 ~ 1e3, S = 264). An indexing, block-splitting or formula bug is O(1). float32: see
`test_float32_is_float64_to_rounding`.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowcore.native import extension
from flowcore.nn.unet import pointwise as pw
from flowcore.nn.unet.layers import _NORM_FLOOR, CLIP, SILU_RMS, MPConv, unit_rows
from flowcore.nn.unet.normalised_weights import NormalisedWeights, UnitRows
from flowcore.nn.unet.pointwise import ClipJet, FilmSiluJet, SiluJet, clip_tangents, film_silu_tangents, silu_tangents

F64, F32 = torch.float64, torch.float32
GAIN = 1.0 / SILU_RMS
RTOL = 1e-11
KERNELS = pw.kernels_available("cpu", F64)
needs_kernels = pytest.mark.skipif(not KERNELS, reason="the extension's flowcore::unet_* kernels are unavailable "
                                                        "(it does not build here, or FLOWCORE_UNET_FUSED=0)")


def ops():
    return torch.ops.flowcore


# -- inputs and the torch-op references ---------------------------------------------------------------
def make(B, n, C, spatial, scale=1.0, seed=0, dtype=F64, lscale=1.0):
    """x0 / y0 (B, C, *spatial) at `scale`, tangents (n·B, C, *spatial), l0 (B, C), lt (n·B, C) and a
    cotangent stack ((1+n)·B, C, *spatial)."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=gen, dtype=F64)
    x0, t = scale * r(B, C, *spatial), r(n * B, C, *spatial)
    l0, lt = lscale * r(B, C), r(n * B, C)
    g = r((1 + n) * B, C, *spatial)
    return [a.to(dtype) for a in (x0, t, l0, lt, g)]


def silu_ref(x0, t):
    return pw.silu_jet_torch(torch.cat([x0, t]), x0.shape[0])


def film_ref(y0, l0, yt, lt):
    B = y0.shape[0]
    return pw.silu_jet_torch(pw.film_torch(torch.cat([y0, yt]), torch.cat([l0, lt]), B), B)


def clip_ref(x0, t, bound):
    """``[clamp(x0, ±bound); where(|x0| ≤ bound, t_j, 0)]`` and the mask (NaN: outside)."""
    inside = (x0 > -bound) & (x0 < bound)   # torch.clamp's derivative: 0 at ±bound
    tangents = torch.where(inside, t.unflatten(0, (-1, x0.shape[0])), t.new_zeros(())).flatten(0, 1)
    return torch.cat([torch.clamp(x0, -bound, bound), tangents]), inside


def grads_ref(fn, inputs, grad):
    """torch.autograd.grad of `fn`'s output w.r.t. every input, from the cotangent `grad`."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    got = torch.autograd.grad(fn(*leaves), leaves, grad, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, got)]


def rel(got, want, floor=1e-280):
    """Norm-wise relative error, against at least `floor`."""
    return (got.double() - want.double()).norm().item() / max(want.double().norm().item(), floor)


def check_blocks(got, want, B, tol, what, unit=1.0):
    """Every block of B rows (the primal and each tangent, or their cotangents) to `tol`, relative to
    the block or, where its values cancel below it, to `unit` per element: the natural size of the
    block's terms (1 for the pointwise outputs of unit-normal tangents and cotangents, whose factors
    a, a', a'' are O(1); the size of the summed terms times √S for the FiLM weight gradients). Near
    a''s zero (x ≈ −1.28) or a cancelling pixel sum both sides round at the size of the terms, not
    of the result."""
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype)
    for i, (a, b) in enumerate(zip(got.split(B), want.split(B))):
        err = rel(a, b, max(unit * math.sqrt(b.numel()), 1e-280))
        assert err <= tol, f"{what}: block {i} off by {err:.3g} (tolerance {tol:.1g})"


def film_unit(y0, yt):
    """The size of g_l's sums: √S pixel terms y·a'·g of size max(1, |y|)."""
    pixels = math.prod(y0.shape[2:])
    return math.sqrt(pixels) * max(1.0, y0.abs().max().item(), yt.abs().max().item() if yt.numel() else 0.0)


def stack_of(x0, t):
    return torch.cat([x0, t])


B_ = st.integers(1, 4)
N_ = st.integers(0, 3)
C_ = st.integers(1, 4)
# no pixel axis, 1-d sizes up to 700 (256-element blocks split: 256, 257, 513, …) and small 2-d images
SPATIAL = st.one_of(st.just(()), st.tuples(st.integers(1, 700)),
                    st.tuples(st.integers(1, 24), st.integers(1, 24)))
SCALES = st.sampled_from([1e-3, 1.0, 6.0, 40.0, 1e3])  # 40, 1e3: σ saturates (|x| up to ~4e3, e^(−|x|) = 0)
SEEDS = st.integers(0, 2**16)


# -- 1. the ops against the torch formulas (float64) ----------------------------------------------------
@needs_kernels
@settings(deadline=None, max_examples=25)
@given(B=B_, n=N_, C=C_, spatial=SPATIAL, scale=SCALES, seed=SEEDS)
@example(B=1, n=0, C=1, spatial=(), scale=1.0, seed=0)  # one element, no tangent
@example(B=1, n=1, C=1, spatial=(1,), scale=1e3, seed=1)  # a single saturated element
@example(B=2, n=3, C=1, spatial=(256,), scale=6.0, seed=2)  # exactly one 256-element block per row
@example(B=1, n=2, C=1, spatial=(257,), scale=1.0, seed=3)  # one past a block
@example(B=3, n=1, C=3, spatial=(19, 27), scale=1e3, seed=4)  # P = 4617, not a multiple of 256
def test_silu_jet_and_its_backward_equal_the_torch_formulas(B, n, C, spatial, scale, seed):
    x0, t, _, _, g = make(B, n, C, spatial, scale, seed)
    got = ops().unet_silu_jet(x0, t, GAIN, True)
    assert torch.isfinite(got).all(), "mp_silu's jet overflowed"
    check_blocks(got, silu_ref(x0, t), B, RTOL, "unet_silu_jet")
    got_g = ops().unet_silu_jet_bwd(x0, t, g, GAIN)
    assert torch.isfinite(got_g).all()
    check_blocks(got_g, torch.cat(grads_ref(silu_ref, (x0, t), g)), B, RTOL, "unet_silu_jet_bwd")


@needs_kernels
@settings(deadline=None, max_examples=25)
@given(B=B_, n=N_, C=C_, spatial=SPATIAL, scale=SCALES, lscale=st.sampled_from([0.1, 1.0, 3.0]), seed=SEEDS)
@example(B=1, n=0, C=1, spatial=(), scale=1.0, lscale=1.0, seed=0)  # y0 (B, C): one pixel, no tangent
@example(B=1, n=1, C=1, spatial=(1,), scale=1e3, lscale=1.0, seed=1)
@example(B=2, n=3, C=2, spatial=(256,), scale=6.0, lscale=1.0, seed=2)  # rows of exactly one block
@example(B=1, n=2, C=3, spatial=(513,), scale=1.0, lscale=3.0, seed=3)  # rows of three blocks, the last of 1
@example(B=4, n=1, C=2, spatial=(17, 19), scale=1e3, lscale=0.1, seed=4)  # S = 323
def test_film_silu_jet_and_its_backward_equal_the_torch_formulas(B, n, C, spatial, scale, lscale, seed):
    y0, yt, l0, lt, g = make(B, n, C, spatial, scale, seed, lscale=lscale)
    got = ops().unet_film_silu_jet(y0, l0, yt, lt, GAIN, True)
    assert torch.isfinite(got).all(), "the FiLM + mp_silu jet overflowed"
    check_blocks(got, film_ref(y0, l0, yt, lt), B, RTOL, "unet_film_silu_jet")
    g_y, g_l = ops().unet_film_silu_jet_bwd(y0, l0, yt, lt, g, GAIN)
    w_y0, w_l0, w_yt, w_lt = grads_ref(film_ref, (y0, l0, yt, lt), g)
    assert g_l.shape == ((1 + n) * B, C)
    check_blocks(g_y, torch.cat([w_y0, w_yt]), B, RTOL, "unet_film_silu_jet_bwd g_y")
    check_blocks(g_l, torch.cat([w_l0, w_lt]), B, RTOL, "unet_film_silu_jet_bwd g_l", film_unit(y0, yt))


@needs_kernels
@pytest.mark.parametrize("dtype", [F64, F32])
def test_saturated_inputs_stay_finite(dtype):
    """|x| where e^|x| overflows (float32 past 88, float64 past 709) and e^(−|x|) underflows to
    denormals or 0: σ and 1 − σ come from e^(−|x|), so every output is finite and equals the
    reference (mp_silu → 0 or gain·x, a' → 0 or gain, a'' → 0)."""
    big = torch.tensor([-1e4, -1e3, -745.0, -720.0, -100.0, -88.5, -40.0, 40.0, 88.5, 100.0, 720.0, 1e3, 1e4],
                       dtype=F64)
    x0 = big.reshape(1, 1, -1).to(dtype)
    t, g = torch.ones(2, 1, 13, dtype=dtype), torch.ones(3, 1, 13, dtype=dtype)
    l0, lt = torch.full((1, 1), 0.5, dtype=dtype), torch.ones(2, 1, dtype=dtype)
    got = [ops().unet_silu_jet(x0, t, GAIN, True), ops().unet_silu_jet_bwd(x0, t, g, GAIN),
           ops().unet_film_silu_jet(x0, l0, t, lt, GAIN, True), *ops().unet_film_silu_jet_bwd(x0, l0, t, lt, g, GAIN)]
    assert all(torch.isfinite(a).all() for a in got)
    d = [a.double() for a in (x0, t, l0, lt, g)]
    w_y0, w_l0, w_yt, w_lt = grads_ref(film_ref, (d[0], d[2], d[1], d[3]), d[4])
    want = [silu_ref(d[0], d[1]), torch.cat(grads_ref(silu_ref, (d[0], d[1]), d[4])), film_ref(d[0], d[2], d[1], d[3]),
            torch.cat([w_y0, w_yt]), torch.cat([w_l0, w_lt])]
    tol = RTOL if dtype == F64 else 32 * 2.0 ** -24
    for name, a, b in zip(("silu", "silu_bwd", "film", "film g_y", "film g_l"), got, want):
        check_blocks(a.double(), b, 1, tol, name, film_unit(d[0], d[1]) if name == "film g_l" else 1.0)


SPECIALS = [math.nan, math.inf, -math.inf]


def with_specials(x0, bound, seed, frac=0.3):
    """x0 with about `frac` of its elements replaced by NaN, ±inf, ±bound exactly, the next doubles
    past ±bound, and ±0."""
    gen = torch.Generator().manual_seed(seed + 1)
    specials = torch.tensor(SPECIALS + [bound, -bound, math.nextafter(bound, math.inf),
                                        math.nextafter(-bound, -math.inf), 0.0, -0.0], dtype=x0.dtype)
    pick = torch.rand(x0.shape, generator=gen, dtype=F64) < frac
    return torch.where(pick, specials[torch.randint(len(specials), x0.shape, generator=gen)], x0)


@needs_kernels
@settings(deadline=None, max_examples=25)
@given(B=B_, n=N_, C=C_, spatial=SPATIAL, scale=SCALES, bound=st.sampled_from([CLIP, 1.0, 0.0]), seed=SEEDS)
@example(B=1, n=1, C=1, spatial=(1,), scale=1e3, bound=CLIP, seed=0)
@example(B=2, n=3, C=1, spatial=(300,), scale=1e3, bound=CLIP, seed=1)  # found: ±256 exactly (see below)
def test_clip_jet_equals_clamp_and_where(B, n, C, spatial, scale, bound, seed):
    """clamp and the mask are exact (NaN stays NaN and is outside; ±inf clamp to ±bound, outside;
    ±bound exactly is outside: torch.clamp's derivative is 0 there): the op must equal torch bit for
    bit. Its backward is ClipJet's masked select (torch), checked against autograd of the formula on
    both paths."""
    x0, t, _, _, g = make(B, n, C, spatial, scale, seed)
    x0 = with_specials(x0, bound, seed)
    y, inside = ops().unet_clip_jet(x0, t, bound, True)
    want_y, want_inside = clip_ref(x0, t, bound)
    assert inside.dtype == torch.bool and torch.equal(inside, want_inside)
    torch.testing.assert_close(y, want_y, rtol=0, atol=0, equal_nan=True)
    if bound != CLIP:
        return
    # g_x = 1[|x| ≤ bound]·g_y on every block (the documented mask, pointwise.py): not autograd of
    # torch.clamp, whose derivative is 0 AT ±bound (see test_clip_passes_the_tangent_at_the_bound)
    want = torch.where(want_inside, g.unflatten(0, (-1, B)), g.new_zeros(())).flatten(0, 1)
    for fused in ("1", "0"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(pw.ENV_FUSED, fused)
            stack = stack_of(x0, t).requires_grad_()
            out = ClipJet.apply(stack, B)
            torch.testing.assert_close(out, want_y, rtol=0, atol=0, equal_nan=True)
            (got,) = torch.autograd.grad(out, stack, g)
            assert torch.equal(got, want), fused


def test_clip_matches_torch_at_the_bound(path):
    """At exactly ±256 the jet's mask is outside, as torch.clamp's JVP and gradient are 0 there (strict
    inequalities): the native UNet jvp equals torch.func.jvp of layers.clip_activations even there."""
    x0 = torch.tensor([[CLIP, -CLIP, math.nextafter(CLIP, math.inf), 0.0, math.nan]], dtype=F64)
    t = torch.ones(2, 5, dtype=F64)
    stack = stack_of(x0, t).requires_grad_()
    out = ClipJet.apply(stack, 1)
    inside = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0], dtype=F64)
    assert torch.equal(out[1:], torch.stack([inside, inside]))
    assert torch.equal(clip_tangents(x0, t), out[1:].detach())
    (grad,) = torch.autograd.grad(out, stack, torch.ones_like(out))
    assert torch.equal(grad, inside.expand(3, 5))
    # torch's own derivative of the clamp at these points
    finite = x0.nan_to_num(0.0)
    _, torch_dot = torch.func.jvp(lambda z: z.clamp(-CLIP, CLIP), (finite,), (torch.ones_like(finite),))
    assert torch.equal(torch_dot[0, :4], inside[:4])


@needs_kernels
@pytest.mark.parametrize("n", [1, 3])
def test_parallel_chunks_split_anywhere(n):
    """Several threads: at::parallel_for's chunks of the primal (silu, clip) or of (b, c) rows (FiLM)
    start and end off the 256-element blocks; the result must not depend on the split (elementwise
    and per-row math: bit for bit) and must still equal the reference."""
    x0, t, l0, lt, g = make(2, n, 50, (701,), 6.0, seed=n)  # P = 70100 > ATen's grain, R = 100 rows
    x0.view(-1)[::7] *= 100.0

    def run():
        return [ops().unet_silu_jet(x0, t, GAIN, True), ops().unet_silu_jet_bwd(x0, t, g, GAIN),
                ops().unet_film_silu_jet(x0, l0, t, lt, GAIN, True),
                *ops().unet_film_silu_jet_bwd(x0, l0, t, lt, g, GAIN), *ops().unet_clip_jet(x0, t, CLIP, True)]

    threads = torch.get_num_threads()
    one = run()
    try:
        torch.set_num_threads(3)
        three = run()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, three))
    check_blocks(three[0], silu_ref(x0, t), 2, RTOL, "silu")
    check_blocks(three[2], film_ref(x0, l0, t, lt), 2, RTOL, "film")
    w_y0, w_l0, w_yt, w_lt = grads_ref(film_ref, (x0, l0, t, lt), g)
    check_blocks(three[3], torch.cat([w_y0, w_yt]), 2, RTOL, "film g_y")
    check_blocks(three[4], torch.cat([w_l0, w_lt]), 2, RTOL, "film g_l", film_unit(x0, t))


# -- 2. dead tangents ------------------------------------------------------------------------------------
@settings(deadline=None, max_examples=10)
@given(B=B_, n=N_, C=C_, spatial=SPATIAL, scale=SCALES, seed=SEEDS)
@example(B=1, n=0, C=1, spatial=(1,), scale=1.0, seed=0)  # found: no tangent, an empty (0, …) block
@example(B=2, n=2, C=3, spatial=(257,), scale=1e3, seed=1)  # found: ±inf (NaN jets) belong to clip only
def test_dead_tangents_equal_the_live_stacks_tangent_blocks(B, n, C, spatial, scale, seed):
    """with_primal=False is the tangent blocks of with_primal=True, bit for bit (the same per-element
    code); the dead helpers equal the live Functions' tangent blocks on both paths (bit for bit: each
    path computes both the same way), and the fused helpers equal the torch ones."""
    x0, t, l0, lt, _ = make(B, n, C, spatial, scale, seed)
    xc = with_specials(x0, CLIP, seed)  # clip's mask: NaN, ±inf, ±256 exactly
    if KERNELS:
        live = ops().unet_silu_jet(x0, t, GAIN, True)
        assert torch.equal(ops().unet_silu_jet(x0, t, GAIN, False), live[B:])
        live = ops().unet_film_silu_jet(x0, l0, t, lt, GAIN, True)
        assert torch.equal(ops().unet_film_silu_jet(x0, l0, t, lt, GAIN, False), live[B:])
        live, inside = ops().unet_clip_jet(xc, t, CLIP, True)
        dead, dead_inside = ops().unet_clip_jet(xc, t, CLIP, False)
        assert torch.equal(dead, live[B:]) and torch.equal(dead_inside, inside) and dead.shape[0] == n * B
    helpers = {}
    for fused in (("1", "0") if KERNELS else ("0",)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(pw.ENV_FUSED, fused)
            got = [silu_tangents(x0, t), film_silu_tangents(x0, l0, t, lt), clip_tangents(xc, t)]
            live = [SiluJet.apply(stack_of(x0, t), B), FilmSiluJet.apply(stack_of(x0, t), stack_of(l0, lt), B),
                    ClipJet.apply(stack_of(xc, t), B)]
            for name, dead, full in zip(("silu", "film_silu", "clip"), got, live):
                assert torch.equal(dead, full[B:]), (name, fused)
            helpers[fused] = got
    if KERNELS:
        for name, a, b in zip(("silu", "film_silu", "clip"), helpers["1"], helpers["0"]):
            check_blocks(a, b, B, RTOL, f"{name}_tangents fused vs torch")


# -- 3. float32 ------------------------------------------------------------------------------------------
U32 = 2.0 ** -24  # float32 unit roundoff, 6e-8


@needs_kernels
@pytest.mark.parametrize("scale", [1.0, 6.0, 1e3])
def test_float32_is_float64_to_rounding(scale):
    """The float32 kernels against the float64 ones on the same (rounded) inputs. Per element: the
    polynomial exp (≲ 2u, Cephes), ~10 further roundings in σ, a', a'' and the products with the
    tangents, and FiLM's z = y·s rounded once, amplified by a's condition number (≲ 2 where the
    values are not negligible): ≲ 16u, so 32u ≈ 2e-6 (measured: ≤ 2u). The FiLM weight gradients g_l
    add a float sum over S pixels: rounding errors of the partial sums (≈ √k·τ for terms of size τ)
    random-walk to ≈ u·τ·S/√2, i.e. ≈ √S·u relative to the sum (≈ √S·τ): 32u + 4√S·u ≈ 1e-5 at
    S = 323 (measured: ≤ 16u). A float64-only bug, a wrong exp or a float32 overflow of the saturated
    σ (scale 1e3: |x| up to ~4e3) is O(1)."""
    B, n, C, spatial = 2, 3, 3, (17, 19)
    S = math.prod(spatial)
    inputs32 = [a.float() for a in make(B, n, C, spatial, scale, seed=11, lscale=0.5)]
    x0, t, l0, lt, g = inputs32
    d = [a.double() for a in inputs32]  # float64 from the same rounded inputs
    tol, tol_sum = 32 * U32, 32 * U32 + 4 * math.sqrt(S) * U32
    cases = [
        ("silu", ops().unet_silu_jet(x0, t, GAIN, True), ops().unet_silu_jet(d[0], d[1], GAIN, True), tol, 1.0),
        ("silu_bwd", ops().unet_silu_jet_bwd(x0, t, g, GAIN), ops().unet_silu_jet_bwd(d[0], d[1], d[4], GAIN), tol,
         1.0),
        ("film", ops().unet_film_silu_jet(x0, l0, t, lt, GAIN, True),
         ops().unet_film_silu_jet(d[0], d[2], d[1], d[3], GAIN, True), tol, 1.0),
        ("clip", ops().unet_clip_jet(x0, t, CLIP, True)[0], ops().unet_clip_jet(d[0], d[1], CLIP, True)[0], 0.0, 1.0),
    ]
    g32 = ops().unet_film_silu_jet_bwd(x0, l0, t, lt, g, GAIN)
    g64 = ops().unet_film_silu_jet_bwd(d[0], d[2], d[1], d[3], d[4], GAIN)
    cases += [("film_bwd g_y", g32[0], g64[0], tol, 1.0),
              ("film_bwd g_l", g32[1], g64[1], tol_sum, film_unit(d[0], d[1]))]
    for name, got, want, bound, unit in cases:
        assert got.dtype == F32 and torch.isfinite(got).all(), name
        check_blocks(got.double(), want, B, bound, name, unit)


# -- 4. opcheck ------------------------------------------------------------------------------------------
@needs_kernels
@pytest.mark.parametrize("n", [0, 2])
def test_opcheck_every_op(n):
    """Every opcheck test applies and runs: the schema (no hidden mutation or aliasing), the fake kernels
    (flowcore.native.ops) against the real ones, AOT dispatch with dynamic shapes, and the autograd
    registration (the ops have no autograd kernel by design, SiluJet / FilmSiluJet / ClipJet
    differentiate them: the check confirms that their outputs then do not silently require grad),
    also with inputs that require grad."""
    x0, t, l0, lt, g = make(2, n, 3, (5, 4), 2.0, seed=5)
    cases = [(ops().unet_silu_jet.default, (x0, t, GAIN, True)),
             (ops().unet_silu_jet.default, (x0, t, GAIN, False)),
             (ops().unet_silu_jet_bwd.default, (x0, t, g, GAIN)),
             (ops().unet_film_silu_jet.default, (x0, l0, t, lt, GAIN, True)),
             (ops().unet_film_silu_jet.default, (x0, l0, t, lt, GAIN, False)),
             (ops().unet_film_silu_jet_bwd.default, (x0, l0, t, lt, g, GAIN)),
             (ops().unet_clip_jet.default, (300 * x0, t, CLIP, True)),
             (ops().unet_clip_jet.default, (300 * x0, t, CLIP, False))]
    for op, args in cases:
        torch.library.opcheck(op, args)
        with_grad = tuple(a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(op, with_grad, test_utils="test_autograd_registration")


# -- 5. the autograd Functions ---------------------------------------------------------------------------
@pytest.fixture(params=["fused", "torch"])
def path(request, monkeypatch):
    """Both implementations of the Functions: the kernels (skipped where they do not load) and the
    torch-op fallback (FLOWCORE_UNET_FUSED=0)."""
    if request.param == "torch":
        monkeypatch.setenv(pw.ENV_FUSED, "0")
    elif not KERNELS:
        pytest.skip("the extension's flowcore::unet_* kernels are unavailable")
    return request.param


def leaves(B=2, n=2, C=2, spatial=(3,), scale=2.0, seed=0):
    x0, t, l0, lt, _ = make(B, n, C, spatial, scale, seed)
    return stack_of(x0, t).requires_grad_(), stack_of(l0, lt).requires_grad_()


def test_gradcheck_and_gradgradcheck(path):
    """gradcheck of all three Functions (first order: the fused backward ops); gradgradcheck of
    SiluJet and FilmSiluJet (their backward under create_graph recomputes in torch ops from the saved
    inputs). ClipJet away from the ±256 kink (finite differences straddling it are wrong)."""
    stack, lin = leaves()
    silu = lambda s: SiluJet.apply(s, 2)
    film = lambda y, lin: FilmSiluJet.apply(y, lin, 2)
    assert torch.autograd.gradcheck(silu, (stack,))
    assert torch.autograd.gradgradcheck(silu, (stack,))
    assert torch.autograd.gradcheck(film, (stack, lin))
    assert torch.autograd.gradgradcheck(film, (stack, lin))
    y_no_pixels = torch.randn(6, 2, dtype=F64).requires_grad_()  # y (B, C): no pixel axis
    assert torch.autograd.gradcheck(film, (y_no_pixels, lin))
    gen = torch.Generator().manual_seed(3)
    x = torch.empty(6, 2, 5, dtype=F64).uniform_(-250, 250, generator=gen)
    x[0, 0, :2] = torch.tensor([300.0, -400.0])  # outside: zero gradient on these
    assert torch.autograd.gradcheck(lambda s: ClipJet.apply(s, 2), (x.requires_grad_(),))


@settings(deadline=None, max_examples=8)
@given(B=st.integers(1, 3), n=N_, C=st.integers(1, 3), spatial=SPATIAL, scale=SCALES, seed=SEEDS)
@example(B=1, n=0, C=1, spatial=(), scale=1.0, seed=0)
@example(B=2, n=3, C=2, spatial=(300,), scale=1e3, seed=1)
def test_fused_functions_equal_the_fallback(B, n, C, spatial, scale, seed):
    """FLOWCORE_UNET_FUSED=0 gives the same values and gradients (random cotangents on every block)."""
    x0, t, l0, lt, g = make(B, n, C, spatial, scale, seed)
    results = {}
    for fused in (("1", "0") if KERNELS else ("0",)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(pw.ENV_FUSED, fused)
            stack, lin = stack_of(x0, t).requires_grad_(), stack_of(l0, lt).requires_grad_()
            silu = SiluJet.apply(stack, B)
            film = FilmSiluJet.apply(stack, lin, B)
            clip = ClipJet.apply(stack, B)
            grads = torch.autograd.grad((silu, film, clip), (stack, lin), (g, g.flip(0), g.roll(1, 0)))
            results[fused] = [silu, film, clip, *grads]
    if not KERNELS:
        pytest.skip("only the fallback is available")
    for name, a, b in zip(("silu", "film", "clip", "g_stack", "g_lin"), results["1"], results["0"]):
        check_blocks(a.detach(), b.detach(), B, RTOL, name)


def test_fallback_double_backward_from_a_fused_forward():
    """A fused forward, then a backward under create_graph (torch ops from the saved inputs) and a
    second backward: equal to double backward through the torch formulas."""
    if not KERNELS:
        pytest.skip("the extension's flowcore::unet_* kernels are unavailable")
    x0, t, l0, lt, g = make(2, 2, 3, (7,), 3.0, seed=9)
    stack, lin = stack_of(x0, t).requires_grad_(), stack_of(l0, lt).requires_grad_()
    for fn, ref, args in ((lambda s, _: SiluJet.apply(s, 2), lambda s, _: pw.silu_jet_torch(s, 2), (stack, lin)),
                          (lambda s, li: FilmSiluJet.apply(s, li, 2),
                           lambda s, li: pw.silu_jet_torch(pw.film_torch(s, li, 2), 2), (stack, lin))):
        out = []
        for f in (fn, ref):
            first = torch.autograd.grad(f(*args), args, g, create_graph=True, allow_unused=True)
            loss = sum((a * a).sum() for a in first if a is not None)
            out.append(torch.autograd.grad(loss, args, allow_unused=True))
        for a, b in zip(*out):
            assert (a is None) == (b is None) and (a is None or rel(a, b) <= RTOL)


def test_the_fused_path_is_taken_where_the_extension_builds(monkeypatch):
    monkeypatch.delenv(pw.ENV_FUSED, raising=False)
    try:
        extension.load_extension()
    except Exception as e:  # noqa: BLE001 - no compiler, no headers: the fallback's case
        pytest.skip(f"the extension does not build here: {type(e).__name__}: {e}")
    assert pw.kernels_available("cpu", F64) and pw.kernels_available("cpu", F32)
    assert not pw.kernels_available("cpu", torch.bfloat16)  # no bfloat16 CPU kernels: the torch path
    stack, lin = leaves()
    g = torch.randn_like(stack)

    def op_names():
        with torch.autograd.profiler.profile() as prof:
            torch.autograd.grad((SiluJet.apply(stack, 2), FilmSiluJet.apply(stack, lin, 2), ClipJet.apply(stack, 2)),
                                (stack, lin), (g, g, g))
            silu_tangents(stack[:2], stack[2:])
        return {e.name for e in prof.function_events}

    names = op_names()
    for op in ("unet_silu_jet", "unet_silu_jet_bwd", "unet_film_silu_jet", "unet_film_silu_jet_bwd",
               "unet_clip_jet"):
        assert f"flowcore::{op}" in names, op
    monkeypatch.setenv(pw.ENV_FUSED, "0")
    assert not pw.kernels_available("cpu", F64)
    assert not any(name.startswith("flowcore::unet_") for name in op_names())


def test_other_dtypes_take_the_torch_path():
    """bfloat16 on the CPU has no kernels: the Functions run the torch formulas, no error."""
    stack, lin = (a.detach().bfloat16().requires_grad_() for a in leaves())
    out = FilmSiluJet.apply(stack, lin, 2)
    assert out.dtype == torch.bfloat16
    want = film_ref(*(a.double() for a in (stack[:2], lin[:2], stack[2:], lin[2:])))
    assert rel(out.double(), want) < 2e-2
    out.sum().backward()
    assert stack.grad.dtype == torch.bfloat16 and lin.grad.dtype == torch.bfloat16


# -- 6. bad input ----------------------------------------------------------------------------------------
_X0, _T, _L0, _LT, _G = make(2, 2, 3, (4,), seed=1)
BAD = [  # (op name, call, message)
    ("unet_silu_jet", lambda o: o.unet_silu_jet(_X0, _T[:3], GAIN, True), "the tangents must be"),
    ("unet_silu_jet", lambda o: o.unet_silu_jet(_X0, _T[..., :3], GAIN, True), "the tangents must be"),
    ("unet_silu_jet", lambda o: o.unet_silu_jet(_X0, _T.float(), GAIN, True), "must have the primal's dtype"),
    ("unet_silu_jet", lambda o: o.unet_silu_jet(_X0[0, 0, 0], _T, GAIN, True), "the primal block must be"),
    ("unet_silu_jet", lambda o: o.unet_silu_jet(_X0.half(), _T.half(), GAIN, True), "float32 or float64"),
    ("unet_silu_jet_bwd", lambda o: o.unet_silu_jet_bwd(_X0, _T, _G[:4], GAIN), "grad must be the"),
    ("unet_silu_jet_bwd", lambda o: o.unet_silu_jet_bwd(_X0, _T, _G[..., :3], GAIN), "grad must be the"),
    ("unet_silu_jet_bwd", lambda o: o.unet_silu_jet_bwd(_X0, _T, _G.float(), GAIN), "grad must be the"),
    ("unet_silu_jet_bwd", lambda o: o.unet_silu_jet_bwd(_X0, _T[:, :2], _G, GAIN), "the tangents must be"),
    ("unet_film_silu_jet", lambda o: o.unet_film_silu_jet(_X0, _L0[:, :2], _T, _LT, GAIN, True), "l0 must be"),
    ("unet_film_silu_jet", lambda o: o.unet_film_silu_jet(_X0, _L0[:1], _T, _LT, GAIN, True), "l0 must be"),
    ("unet_film_silu_jet", lambda o: o.unet_film_silu_jet(_X0, _L0[..., None], _T, _LT, GAIN, True), "l0 must be"),
    ("unet_film_silu_jet", lambda o: o.unet_film_silu_jet(_X0, _L0, _T, _LT[:2], GAIN, True), "lt must be"),
    ("unet_film_silu_jet", lambda o: o.unet_film_silu_jet(_X0, _L0, _T[:3], _LT, GAIN, True), "the tangents must"),
    ("unet_film_silu_jet", lambda o: o.unet_film_silu_jet(_X0, _L0.float(), _T, _LT, GAIN, True), "y0's dtype"),
    ("unet_film_silu_jet", lambda o: o.unet_film_silu_jet(_X0, _L0, _T, _LT.float(), GAIN, True), "y0's dtype"),
    ("unet_film_silu_jet", lambda o: o.unet_film_silu_jet(_X0[:, 0, 0], _L0, _T[:, 0, 0], _LT, GAIN, True),
     r"y0 must be \(B, C"),
    ("unet_film_silu_jet_bwd", lambda o: o.unet_film_silu_jet_bwd(_X0, _L0, _T, _LT, _G[:2], GAIN), "grad must be"),
    ("unet_film_silu_jet_bwd", lambda o: o.unet_film_silu_jet_bwd(_X0, _L0, _T, _LT, _G.float(), GAIN),
     "grad must be"),
    ("unet_film_silu_jet_bwd", lambda o: o.unet_film_silu_jet_bwd(_X0, _L0[:1], _T, _LT, _G, GAIN), "l0 must be"),
    ("unet_film_silu_jet_bwd", lambda o: o.unet_film_silu_jet_bwd(_X0, _L0, _T, _LT[:, :1], _G, GAIN), "lt must be"),
    ("unet_clip_jet", lambda o: o.unet_clip_jet(_X0, _T[:3], CLIP, True), "the tangents must be"),
    ("unet_clip_jet", lambda o: o.unet_clip_jet(_X0, _T.float(), CLIP, False), "must have the primal's dtype"),
    ("unet_clip_jet", lambda o: o.unet_clip_jet(_X0.int(), _T.int(), CLIP, True), "float32 or float64"),
]


@needs_kernels
@pytest.mark.parametrize("op, call, message", BAD, ids=[f"{op}-{i}" for i, (op, _, _) in enumerate(BAD)])
def test_bad_input_raises_naming_the_op(op, call, message):
    # the op's own name right before the message: "flowcore::unet_silu_jet: …" is not "…_bwd: …"
    with pytest.raises(RuntimeError, match=rf"flowcore::{op}(: | \(CPU\): ).*{message}"):
        call(ops())


# -- 7. the pixel norm -----------------------------------------------------------------------------------
# flowcore::unet_pixel_norm_jet on (O, C, I) columns and its backward, against pixel_norm_torch (dim=1 of
# the same layout). Tolerance relative to the natural size of each block's terms (`pn_terms`): the
# kernel's own formula with every sum and product taken in absolute values, which bounds both sides'
# rounding. The tangents ẋ_j − y·ṙ_j cancel where ẋ_j ∥ x (C = 1: ẏ_j = ẋ_j·ε/(|x| + ε)², 1e-10 of its
# terms at |x| ~ 1e3), and so do the cotangents of the primal: there both sides agree to 2–5e-11 of the
# block's own norm (an O(1) bug would still be O(1) of the terms). Measured over 600 draws of these
# strategies: ≤ 2.6e-16 of the terms, forward and backward.
EPS = pw._PIXEL_EPS


def make_pn(O, n, C, I, scale=1.0, seed=0, dtype=F64):
    """x0 (O, C, I) at `scale` (per column: all its channels at the same scale, r ~ scale), tangents
    (n·O, C, I) and cotangents ((1+n)·O, C, I), unit normal."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=gen, dtype=F64)
    return [a.to(dtype) for a in (scale * r(O, C, I), r(n * O, C, I), r((1 + n) * O, C, I))]


def pn_ref(x0, t):
    return pw.pixel_norm_torch(torch.cat([x0, t]), x0.shape[0], 1)


def pn_terms(x0, t, g=None):
    """|terms| of the forward stack (g None) or of the backward's (g_x0; g_ẋj), per element, float64:
    y = x·inv, ẏ_j = ẋ_j·inv − y·ṙ_j·inv with |ṙ_j| ≤ Σ|x·ẋ_j|/(C·r); g_x = inv·g_0 + α·x −
    Σ_j (β_j·g_j + γ_j·ẋ_j), g_ẋj = inv·g_j − γ_j·x with α, β_j, γ_j from the abs sums (unet_jet.h)."""
    x0, t = x0.double(), t.double()
    O, C = x0.shape[:2]
    x, xa = x0, x0.abs()
    ta = t.abs().unflatten(0, (-1, O))
    r = x.square().mean(1, keepdim=True).sqrt()
    inv = 1 / (r + EPS)
    P = (xa * ta).sum(2, keepdim=True)  # Σ_c |x·ẋ_j|, (n, O, 1, I)
    if g is None:
        return torch.cat([xa * inv, (ta * inv + xa * inv * P / (C * r) * inv).flatten(0, 1)])
    ga = g.double().abs()
    g0, gt = ga[:O], ga[O:].unflatten(0, (-1, O))
    K = inv * inv / (C * r)
    Hx = (gt * xa).sum(2, keepdim=True)
    G, h1, cross = (g0 * xa).sum(1, keepdim=True), (gt * ta).sum((0, 2)).unsqueeze(1), (Hx * P).sum(0)
    alpha = (inv * inv * (G + h1) + K * (2 * inv + 1 / r) * cross) / (C * r)
    g_x = inv * g0 + alpha * xa + (K * P * gt + K * Hx * ta).sum(0)
    return torch.cat([g_x, (inv * gt + K * Hx * xa).flatten(0, 1)])


def check_terms(got, want, terms, B, tol, what):
    """Every block of B rows to `tol` relative to the norm of its terms (≥ its own norm)."""
    assert got.shape == want.shape == terms.shape and got.dtype == want.dtype, (what, got.shape, want.shape)
    for i, (a, b, s) in enumerate(zip(got.split(B), want.split(B), terms.split(B))):
        err = rel(a, b, max(s.double().norm().item(), 1e-280))
        assert err <= tol, f"{what}: block {i} off by {err:.3g} (tolerance {tol:.1g})"


PN_SCALES = st.sampled_from([1e-3, 1e-2, 1.0, 30.0, 1e3])  # 1e-3, 1e-2: r ~ 10–100 ε


@needs_kernels
@settings(deadline=None, max_examples=25)
@given(O=st.integers(1, 4), n=N_, C=st.integers(1, 8), I=st.integers(1, 300), scale=PN_SCALES, seed=SEEDS)
@example(O=1, n=0, C=1, I=1, scale=1.0, seed=0)  # one element, no tangent
@example(O=1, n=2, C=1, I=5, scale=1e3, seed=1)  # C = 1: the tangents cancel to ε/|x|² of their terms
@example(O=2, n=3, C=8, I=257, scale=1e-3, seed=2)  # ε is a tenth of r; one past 256 columns
@example(O=3, n=1, C=4, I=300, scale=1e-2, seed=3)
def test_pixel_norm_jet_and_its_backward_equal_the_torch_formula(O, n, C, I, scale, seed):
    x0, t, g = make_pn(O, n, C, I, scale, seed)
    got = ops().unet_pixel_norm_jet(x0, t, EPS, True)
    assert torch.isfinite(got).all()
    check_terms(got, pn_ref(x0, t), pn_terms(x0, t), O, RTOL, "unet_pixel_norm_jet")
    got_g = ops().unet_pixel_norm_jet_bwd(x0, t, g, EPS)
    assert torch.isfinite(got_g).all()
    check_terms(got_g, torch.cat(grads_ref(pn_ref, (x0, t), g)), pn_terms(x0, t, g), O, RTOL,
                "unet_pixel_norm_jet_bwd")


def pn_stack(layout, B=2, n=2, seed=0, scale=1.0):
    """A stack ((1+n)·B, …) and its normalised axis: dim=1 for (B, C, H, W) activations, dim=2 for
    attention's (B, heads, channels per head, 3, HW) q/k/v."""
    shape, dim = {"image": ((5, 3, 4), 1), "attention": ((2, 4, 3, 6), 2)}[layout]
    gen = torch.Generator().manual_seed(seed)
    stack = torch.randn((1 + n) * B, *shape, generator=gen, dtype=F64)
    stack[:B] *= scale
    return stack, dim, torch.randn(stack.shape, generator=gen, dtype=F64)


@pytest.mark.parametrize("layout", ["image", "attention"])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_pixel_norm_function_on_both_layouts_and_paths(layout, scale):
    """PixelNormJet on a (B, C, H, W) stack (dim=1) and an attention (B, heads, hc, 3, HW) one (dim=2):
    values and gradients (random cotangents) equal pixel_norm_torch along that axis, on the fused
    path and the FLOWCORE_UNET_FUSED=0 fallback; pixel_norm_tangents equals the live tangent blocks
    (bit for bit on each path), and the kernels' dead mode those of with_primal=True."""
    B = 2
    stack, dim, g = pn_stack(layout, B, seed=7, scale=scale)
    leaf = stack.clone().requires_grad_()
    want = pw.pixel_norm_torch(leaf, B, dim)
    (want_g,) = torch.autograd.grad(want, leaf, g)
    x0, t = stack[:B], stack[B:]
    cols = lambda a: pw._columns(a, dim)
    terms = pn_terms(cols(x0), cols(t)).view(stack.shape)
    g_terms = pn_terms(cols(x0), cols(t), cols(g)).view(stack.shape)
    results = {}
    for fused in (("1", "0") if KERNELS else ("0",)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(pw.ENV_FUSED, fused)
            leaf = stack.clone().requires_grad_()
            out = pw.PixelNormJet.apply(leaf, B, dim)
            (got_g,) = torch.autograd.grad(out, leaf, g)
            dead = pw.pixel_norm_tangents(x0, t, dim)
            assert out.shape == stack.shape and torch.equal(dead, out[B:].detach()), fused
            check_terms(out.detach(), want.detach(), terms, B, RTOL, f"PixelNormJet {layout} ({fused})")
            check_terms(got_g, want_g, g_terms, B, RTOL, f"PixelNormJet grad {layout} ({fused})")
            results[fused] = (out.detach(), got_g)
    if not KERNELS:
        pytest.skip("only the fallback is available")
    live = ops().unet_pixel_norm_jet(cols(x0), cols(t), EPS, True)
    assert torch.equal(ops().unet_pixel_norm_jet(cols(x0), cols(t), EPS, False), live[cols(x0).shape[0]:])
    assert torch.equal(live.view(stack.shape), results["1"][0])
    for what, a, b, s in zip(("values", "grads"), results["1"], results["0"], (terms, g_terms)):
        check_terms(a, b, s, B, RTOL, f"fused vs fallback {what}")


@needs_kernels
@settings(deadline=None, max_examples=10)
@given(O=st.integers(1, 3), n=N_, C=st.integers(1, 8), I=st.integers(1, 300), scale=PN_SCALES, seed=SEEDS)
@example(O=1, n=0, C=1, I=1, scale=1.0, seed=0)  # no tangent: an empty (0, C, I) result
@example(O=2, n=3, C=3, I=257, scale=1e3, seed=1)
def test_pixel_norm_dead_tangents_equal_the_live_ones(O, n, C, I, scale, seed):
    """with_primal=False is the tangent blocks of with_primal=True, bit for bit (the same column code)."""
    x0, t, _ = make_pn(O, n, C, I, scale, seed)
    live = ops().unet_pixel_norm_jet(x0, t, EPS, True)
    dead = ops().unet_pixel_norm_jet(x0, t, EPS, False)
    assert dead.shape == t.shape and torch.equal(dead, live[O:])


@needs_kernels
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_pixel_norm_float32_is_float64_to_rounding(scale):
    """The float32 kernels against the float64 ones on the same (rounded) inputs, relative to the
    terms (`pn_terms`). Each term carries ≲ (C + n + 12)·u: the sums over C (ss, Σx·ẋ_j, Σg·x, …:
    ≤ C·u relative to their abs sums), the n tangents summed into h1 and cross, and ~10 products,
    quotients and the sqrt; 23u at C = 8, n = 3, so 32u ≈ 2e-6 (measured over 150 draws of the
    float64 test's strategies: ≤ 1.8u). ε is rounded to float32 (relative 3e-8, below u). A
    float64-only bug or a float32 overflow of Σx² (scale 1e3: ~1e7, far from 3e38) is O(1)."""
    O, n, C, I = 3, 3, 8, 300
    inputs = [a.float() for a in make_pn(O, n, C, I, scale, seed=13)]
    x0, t, g = inputs
    d = [a.double() for a in inputs]
    cases = [("fwd", ops().unet_pixel_norm_jet(x0, t, EPS, True), ops().unet_pixel_norm_jet(d[0], d[1], EPS, True),
              pn_terms(*d[:2])),
             ("bwd", ops().unet_pixel_norm_jet_bwd(x0, t, g, EPS), ops().unet_pixel_norm_jet_bwd(*d, EPS),
              pn_terms(*d))]
    for name, got, want, terms in cases:
        assert got.dtype == F32 and torch.isfinite(got).all(), name
        check_terms(got.double(), want, terms, O, 32 * U32, name)


@needs_kernels
@pytest.mark.parametrize("n", [0, 2])
def test_pixel_norm_opcheck(n):
    """opcheck of both pixel-norm ops (schema, fake kernels, AOT dispatch, autograd registration)."""
    x0, t, g = make_pn(2, n, 3, 5, 2.0, seed=5)
    cases = [(ops().unet_pixel_norm_jet.default, (x0, t, EPS, True)),
             (ops().unet_pixel_norm_jet.default, (x0, t, EPS, False)),
             (ops().unet_pixel_norm_jet_bwd.default, (x0, t, g, EPS))]
    for op, args in cases:
        torch.library.opcheck(op, args)
        with_grad = tuple(a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(op, with_grad, test_utils="test_autograd_registration")


@pytest.mark.parametrize("layout", ["image", "attention"])
def test_pixel_norm_gradcheck_and_gradgradcheck(path, layout):
    """gradcheck of PixelNormJet (first order: the fused backward op) and gradgradcheck (the backward
    under create_graph recomputes in torch ops from the saved stack), at a scale where ε matters."""
    stack, dim, _ = pn_stack(layout, B=1, n=2, seed=3, scale=0.05)
    if layout == "attention":
        stack = stack[..., :2].contiguous()  # fewer finite differences
    fn = lambda s: pw.PixelNormJet.apply(s, 1, dim)
    assert torch.autograd.gradcheck(fn, (stack.requires_grad_(),))
    assert torch.autograd.gradgradcheck(fn, (stack,))


# -- 8. unit rows ----------------------------------------------------------------------------------------
def mixed_weights(seed=0):
    """Weights of mixed shapes: a linear (5, 7) first (the op's parallel grain, 32768/7 = 4681 rows,
    comes from the first weight), a conv (4, 3, 3, 3), one row (1, 9), 10000 rows of 2 (> the grain:
    three chunks on three threads), (3, 1) rows of norm exactly the floor, 0 and 0.5, and (4, 5) with a
    zero row, one of norm ~1e-14 (below the floor) and one at 1e3."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=gen, dtype=F64)
    at_floor = torch.tensor([[_NORM_FLOOR], [0.0], [0.5]], dtype=F64)
    low = r(4, 5)
    low[1] = 0.0
    low[2] *= 1e-14 / low[2].norm()
    low[3] *= 1e3
    return [r(5, 7), r(4, 3, 3, 3), r(1, 9), r(10000, 2), at_floor, low]


def ur_terms(w, g=None):
    """Per row, the norm of its terms: ‖w‖·s for the values, ‖g‖·s + ‖w‖·s·Σ|g·w|·s² for the gradients
    (s = 1/max(‖w‖, floor)); (rows,)."""
    rows = w.flatten(1).double()
    s = 1 / rows.norm(dim=1).clamp_min(_NORM_FLOOR)
    if g is None:
        return rows.norm(dim=1) * s
    grows = g.flatten(1).double()
    return grows.norm(dim=1) * s + rows.norm(dim=1) * s ** 3 * (grows * rows).abs().sum(1)


def check_rows(got, want, terms, tol, what):
    """Every row to `tol` relative to its terms (an exact zero where those are zero)."""
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape)
    err = (got.flatten(1).double() - want.flatten(1).double()).norm(dim=1) / terms.clamp_min(1e-280)
    assert err.max().item() <= tol, f"{what}: row {err.argmax().item()} off by {err.max().item():.3g}"


@needs_kernels
def test_unit_rows_equal_torch_per_weight():
    """unet_unit_rows / _bwd on a list of mixed weights against unit_rows (layers.py) and its autograd
    gradient from random cotangents, row by row; rows at or below the floor follow torch's clamp_min
    (value w/floor, gradient g/floor: clamp_min's derivative is 0 at the floor itself, as the kernel's
    strict ‖w‖ > floor). The result does not depend on how the rows are split over threads."""
    weights = mixed_weights(1)
    gen = torch.Generator().manual_seed(2)
    grads = [torch.randn(w.shape, generator=gen, dtype=F64) for w in weights]

    def run():
        return ops().unet_unit_rows(weights, _NORM_FLOOR), ops().unet_unit_rows_bwd(weights, grads, _NORM_FLOOR)

    units, g_ws = run()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        units3, g_ws3 = run()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(units + g_ws, units3 + g_ws3))
    assert len(units) == len(g_ws) == len(weights)
    for k, (w, g, u, g_w) in enumerate(zip(weights, grads, units, g_ws)):
        (want_g,) = grads_ref(unit_rows, (w,), g)
        check_rows(u, unit_rows(w), ur_terms(w), RTOL, f"unet_unit_rows weight {k}")
        check_rows(g_w, want_g, ur_terms(w, g), RTOL, f"unet_unit_rows_bwd weight {k}")
    # the rows at and below the floor: w/floor and g/floor, as torch (to an ulp: the kernel multiplies
    # by 1/floor); the zero row stays zero
    at_floor, low, ulp = weights[4], weights[5], {"rtol": 2.0 ** -52, "atol": 0.0}
    torch.testing.assert_close(units[4][:2], at_floor[:2] / _NORM_FLOOR, **ulp)
    assert torch.equal(units[5][1], low[1]) and not units[5][1].any()
    torch.testing.assert_close(units[5][2], low[2] / _NORM_FLOOR, **ulp)
    torch.testing.assert_close(g_ws[4][:2], grads[4][:2] / _NORM_FLOOR, **ulp)
    torch.testing.assert_close(g_ws[5][1:3], grads[5][1:3] / _NORM_FLOOR, **ulp)


@needs_kernels
def test_unit_rows_float32_and_non_contiguous():
    """float32 weights against the float64 op on the same values (≤ (cols + 6)·u per row, so 32u at
    ≤ 27 columns); a transposed (non-contiguous) weight equals its contiguous copy."""
    weights = [w.float() for w in mixed_weights(3)[:3]]
    gen = torch.Generator().manual_seed(4)
    grads = [torch.randn(w.shape, generator=gen) for w in weights]
    got = ops().unet_unit_rows(weights, _NORM_FLOOR) + ops().unet_unit_rows_bwd(weights, grads, _NORM_FLOOR)
    d, dg = [w.double() for w in weights], [g.double() for g in grads]
    want = ops().unet_unit_rows(d, _NORM_FLOOR) + ops().unet_unit_rows_bwd(d, dg, _NORM_FLOOR)
    terms = [ur_terms(w) for w in d] + [ur_terms(w, g) for w, g in zip(d, dg)]
    for k, (a, b, s) in enumerate(zip(got, want, terms)):
        assert a.dtype == F32
        check_rows(a.double(), b, s, 32 * U32, f"float32 {k}")
    w = torch.randn(7, 5, generator=gen, dtype=F64).t()
    g = torch.randn(5, 7, generator=gen, dtype=F64)
    one = lambda w: ops().unet_unit_rows([w], _NORM_FLOOR)[0]
    assert torch.equal(one(w), one(w.contiguous()))
    assert torch.equal(ops().unet_unit_rows_bwd([w], [g.t().contiguous().t()], _NORM_FLOOR)[0],
                       ops().unet_unit_rows_bwd([w.contiguous()], [g], _NORM_FLOOR)[0])


@needs_kernels
def test_unit_rows_gradcheck_and_gradgradcheck():
    """UnitRows over three weights (first order: the fused backward; second: the torch ops of
    unit_rows under create_graph). No row near the floor, where the clamp has a kink."""
    gen = torch.Generator().manual_seed(5)
    shapes = ((3, 4), (2, 2, 3, 3), (1, 2))
    weights = [torch.randn(*shape, generator=gen, dtype=F64).requires_grad_() for shape in shapes]
    assert torch.autograd.gradcheck(UnitRows.apply, weights)
    assert torch.autograd.gradgradcheck(UnitRows.apply, weights)


def test_normalised_weights_equal_the_layers_effective_weights(monkeypatch):
    """NormalisedWeights for every MPConv of the shared tiny UNet equals MPConv.effective_weight, in
    values and gradients (random cotangents, through the weights and the learned out_gain), with gain
    1, a float and the out_gain tensor; in float64 and cast to float32. Where the kernels load, the
    one-op path is taken."""
    import unets

    monkeypatch.delenv(pw.ENV_FUSED, raising=False)
    net = unets.tiny_unet(seed=2)
    layers = [m for m in net.modules() if isinstance(m, MPConv)]
    assert len(layers) > 10
    gen = torch.Generator().manual_seed(6)
    gains = [1.0, 0.7, net.out_gain]
    cots = [[torch.randn(m.weight.shape, generator=gen, dtype=F64) for _ in gains] for m in layers]
    params = [m.weight for m in layers] + [net.out_gain]

    def run(get):
        ws = [[get(m, F64, gain) for gain in gains] for m in layers]
        loss = sum((w * c).sum() for row, crow in zip(ws, cots) for w, c in zip(row, crow))
        return ws, torch.autograd.grad(loss, params), [get(m, F32, 0.7) for m in layers]

    nw = NormalisedWeights(net)
    assert (nw._units is not None) == KERNELS
    got, got_g, got32 = run(nw)
    want, want_g, want32 = run(lambda m, dtype, gain: m.effective_weight(dtype, gain))
    for m, row, wrow in zip(layers, got, want):
        for gain, a, b in zip(("1", "0.7", "out_gain"), row, wrow):
            check_rows(a.detach(), b.detach(), ur_terms(b.detach()), RTOL, f"{m} gain {gain}")
    for m, a, b in zip(layers, got32, want32):  # both round float64 values equal to ~1e-16: ≤ 1 ulp apart
        assert a.dtype == F32 and rel(a, b) <= 2 * U32, m
    terms = [sum(ur_terms(p, c) for c in crow) for p, crow in zip(params, cots)]
    for m, a, b, s in zip(layers, got_g, want_g, terms):
        check_rows(a, b, 2 * s, RTOL, f"grad {m}")  # 2: the gains, ≤ 1.5
    assert rel(got_g[-1], want_g[-1]) <= RTOL  # out_gain: Σ ⟨unit_rows(w_out), cot⟩


@needs_kernels
def test_unit_rows_opcheck():
    """opcheck of both ops with list inputs (with and without requires_grad)."""
    gen = torch.Generator().manual_seed(8)
    weights = [torch.randn(*shape, generator=gen, dtype=F64) for shape in ((3, 4), (2, 2, 3, 3), (1, 2))]
    grads = [torch.randn(w.shape, generator=gen, dtype=F64) for w in weights]
    cases = [(ops().unet_unit_rows.default, (weights, _NORM_FLOOR)),
             (ops().unet_unit_rows_bwd.default, (weights, grads, _NORM_FLOOR))]
    for op, args in cases:
        torch.library.opcheck(op, args)
        with_grad = tuple([a.detach().clone().requires_grad_() for a in arg] if isinstance(arg, list) else arg
                          for arg in args)
        torch.library.opcheck(op, with_grad, test_utils="test_autograd_registration")


@needs_kernels
def test_the_fused_pixel_norm_and_unit_rows_are_taken(monkeypatch):
    """PixelNormJet (forward, backward, pixel_norm_tangents) and UnitRows run the ops where they load."""
    monkeypatch.delenv(pw.ENV_FUSED, raising=False)
    stack, dim, g = pn_stack("image")
    stack.requires_grad_()
    w = torch.randn(3, 4, dtype=F64, requires_grad=True)
    with torch.autograd.profiler.profile() as prof:
        torch.autograd.grad((pw.PixelNormJet.apply(stack, 2, dim), *UnitRows.apply(w)), (stack, w),
                            (g, torch.ones(3, 4, dtype=F64)))
        pw.pixel_norm_tangents(stack[:2].detach(), stack[2:].detach(), dim)
    names = {e.name for e in prof.function_events}
    for op in ("unet_pixel_norm_jet", "unet_pixel_norm_jet_bwd", "unet_unit_rows", "unet_unit_rows_bwd"):
        assert f"flowcore::{op}" in names, op


_PX0, _PT, _PG = make_pn(2, 2, 3, 4, seed=1)
_W = mixed_weights(0)[:3]
_WG = [torch.ones_like(w) for w in _W]
BAD_NEW = [  # (op name, call, message): the pixel norm's and the unit rows' ops
    ("unet_pixel_norm_jet", lambda o: o.unet_pixel_norm_jet(_PX0[0], _PT[0], EPS, True), r"must be \(O, C, I\)"),
    ("unet_pixel_norm_jet", lambda o: o.unet_pixel_norm_jet(_PX0, _PT[:3], EPS, True), "the tangents must be"),
    ("unet_pixel_norm_jet", lambda o: o.unet_pixel_norm_jet(_PX0, _PT.float(), EPS, False), "the primal's dtype"),
    ("unet_pixel_norm_jet", lambda o: o.unet_pixel_norm_jet(_PX0.half(), _PT.half(), EPS, True), "float32 or"),
    ("unet_pixel_norm_jet_bwd", lambda o: o.unet_pixel_norm_jet_bwd(_PX0, _PT, _PG[:4], EPS), "grad must be the"),
    ("unet_pixel_norm_jet_bwd", lambda o: o.unet_pixel_norm_jet_bwd(_PX0, _PT, _PG.float(), EPS), "grad must be"),
    ("unet_pixel_norm_jet_bwd", lambda o: o.unet_pixel_norm_jet_bwd(_PX0[..., None], _PT[..., None],
                                                                   _PG[..., None], EPS), r"must be \(O, C, I\)"),
    ("unet_unit_rows_bwd", lambda o: o.unet_unit_rows_bwd(_W, [_WG[1], *_WG[1:]], _NORM_FLOOR), "gradient 0 must be"),
    ("unet_unit_rows_bwd", lambda o: o.unet_unit_rows_bwd(_W, [_WG[0], _WG[1].float(), _WG[2]], _NORM_FLOOR),
     "gradient 1 must be"),
    ("unet_unit_rows_bwd", lambda o: o.unet_unit_rows_bwd(_W, [*_WG[:2], _WG[2].t()], _NORM_FLOOR),
     "gradient 2 must be"),
    ("unet_unit_rows_bwd", lambda o: o.unet_unit_rows_bwd(_W, _WG[:2], _NORM_FLOOR), "2 gradients for 3 weights"),
    ("unet_unit_rows", lambda o: o.unet_unit_rows([_W[0], _W[1].float()], _NORM_FLOOR), "must share a dtype"),
    ("unet_unit_rows", lambda o: o.unet_unit_rows([_W[0], _W[0][0, 0]], _NORM_FLOOR), "at least one row"),
    ("unet_unit_rows", lambda o: o.unet_unit_rows([_W[0][:0]], _NORM_FLOOR), "at least one row"),
    ("unet_unit_rows", lambda o: o.unet_unit_rows([_W[0].int()], _NORM_FLOOR), "float32 or float64"),
]


@needs_kernels
@pytest.mark.parametrize("op, call, message", BAD_NEW,
                         ids=[f"{op}-{i}" for i, (op, _, _) in enumerate(BAD_NEW)])
def test_pixel_norm_and_unit_rows_bad_input_raises_naming_the_op(op, call, message):
    # mismatched gradients (shape, dtype, count), mixed weight dtypes, rowless weights, non-(O, C, I) columns
    with pytest.raises(RuntimeError, match=rf"flowcore::{op}(: | \(CPU\): ).*{message}"):
        call(ops())
