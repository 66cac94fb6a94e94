"""flowcore.nn.attention_jvp (docs/math.md §4, attention JVP): o, ȯ and the gradients of all six
inputs against torch.func.jvp of plain math attention — on both paths (the extension's kernels and the
pure-torch fallback) — plus the dead-tangent and primal-only modes, torch.func.jvp through `attention`,
second order, vmap, opcheck of the ops, float32 against float64, what is saved, and bad input. The CUDA
kernels run here too, emulated on the host (csrc/attention_cuda_emulate.cc: each block's threads as
std::threads meeting at barriers), and for real where a GPU is visible.

Tolerances: float64 to 1e-10 relative (norm-wise): the same function in another op order, ~1e-16 per
op over sums of at most a few hundred terms, and exp of logits up to ~1e3 (relative error of exp(x) is
|x|·eps ≈ 1e-13). float32: see `test_float32_is_float64_to_rounding`.
"""
from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
import torch
from backends import needs_gpu
from emulators import build_emulator
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowcore.nn import attention_jvp as exported
from flowcore.nn.attention_jvp import attention, attention_jvp, attention_jvp_reference, kernels_available

F64 = torch.float64
RTOL = 1e-10


@pytest.fixture(params=["kernels", "torch"])
def path(request, monkeypatch):
    """Both implementations: the extension's kernels (skipped where they do not load) and the fallback."""
    if request.param == "torch":
        monkeypatch.setenv("FLOWCORE_ATTENTION_FUSED", "0")
    elif not kernels_available("cpu", F64):
        pytest.skip("the extension's attention kernels are unavailable")
    return request.param


def rel(got: torch.Tensor, want: torch.Tensor, floor: float = 1e-30) -> float:
    return (got - want).norm().item() / max(want.norm().item(), floor)


def math_attention(q, k, v):
    """Plain softmax attention, the independent reference (its JVP by torch.func.jvp)."""
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


def make(B, H, Nq, Nk, D, Dv, scale=1.0, seed=0, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(B, H, Nq, D), (B, H, Nk, D), (B, H, Nk, Dv)]
    primals = [scale * torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in shapes]
    tangents = [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in shapes]
    return primals, tangents


def check_against_math(primals, tangents, tol=RTOL):
    """attention_jvp's (o, ȯ) and the six gradients from random cotangents on both outputs."""
    leaves = [x.clone().requires_grad_() for x in primals + tangents]
    want_o, want_ot = torch.func.jvp(math_attention, tuple(leaves[:3]), tuple(leaves[3:]))
    got_o, got_ot = attention_jvp(*leaves)
    assert rel(got_o, want_o) < tol and rel(got_ot, want_ot) < tol, (rel(got_o, want_o), rel(got_ot, want_ot))
    gen = torch.Generator().manual_seed(1)
    cot = [torch.randn(x.shape, generator=gen, dtype=x.dtype) for x in (want_o, want_ot)]
    want = torch.autograd.grad((want_o, want_ot), leaves, cot)
    got = torch.autograd.grad((got_o, got_ot), leaves, cot)
    # A gradient may vanish exactly (N_k = 1: o does not depend on q; one-hot softmax) while its terms
    # do not: its rounding is relative to the size of the terms, bounded by the largest gradient.
    floor = max(w.norm().item() for w in want)
    for name, g, w in zip(("q", "k", "v", "q̇", "k̇", "v̇"), got, want):
        assert rel(g, w, floor) < tol, (name, rel(g, w, floor))


# -- values and gradients ---------------------------------------------------------------------------------
@settings(deadline=None)
@given(B=st.integers(1, 2), H=st.integers(1, 2), Nq=st.integers(1, 70), Nk=st.integers(1, 300),
       D=st.integers(1, 9), Dv=st.integers(1, 9), scale=st.sampled_from([0.01, 1.0, 8.0, 40.0]),
       seed=st.integers(0, 3))
@example(B=1, H=1, Nq=1, Nk=1, D=1, Dv=1, scale=1.0, seed=0)  # N = 1
@example(B=2, H=3, Nq=65, Nk=257, D=8, Dv=5, scale=1.0, seed=0)  # one past the CPU tiles (64 rows, 256 keys)
@example(B=1, H=2, Nq=17, Nk=17, D=4, Dv=4, scale=40.0, seed=1)  # past the CUDA tiles; logits ~1e3
def test_values_and_gradients_equal_math_attention(B, H, Nq, Nk, D, Dv, scale, seed):
    """N_k may differ from N_q; large inputs give logits up to ~5e3 (the online softmax must not overflow).
    Logits grow as scale², and so does the rounding of exp (|s|·eps relative) and of the near-one-hot
    softmax's cancellations (u − δ = g_ȯ·(v_j − o_i) with o_i ≈ v_j): the tolerance grows with it."""
    tol = RTOL * max(1.0, scale * scale / 10)
    for fused in ("1", "0"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FLOWCORE_ATTENTION_FUSED", fused)
            check_against_math(*make(B, H, Nq, Nk, D, Dv, scale, seed), tol=tol)


def test_huge_logits_stay_finite(path):
    primals, tangents = make(1, 1, 9, 12, 4, 4, scale=300.0)  # logits ~1e5: exp overflows without the max
    o, ot = attention_jvp(*primals, *tangents)
    assert torch.isfinite(o).all() and torch.isfinite(ot).all()
    check_against_math(primals, tangents, tol=1e-8)  # exp(x) of |x| ~ 1e5 is relative |x|·eps ≈ 2e-11 off


def test_none_tangents_are_zero_and_scale_is_used(path):
    (q, k, v), (dq, _, _) = make(2, 2, 5, 6, 3, 4)
    o, ot = attention_jvp(q, k, v, dq, scale=0.3)
    zero = torch.zeros_like(k)
    want_o, want_ot = attention_jvp_reference(q, k, v, dq, zero, torch.zeros_like(v), scale=0.3)
    assert rel(o, want_o) < RTOL and rel(ot, want_ot) < RTOL
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    o, ot = attention_jvp(*leaves)  # no tangent at all: the primal op
    assert ot.abs().max().item() == 0 and rel(o, math_attention(*leaves)) < RTOL
    g = torch.randn_like(o)
    want = torch.autograd.grad(math_attention(*leaves), leaves, g)
    assert all(rel(a, b) < RTOL for a, b in zip(torch.autograd.grad(o, leaves, g), want))


def test_gradcheck_and_gradgradcheck(path):
    primals, tangents = make(1, 2, 3, 4, 2, 3)
    leaves = [x.requires_grad_() for x in primals + tangents]
    assert torch.autograd.gradcheck(lambda *a: attention_jvp(*a), leaves, check_forward_ad=True,
                                    check_batched_grad=True)
    assert torch.autograd.gradgradcheck(lambda *a: attention_jvp(*a), leaves)
    assert torch.autograd.gradcheck(lambda *a: attention(*a), leaves[:3], check_forward_ad=True)
    assert torch.autograd.gradgradcheck(lambda *a: attention(*a), leaves[:3])


# -- modes ----------------------------------------------------------------------------------------------
def test_dead_tangent_mode_equals_the_full_one(path):
    primals, tangents = make(2, 2, 7, 9, 4, 3)
    leaves = [x.requires_grad_() for x in primals + tangents]
    o, ot = attention_jvp(*leaves)
    o_dead, ot_dead = attention_jvp(*leaves, tangent_grad=False)
    assert not ot_dead.requires_grad and ot_dead.grad_fn is None and o_dead.requires_grad
    assert rel(o_dead, o) < RTOL and rel(ot_dead, ot) < RTOL
    g = torch.randn_like(o)
    want = torch.autograd.grad(o, leaves[:3], g)
    got = torch.autograd.grad(o_dead, leaves[:3], g)
    assert all(rel(a, b) < RTOL for a, b in zip(got, want))


def test_dead_tangent_mode_under_func_transforms(path):
    """The dead-tangent call inside torch.func.jvp (a second-order objective) and vmap: o's JVP is
    the attention JVP, ȯ stays constant."""
    primals, tangents = make(2, 1, 6, 5, 3, 3)
    second = make(2, 1, 6, 5, 3, 3, seed=3)[0]
    o_dot = torch.func.jvp(lambda *a: attention_jvp(*a, *tangents, tangent_grad=False)[0], tuple(primals),
                           tuple(second))[1]
    assert rel(o_dot, attention_jvp_reference(*primals, *second)[1]) < RTOL
    batched = [torch.stack([x, -x]) for x in primals]
    got = torch.func.vmap(lambda *a: attention_jvp(*a, *tangents, tangent_grad=False)[1])(*batched)
    assert rel(got[1], attention_jvp_reference(*[-x for x in primals], *tangents)[1]) < RTOL


def test_primal_only_mode_equals_the_full_one(path):
    primals, _ = make(2, 3, 66, 70, 5, 6)
    leaves = [x.requires_grad_() for x in primals]
    o = attention(*leaves)
    assert rel(o, math_attention(*leaves)) < RTOL
    g = torch.randn_like(o)
    want = torch.autograd.grad(math_attention(*leaves), leaves, g)
    got = torch.autograd.grad(o, leaves, g)
    assert all(rel(a, b) < RTOL for a, b in zip(got, want))
    with torch.no_grad():
        assert rel(attention(*primals), o.detach()) < RTOL


def test_no_grad_calls_keep_no_graph(path):
    primals, tangents = make(1, 1, 4, 4, 2, 2)
    leaves = [x.requires_grad_() for x in primals + tangents]
    with torch.no_grad():
        o, ot = attention_jvp(*leaves)
    assert o.grad_fn is None and ot.grad_fn is None


def test_func_jvp_through_attention_is_attention_jvp_and_differentiable(path):
    """A module using `attention` under torch.func.jvp: ȯ equals attention_jvp's, and LSD-style
    training backpropagates through ȯ."""
    primals, tangents = make(2, 2, 10, 11, 4, 4)
    leaves = [x.requires_grad_() for x in primals + tangents]

    def module(q, k, v):
        return 2 * attention(torch.tanh(q), k, v)

    o, ot = torch.func.jvp(module, tuple(leaves[:3]), tuple(leaves[3:]))
    want_o, want_ot = torch.func.jvp(lambda q, k, v: 2 * math_attention(torch.tanh(q), k, v), tuple(leaves[:3]),
                                     tuple(leaves[3:]))
    assert rel(o, want_o) < RTOL and rel(ot, want_ot) < RTOL
    cot = [torch.randn_like(o), torch.randn_like(ot)]
    got = torch.autograd.grad((o, ot), leaves, cot)
    want = torch.autograd.grad((want_o, want_ot), leaves, cot)
    assert all(rel(a, b) < RTOL for a, b in zip(got, want))


def test_forward_mode_over_attention_jvp(path):
    """Second order in forward mode (e.g. d²/dt² objectives): jvp of attention_jvp."""
    primals, tangents = make(1, 2, 5, 6, 3, 3)
    second = make(1, 2, 5, 6, 3, 3, seed=7)
    args, dirs = tuple(primals + tangents), tuple(second[0] + second[1])
    got = torch.func.jvp(lambda *a: attention_jvp(*a), args, dirs)[1]
    want = torch.func.jvp(lambda *a: torch.func.jvp(math_attention, a[:3], a[3:]), args, dirs)[1]
    assert all(rel(a, b) < RTOL for a, b in zip(got, want))


def test_vmap_equals_a_loop(path):
    """torch.func.vmap over attention_jvp (the ops fold the vmapped dimension into B)."""
    primals, tangents = make(3, 2, 5, 6, 3, 4)
    batched = [torch.stack([x, 2 * x, -x]) for x in primals + tangents]
    got = torch.func.vmap(lambda *a: attention_jvp(*a))(*batched)
    for i in range(3):
        want = attention_jvp_reference(*[x[i] for x in batched])
        assert all(rel(g[i], w) < RTOL for g, w in zip(got, want))
    v_only = torch.func.vmap(lambda v: attention_jvp(*primals[:2], v, *tangents))(batched[2])
    assert rel(v_only[1][1], attention_jvp_reference(*primals[:2], batched[2][1], *tangents)[1]) < RTOL


def test_saves_no_score_matrix(path):
    """Backward state is O(N·D): nothing saved has N_q·N_k elements per (b, h)."""
    if path == "torch":
        pytest.skip("the fallback materialises the score matrix by design")
    Nq, Nk, D = 48, 40, 3
    primals, tangents = make(1, 1, Nq, Nk, D, D)
    leaves = [x.requires_grad_() for x in primals + tangents]
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        attention_jvp(*leaves)
        attention_jvp(*leaves, tangent_grad=False)
        attention(*leaves[:3])
    assert sizes and max(sizes) < Nq * Nk, sizes


# -- dtypes, ops, errors ----------------------------------------------------------------------------------
def test_float32_is_float64_to_rounding(path):
    """float32 against float64 from the same (rounded) inputs. Every output is a weighted sum of ≲ N_k
    terms of D-term dot products: rounding ~ eps·(log N_k + D) per term, eps = 6e-8, times the logit
    magnitude (≈ 3 here) for exp: ~ 1e-5 at most for N_k = 300, D = 16; 1e-4 keeps margin, an indexing
    or formula bug is O(1)."""
    primals, tangents = make(2, 2, 70, 300, 16, 8, scale=1.5)
    p32 = [x.float().requires_grad_() for x in primals + tangents]
    p64 = [x.detach().float().double().requires_grad_() for x in p32]
    out32, out64 = attention_jvp(*p32), attention_jvp(*p64)
    for a, b in zip(out32, out64):
        assert a.dtype == torch.float32 and rel(a.double(), b) < 1e-4
    cot = [torch.randn(x.shape, dtype=F64) for x in out64]
    g32 = torch.autograd.grad(out32, p32, [c.float() for c in cot])
    g64 = torch.autograd.grad(out64, p64, cot)
    for a, b in zip(g32, g64):
        assert rel(a.double(), b) < 1e-4


def test_other_dtypes_fall_back_to_the_reference():
    primals, tangents = make(1, 1, 3, 4, 2, 2, dtype=torch.bfloat16)
    o, ot = attention_jvp(*primals, *tangents)
    want = attention_jvp_reference(*primals, *tangents)
    assert o.dtype == torch.bfloat16 and rel(o.double(), want[0].double()) < 1e-2


def test_opcheck_every_op():
    if not kernels_available("cpu", F64):
        pytest.skip("the extension's attention kernels are unavailable")
    (q, k, v), (dq, dk, dv) = make(2, 2, 5, 7, 3, 4)
    ops = torch.ops.flowcore
    o, ot, lse, mu = ops.attention_jvp_fwd(q, k, v, dq, dk, dv, 0.5)
    go, got = torch.randn_like(o), torch.randn_like(ot)
    cases = [(ops.attention_jvp_fwd, (q, k, v, dq, dk, dv, 0.5)),
             (ops.attention_jvp_bwd, (q, k, v, dq, dk, dv, o, ot, lse, mu, go, got, 0.5)),
             (ops.attention_fwd, (q, k, v, 0.5)),
             (ops.attention_bwd, (q, k, v, o, lse, go, 0.5))]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


def test_primal_op_state_matches_the_jvp_op():
    if not kernels_available("cpu", F64):
        pytest.skip("the extension's attention kernels are unavailable")
    (q, k, v), (dq, dk, dv) = make(1, 3, 70, 260, 5, 6)
    o, _, lse, mu = torch.ops.flowcore.attention_jvp_fwd(q, k, v, dq, dk, dv, 0.4)
    o2, lse2 = torch.ops.flowcore.attention_fwd(q, k, v, 0.4)
    s = 0.4 * q @ k.transpose(-1, -2)
    ds = 0.4 * (dq @ k.transpose(-1, -2) + q @ dk.transpose(-1, -2))
    assert rel(lse, torch.logsumexp(s, -1)) < RTOL and rel(mu, (torch.softmax(s, -1) * ds).sum(-1)) < RTOL
    assert rel(o2, o) < RTOL and rel(lse2, lse) < RTOL


@pytest.mark.parametrize("bad, message", [
    (lambda q, k, v: (q[0], k, v), "4-d"),
    (lambda q, k, v: (q, k[:, :, :, :2], v), "shapes do not fit"),
    (lambda q, k, v: (q, k, v[:, :, :3]), "shapes do not fit"),
    (lambda q, k, v: (q.float(), k, v), "share dtype"),
    (lambda q, k, v: (q, k[:, :, :0], v[:, :, :0]), "zero keys"),
])
def test_bad_input_is_named(bad, message):
    (q, k, v), _ = make(1, 2, 4, 5, 3, 3)
    with pytest.raises(ValueError, match=message):
        attention_jvp(*bad(q, k, v))


def test_bad_tangent_is_named():
    (q, k, v), (dq, dk, dv) = make(1, 2, 4, 5, 3, 3)
    with pytest.raises(ValueError, match="tangent dk"):
        attention_jvp(q, k, v, dq, dk[:, :, :2], dv)


def test_exported_from_flowcore_nn():
    assert exported is attention_jvp


# -- the CUDA kernels emulated on the host (csrc/attention_cuda_emulate.cc) ------------------------------
@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """The CUDA kernels compiled for the host, each block's threads as std::threads (no GPU needed)."""
    return build_emulator(tmp_path_factory, "attention_cuda_emulate.cc")


def run_emulated(binary, dtype, primals, tangents, cotangents):
    (q, k, v), (BH, Nq, Nk, D, Dv) = primals, (primals[0].shape[0] * primals[0].shape[1], primals[0].shape[2],
                                               primals[1].shape[2], primals[0].shape[3], primals[2].shape[3])
    payload = np.array([BH, Nq, Nk, D, Dv], dtype=np.int64).tobytes() + b"".join(
        x.detach().double().contiguous().numpy().tobytes() for x in (*primals, *tangents, *cotangents))
    out = subprocess.run([str(binary), dtype], input=payload, capture_output=True, check=True).stdout
    values = torch.from_numpy(np.frombuffer(out, dtype=np.float64).copy())
    B, H = q.shape[:2]
    shapes = [(B, H, Nq, Dv)] * 2 + [(B, H, Nq)] * 2 + [q.shape, k.shape, v.shape] * 2 + [(B, H, Nq, Dv), (B, H, Nq),
                                                                                        q.shape, k.shape, v.shape]
    parts, at = [], 0
    for shape in shapes:
        n = math.prod(shape)
        parts.append(values[at:at + n].reshape(shape))
        at += n
    assert at == values.numel()
    return parts


@settings(deadline=None, max_examples=6)
@given(B=st.integers(1, 2), H=st.integers(1, 2), Nq=st.integers(1, 40), Nk=st.integers(1, 40), D=st.integers(1, 8),
       Dv=st.integers(1, 8))
def test_emulated_cuda_kernels_over_shapes(emulator, B, H, Nq, Nk, D, Dv):
    test_emulated_cuda_kernels_equal_math_attention(emulator, "f64", RTOL, (B, H, Nq, Nk, D, Dv))


@pytest.mark.parametrize("dtype, tol", [("f64", RTOL), ("f32", 1e-4)])
@pytest.mark.parametrize("shape", [(1, 2, 17, 19, 3, 5), (2, 1, 1, 1, 2, 1), (1, 1, 33, 40, 8, 8)])
def test_emulated_cuda_kernels_equal_math_attention(emulator, dtype, tol, shape):
    """The CUDA kernels' tiling (16-row blocks, 16-key tiles: N past both), barriers and atomics,
    run on the host: o, ȯ, lse, μ and the six gradients, and the primal-only kernels' o, lse, g."""
    primals, tangents = make(*shape)
    gen = torch.Generator().manual_seed(5)
    cot = [torch.randn(primals[0].shape[:3] + primals[2].shape[3:], generator=gen, dtype=F64) for _ in range(2)]
    if dtype == "f32":  # the same rounded inputs on both sides
        primals, tangents, cot = ([x.float().double() for x in xs] for xs in (primals, tangents, cot))
    o, ot, lse, mu, *grads = run_emulated(emulator, dtype, primals, tangents, cot)
    o2, lse2, *grads2 = grads[6:]
    leaves = [x.clone().requires_grad_() for x in primals + tangents]
    want = torch.func.jvp(math_attention, tuple(leaves[:3]), tuple(leaves[3:]))
    assert rel(o, want[0]) < tol and rel(ot, want[1]) < tol
    s = (primals[0] @ primals[1].transpose(-1, -2)) / math.sqrt(shape[4])
    s_dot = (tangents[0] @ primals[1].transpose(-1, -2) + primals[0] @ tangents[1].transpose(-1, -2)) / math.sqrt(
        shape[4])
    assert rel(lse, torch.logsumexp(s, -1)) < tol and rel(mu, (torch.softmax(s, -1) * s_dot).sum(-1), 1.0) < tol
    want_g = torch.autograd.grad(want, leaves, cot)
    floor = max(w.norm().item() for w in want_g)
    for name, g, w in zip(("q", "k", "v", "q̇", "k̇", "v̇"), grads[:6], want_g):
        assert rel(g, w, floor) < tol, (name, rel(g, w, floor))
    assert rel(o2, want[0]) < tol and rel(lse2, lse) < tol
    want_p = torch.autograd.grad(math_attention(*leaves[:3]), leaves[:3], cot[0])
    floor = max(w.norm().item() for w in want_p)
    assert all(rel(g, w, floor) < tol for g, w in zip(grads2, want_p))


# -- CUDA ---------------------------------------------------------------------------------------------------
CUDA_TOL = {F64: 1e-10, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 6e-2}


@needs_gpu
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 3, 1, 1, 8, 8), (2, 2, 17, 40, 64, 64), (1, 2, 100, 33, 32, 16)])
def test_cuda_kernels_equal_math_attention(dtype, shape):
    """The CUDA kernels (float accumulation) against float64 math on the same rounded inputs: the
    tolerance is a few units of the storage precision times the sums' growth."""
    if not kernels_available("cuda", dtype):
        pytest.skip("the extension was built without its CUDA part")
    primals, tangents = make(*shape, dtype=dtype)
    dev = [x.cuda().requires_grad_() for x in primals + tangents]
    ref = [x.double().requires_grad_() for x in primals + tangents]
    got = attention_jvp(*dev)
    want = torch.func.jvp(math_attention, tuple(ref[:3]), tuple(ref[3:]))
    tol = CUDA_TOL[dtype]
    for a, b in zip(got, want):
        assert a.dtype == dtype and rel(a.double().cpu(), b) < tol
    cot = [torch.randn(x.shape, dtype=F64) for x in want]
    g_got = torch.autograd.grad(got, dev, [c.to(dtype).cuda() for c in cot])
    g_want = torch.autograd.grad(want, ref, [c.to(dtype).double() for c in cot])
    for a, b in zip(g_got, g_want):
        assert rel(a.double().cpu(), b) < 2 * tol
    o = attention(*dev[:3])
    assert rel(o.double().cpu(), want[0]) < tol
    g = torch.autograd.grad(o, dev[:3], cot[0].to(dtype).cuda())
    g_ref = torch.autograd.grad(math_attention(*ref[:3]), ref[:3], cot[0].to(dtype).double())
    for a, b in zip(g, g_ref):
        assert rel(a.double().cpu(), b) < 2 * tol


@needs_gpu
def test_cuda_uses_the_current_stream_and_large_heads():
    if not kernels_available("cuda", torch.float32):
        pytest.skip("the extension was built without its CUDA part")
    primals, tangents = make(1, 1, 40, 50, 256, 256, dtype=torch.float32)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        dev = [x.cuda() for x in primals + tangents]
        o, ot = attention_jvp(*dev)
    stream.synchronize()
    want = torch.func.jvp(math_attention, tuple(x.double() for x in primals), tuple(x.double() for x in tangents))
    assert rel(o.double().cpu(), want[0]) < 1e-4 and rel(ot.double().cpu(), want[1]) < 1e-4
