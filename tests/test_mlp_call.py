"""flowcore.nn.mlp_call: a whole stacked MLP call as one autograd node (csrc/mlp_net.cpp, with the
saving activation ops of csrc/mlp_saved.cpp), against its layer-by-layer twin `stacked_layers` in
torch ops (itself tested against plain autograd in test_mlp.py).

float64 throughout: the two compute the same function with the same GEMMs, the activations once by
flowcore's kernels and once by torch's ops (both to ~1e-16), in the same order, so values and
gradients agree to rounding over a few layers (1e-12 relative). Also the saving activation ops
against the torch ops (float32 too), gradcheck / gradgradcheck (the double backward recomputes
layer by layer), dead row blocks, a retained graph, peak memory, no-grad mode, argument errors,
which implementation `net_call` picks, the extension's OpenMP build and the kept-memory allocator.
"""
from __future__ import annotations

import itertools

import pytest
import torch
from backends import CUDA_STORAGE_TOL, needs_gpu, skip_without_cuda_kernels
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowcore.nn import FlowMapMLP, fused
from flowcore.nn.fused import act_bwd_torch, act_fwd_torch
from flowcore.nn.mlp_call import NetCall, net_call, stacked_layers

F64 = torch.float64
RTOL = 1e-12
ACTS = ["gelu", "silu", "tanh"]

pytestmark = pytest.mark.skipif(not fused.kernels_available("cpu", F64), reason="the fused kernels are not available")


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return (got - want).norm().item() / max(want.norm().item(), 1e-8)


def layers(sizes: list[int], seed: int, requires_grad: bool = True) -> tuple[list, list]:
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(n_out, n_in, generator=gen, dtype=F64) / n_in ** 0.5
               for n_in, n_out in itertools.pairwise(sizes)]
    biases = [torch.randn(n_out, generator=gen, dtype=F64) for n_out in sizes[1:]]
    return ([w.requires_grad_(requires_grad) for w in weights], [b.requires_grad_(requires_grad) for b in biases])


def backward_node(out: torch.Tensor) -> str:
    node = out.grad_fn
    while node is not None and type(node).__name__ != "NetCallBackward" and node.next_functions:
        node = node.next_functions[0][0]
    return type(node).__name__


@settings(max_examples=25)
@given(T=st.integers(1, 4), dead=st.integers(0, 2), B=st.integers(0, 6), F=st.integers(1, 5),
       widths=st.lists(st.integers(1, 20), min_size=0, max_size=3), out=st.integers(1, 3),
       activation=st.sampled_from(ACTS), scale=st.sampled_from([1.0, 0.58]), input_grad=st.booleans(),
       seed=st.integers(0, 2**16))
@example(T=1, dead=0, B=0, F=1, widths=[], out=1, activation="gelu", scale=1.0, input_grad=False, seed=0)  # empty batch
def test_the_op_equals_the_layer_by_layer_twin(T, dead, B, F, widths, out, activation, scale, input_grad, seed):
    live, T = T, T + dead
    weights, biases = layers([F, *widths, out], seed)
    gen = torch.Generator().manual_seed(seed + 1)
    h = (2 * torch.randn(T, B, F, generator=gen, dtype=F64)).requires_grad_(input_grad)
    got, got_dead = NetCall.apply(h, activation, scale, live, *weights, *biases)
    want, want_dead = stacked_layers(h, live, weights, biases, activation, scale, fused=False)
    assert got.shape == (live, B, out) and got_dead.shape == (T - live, B, out)
    assert rel(got, want) <= RTOL and (T == live or rel(got_dead, want_dead) <= RTOL)
    assert not got_dead.requires_grad
    r = torch.randn(got.shape, generator=gen, dtype=F64)
    params = [*weights, *biases] + ([h] if input_grad else [])
    grads = torch.autograd.grad((got * r).sum(), params)
    wanted = torch.autograd.grad((want * r).sum(), params)
    assert all(rel(g, w) <= RTOL for g, w in zip(grads, wanted))
    if input_grad and T > live:
        assert torch.equal(grads[-1][live:], torch.zeros_like(grads[-1][live:])), "dead blocks get no gradient"


@settings(max_examples=12)
@given(live=st.integers(1, 3), B=st.integers(0, 200), N=st.integers(1, 70), dtype=st.sampled_from([F64, torch.float32]),
       seed=st.integers(0, 2**16))
@example(live=2, B=129, N=3, dtype=torch.float32, seed=0)  # three 64-row slabs, the last one short
def test_in_place_backward_with_bias_equals_the_functional_op(live, B, N, dtype, seed):
    """mlp_act_bwd_saved_ writes mlp_act_bwd_saved's g_y over its `grad` and returns the bias
    gradient Σ_rows g_y0. The bias sum is in double, rounded once, in another order than
    torch's sum: within one rounding of the result plus the double sum's B·eps64·Σ|v|."""
    gen = torch.Generator().manual_seed(seed)
    y = (3 * torch.randn(live, B, N, generator=gen, dtype=F64)).to(dtype)
    _, saved = torch.ops.flowcore.mlp_act_fwd_save(y, torch.randn(N, generator=gen, dtype=F64).to(dtype), "gelu", live)
    g = torch.randn(live, B, N, generator=gen, dtype=F64).to(dtype)
    want_gy = torch.ops.flowcore.mlp_act_bwd_saved(saved, g)
    grad = g.clone()
    bias = torch.ops.flowcore.mlp_act_bwd_saved_(saved, grad)
    tol = 1e-15 if dtype == F64 else 1e-6  # the same products; only the compiler's FMA contraction may differ
    assert ((grad.double() - want_gy.double()).abs() <= tol * want_gy.double().abs().clamp_min(1)).all()
    primal = grad[0].double()
    want_bias = primal.sum(0)
    bound = torch.finfo(dtype).eps * want_bias.abs() + B * 2.3e-16 * primal.abs().sum(0)
    assert bias.dtype == dtype and bias.shape == (N,) and ((bias.double() - want_bias).abs() <= bound).all()


def test_in_place_backward_bias_does_not_depend_on_the_thread_count():
    gen = torch.Generator().manual_seed(3)
    y, g = torch.randn(2, 1000, 64, generator=gen), torch.randn(2, 1000, 64, generator=gen)
    _, saved = torch.ops.flowcore.mlp_act_fwd_save(y, torch.randn(64, generator=gen), "silu", 2)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            grad = g.clone()
            results.append((torch.ops.flowcore.mlp_act_bwd_saved_(saved, grad), grad))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(b, results[0][0]) and torch.equal(gy, results[0][1]) for b, gy in results[1:])


def test_in_place_forward_ops_overwrite_their_rows():
    """mlp_act_fwd_ / mlp_act_fwd_save_ (what a network call runs over its GEMM output) leave
    mlp_act_fwd's output in y's own storage; the functional ops are a copy and the same kernels,
    and equal the torch ops (test above)."""
    gen = torch.Generator().manual_seed(4)
    y, b = torch.randn(3, 7, 40, generator=gen, dtype=F64), torch.randn(40, generator=gen, dtype=F64)
    want, want_saved = torch.ops.flowcore.mlp_act_fwd_save(y, b, "silu", 2)
    rows = y.clone()
    saved = torch.ops.flowcore.mlp_act_fwd_save_(rows, b, "silu", 2)
    assert torch.equal(rows, want) and torch.equal(saved, want_saved)
    rows = y.clone()
    assert torch.ops.flowcore.mlp_act_fwd_(rows, b, "tanh") is None
    assert torch.equal(rows, torch.ops.flowcore.mlp_act_fwd(y, b, "tanh"))
    with pytest.raises(RuntimeError, match="overwritten in place, so it must be contiguous"):
        torch.ops.flowcore.mlp_act_fwd_(y.transpose(1, 2), b[:7], "gelu")
    with pytest.raises(RuntimeError, match="overwritten in place, so it must be contiguous"):
        torch.ops.flowcore.mlp_act_fwd_save_(y.transpose(1, 2), b[:7], "gelu", 1)


def test_in_place_backward_refuses_a_gradient_it_cannot_overwrite():
    y = torch.randn(1, 4, 6, dtype=F64)
    _, saved = torch.ops.flowcore.mlp_act_fwd_save(y, torch.zeros(6, dtype=F64), "tanh", 1)
    with pytest.raises(RuntimeError, match="overwritten in place, so it must be contiguous"):
        torch.ops.flowcore.mlp_act_bwd_saved_(saved, torch.randn(1, 6, 4, dtype=F64).transpose(1, 2))
    with pytest.raises(RuntimeError, match=r"saved must be \(1, 4, 6\) for 1 live row blocks"):
        torch.ops.flowcore.mlp_act_bwd_saved_(saved[:, :3], torch.randn(1, 4, 6, dtype=F64))


@settings(max_examples=12)
@given(T=st.integers(1, 4), data=st.data(), B=st.integers(0, 5), N=st.integers(1, 300),
       activation=st.sampled_from(ACTS), dtype=st.sampled_from([F64, torch.float32]), seed=st.integers(0, 2**16))
def test_saving_activation_ops_equal_the_torch_ops(T, data, B, N, activation, dtype, seed):
    """mlp_act_fwd_save's output is mlp_act_fwd's; mlp_act_bwd_saved on its `saved` is mlp_act_bwd
    over the live blocks (the dead ones get no gradient)."""
    live = data.draw(st.integers(1, T))
    gen = torch.Generator().manual_seed(seed)
    y, b, g = [(scale * torch.randn(*shape, generator=gen, dtype=F64)).to(dtype)
               for scale, shape in ((4, (T, B, N)), (1, (N,)), (1, (live, B, N)))]
    out, saved = torch.ops.flowcore.mlp_act_fwd_save(y, b, activation, live)
    gy = torch.ops.flowcore.mlp_act_bwd_saved(saved, g)
    d = [a.double() for a in (y, b, g)]
    want_out, want_gy = act_fwd_torch(d[0], d[1], activation), act_bwd_torch(d[0][:live], d[1], d[2], activation)
    assert saved.shape == ((1 if live == 1 else live + 1), B, N) and gy.shape == (live, B, N)
    # as test_mlp.py's kernel test: float32 σ, σ' to ~2e-7, z rounded by the bias add, |ẏ| ≤ ~20
    tol = 1e-13 if dtype == F64 else 5e-6
    def err(got, want):
        return ((got.double() - want).abs() / want.abs().clamp_min(1)).amax().item() if B else 0.0

    assert err(out, want_out) <= tol and err(gy, want_gy) <= tol
    if live > 1:
        assert torch.equal(saved[2:], y[1:live]), "the live tangents are kept as they are"


def test_a_call_with_a_dead_block_saves_only_the_live_rows():
    """The backward never reads a dead block (a tangent used only under sg, ESD's ∇X̂·v̂), so the
    op keeps the live blocks of each layer's rows, not all T (ESD's call saved a block per layer
    more than the reference before)."""
    weights, biases = layers([3, 8, 8, 2], seed=11, requires_grad=False)
    h = torch.randn(3, 5, 3, dtype=F64)
    _, _, hidden, derivatives = torch.ops.flowcore.mlp_net_fwd(h, weights, biases, "gelu", 1.0, 2, True)
    _, _, hidden_all_live, _ = torch.ops.flowcore.mlp_net_fwd(h, weights, biases, "gelu", 1.0, 3, True)
    assert [tuple(x.shape) for x in hidden] == [(2, 5, 8), (2, 5, 8)]
    assert all(x.untyped_storage().nbytes() == x.numel() * 8 for x in hidden), "a compact copy, not a view"
    assert all(torch.equal(x, y[:2]) for x, y in zip(hidden, hidden_all_live))
    assert [tuple(d.shape) for d in derivatives] == [(3, 5, 8), (3, 5, 8)]


def test_thin_layers_in_float32_match_float64():
    """The first layer's 4 input features and the last layer's 2 outputs take csrc/mlp_thin.h's
    kernels on the CPU (the hypothesis test above covers them in float64). In float32, with rows
    over several 64-row slabs and columns over several chunks: within float32 rounding of sums of
    a few hundred terms through three layers (1e-5 in norm; a wrong index or slab is O(1))."""
    weights, biases = layers([4, 70, 130, 2], seed=9)
    h = torch.randn(2, 300, 4, dtype=F64)
    got_params = [p.detach().float().requires_grad_() for p in (*weights, *biases)]
    hf = h.float().requires_grad_()
    got, _ = NetCall.apply(hf, "silu", 0.6, 2, *got_params)
    want, _ = stacked_layers(h.requires_grad_(), 2, weights, biases, "silu", 0.6, fused=False)
    r = torch.randn(got.shape, dtype=F64)
    grads = torch.autograd.grad((got * r.float()).sum(), [hf, *got_params])
    wanted = torch.autograd.grad((want * r).sum(), [h, *weights, *biases])
    assert rel(got.double(), want) <= 1e-5
    assert all(rel(g.double(), w) <= 1e-5 for g, w in zip(grads, wanted))


@pytest.mark.parametrize("activation", ACTS)
def test_gradcheck_and_gradgradcheck_with_a_dead_block(activation):
    weights, biases = layers([3, 4, 4, 2], seed=1)
    h = torch.randn(3, 2, 3, dtype=F64, requires_grad=True)

    def f(h, *params):
        return NetCall.apply(h, activation, 0.7, 2, *params)[0]

    args = (h, *weights, *biases)
    # gradcheck backs up twice through one graph: the first backward runs the op's kernels, the
    # second recomputes layer by layer in torch ops (the class docstring). Their products sum in
    # other orders (torch's BLAS, whose order may even follow the data's alignment, against
    # flowcore's thin kernels), so the two agree to float64 rounding over a few layers, not bit for bit.
    assert torch.autograd.gradcheck(f, args, nondet_tol=RTOL)
    assert torch.autograd.gradgradcheck(f, args, nondet_tol=RTOL)  # create_graph: the layer-by-layer recomputation


def test_a_retained_graph_backs_up_twice_and_the_backward_holds_no_more_than_autograd():
    weights, biases = layers([3, 64, 64, 64, 2], seed=5)
    h = torch.randn(1, 512, 3, dtype=F64)
    out, _ = NetCall.apply(h, "gelu", 1.0, 1, *weights, *biases)
    first = torch.autograd.grad(out.square().sum(), weights, retain_graph=True)
    second = torch.autograd.grad(out.square().sum(), weights)  # the saved rows are gone: recomputed
    assert all(rel(a, b) <= RTOL for a, b in zip(first, second))
    from flowcore.bench.measure import peak_memory

    def step(fused):
        def run():
            out = (NetCall.apply(h, "gelu", 1.0, 1, *weights, *biases) if fused
                   else stacked_layers(h, 1, weights, biases, "gelu", 1.0, fused=False))[0]
            torch.autograd.grad(out.square().sum(), weights)
        return run
    # 3 hidden layers of 512 × 64 float64 (256 KiB a tensor). Dropping each layer's rows once it is
    # done, and the output's gradient and the saved σ' before a layer's GEMMs, keeps the op a block
    # under the twin (≈ 1.8 against 2.3 MiB); with the gradient held through the GEMMs it was ≈ 2.05,
    # holding every layer's rows to the end of the backward ≈ 2.4
    block = 512 * 64 * 8
    assert peak_memory(step(True), torch.device("cpu")) <= peak_memory(step(False), torch.device("cpu")) - block


def test_parameters_without_grad_and_no_grad_mode_save_nothing():
    weights, biases = layers([3, 8, 2], seed=2, requires_grad=False)
    h = torch.randn(2, 4, 3, dtype=F64)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x.shape) or x, lambda x: x):
        out, _ = NetCall.apply(h, "gelu", 1.0, 2, *weights, *biases)
        assert saved == [] and out.grad_fn is None
        with torch.no_grad():
            weights[0].requires_grad_()
            out, _ = NetCall.apply(h, "gelu", 1.0, 2, *weights, *biases)
        assert saved == [] and out.grad_fn is None
        out, _ = NetCall.apply(h, "gelu", 1.0, 2, *weights, *biases)
        assert saved and out.grad_fn is not None
    grad = torch.autograd.grad(out.sum(), weights[0])[0]
    assert grad.shape == weights[0].shape


def test_an_sg_call_under_no_grad_asks_the_op_for_no_saved_rows(monkeypatch):
    """A Function's needs_input_grad ignores no_grad: through NetCall, LSD's sg'd teacher call saved
    every layer's rows for nothing (20 MiB at the peak of a paper-net step). net_call calls the op
    itself there, with save=False."""
    from flowcore.nn import mlp_call

    weights, biases = layers([3, 8, 8, 2], seed=4)
    h = torch.randn(2, 5, 3, dtype=F64)
    real, saves = mlp_call.mlp_ops(), []

    class Recorder:
        def __getattr__(self, name):
            return getattr(real, name)

        def mlp_net_fwd(self, *args):
            saves.append(args[-1])
            return real.mlp_net_fwd(*args)

    monkeypatch.setattr(mlp_call, "mlp_ops", Recorder)
    want, want_dead = stacked_layers(h, 1, weights, biases, "gelu", 1.0)
    with torch.no_grad():
        out, dead = net_call(h, 1, weights, biases, "gelu", 1.0)
    assert saves == [False] and out.grad_fn is None
    assert rel(out, want) < RTOL and rel(dead, want_dead) < RTOL
    out, _ = net_call(h, 1, weights, biases, "gelu", 1.0)
    assert saves == [False, True] and backward_node(out) == "NetCallBackward"


def test_op_argument_errors_name_what_is_wrong():
    weights, biases = layers([3, 4, 2], seed=3, requires_grad=False)
    h = torch.randn(2, 5, 3, dtype=F64)
    op = torch.ops.flowcore.mlp_net_fwd
    bad = [((h[0], weights, biases, "gelu", 1.0, 1, False), "stacked rows"),
           ((h, weights, biases, "gelu", 1.0, 3, False), r"live must count 1\.\.T = 2"),
           ((h, weights, biases[:1], "gelu", 1.0, 1, False), "one bias per weight"),
           ((h, [weights[0].t(), weights[1]], biases, "gelu", 1.0, 1, False), r"weight 0 must be \(out, 3\)"),
           ((h, weights, [biases[0][:3], biases[1]], "gelu", 1.0, 1, False), r"bias 0 must be \(4,\)"),
           ((h.float(), weights, biases, "gelu", 1.0, 1, False), "layer 0's weight and bias must have the rows' dtype"),
           ((h, weights, biases, "relu", 1.0, 1, False), "unknown activation 'relu'")]
    for args, message in bad:
        with pytest.raises(RuntimeError, match=message):
            op(*args)
    _, _, hidden, derivatives = op(h, weights, biases, "gelu", 1.0, 2, True)
    bwd = torch.ops.flowcore.mlp_layer_bwd
    with pytest.raises(RuntimeError, match=r"grad must be \(live, B, out\) and input \(T >= live, B, in\)"):
        bwd(torch.ones(3, 5, 2, dtype=F64), None, hidden[0], weights[1], False)
    with pytest.raises(RuntimeError, match=r"weight must be \(2, 4\)"):
        bwd(torch.ones(2, 5, 2, dtype=F64), None, hidden[0], weights[0], False)
    with pytest.raises(RuntimeError, match=r"saved must be \(3, 5, 4\) for 2 live row blocks"):
        bwd(torch.ones(2, 5, 4, dtype=F64), derivatives[0][:1], h, weights[0], False)
    with pytest.raises(RuntimeError, match="must share a dtype"):
        bwd(torch.ones(2, 5, 2), None, hidden[0], weights[1], False)
    with pytest.raises(ValueError, match=r"live must count 1\.\.2 row blocks, got 0"):
        net_call(h, 0, weights, biases, "gelu", 1.0)


def test_net_call_picks_the_op_in_plain_autograd_and_the_twin_under_transforms():
    weights, biases = layers([3, 6, 2], seed=4)
    h = torch.randn(2, 3, 3, dtype=F64)
    out, _ = net_call(h, 2, weights, biases, "silu", 1.0)
    assert backward_node(out) == "NetCallBackward"
    assert backward_node(net_call(h, 2, weights, biases, "silu", 1.0, fused=False)[0]) != "NetCallBackward"
    # torch.func: the differentiable twin (the op has no forward-mode or vmap rule)
    tangent = torch.randn_like(h)
    value, dot = torch.func.jvp(lambda hh: net_call(hh, 2, weights, biases, "silu", 1.0)[0], (h,), (tangent,))
    want = torch.func.jvp(lambda hh: stacked_layers(hh, 2, weights, biases, "silu", 1.0, fused=False)[0],
                          (h,), (tangent,))
    assert rel(value, want[0]) <= RTOL and rel(dot, want[1]) <= RTOL


def test_jvp_many_without_tangents_is_the_forward_through_one_node():
    net = FlowMapMLP(2, 16, 3, "tanh", 0.6).double()
    s, t, x = torch.rand(5, dtype=F64), torch.rand(5, dtype=F64), torch.randn(5, 2, dtype=F64)
    v, dots = net.jvp_many(s, t, x, [])
    want = net(s, t, x)
    assert dots == [] and rel(v, want) <= RTOL and backward_node(v) == "NetCallBackward"
    grads = torch.autograd.grad(v.square().sum(), list(net.parameters()))
    wanted = torch.autograd.grad(want.square().sum(), list(net.parameters()))
    assert all(rel(g, w) <= RTOL for g, w in zip(grads, wanted))


def test_the_extension_is_compiled_with_openmp():
    """at::parallel_for's pragmas parallelize only in code compiled with -fopenmp: without it every
    op of the extension (fused activations, generated kernels) ran on one thread."""
    from pathlib import Path

    from flowcore.native.extension import OPENMP_FLAGS, extension_info, load_extension

    if not OPENMP_FLAGS:
        pytest.skip("torch's thread pool is not OpenMP here")
    load_extension()
    path = extension_info().get("path")
    if path is None:
        pytest.skip("the extension was loaded by someone else")
    assert b"GOMP_parallel" in Path(path).read_bytes(), f"{path} has no OpenMP parallel region"


def test_retaining_freed_memory_stops_the_page_faults_of_a_repeated_step():
    """In a subprocess (the setting is process-wide): a "step" that allocates four 1 MiB blocks,
    touches and frees them faults every page in again under glibc's default thresholds (the heap's
    top goes back to the kernel), and none once the memory is kept."""
    import resource
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc malloc only")
    script = (
        "import ctypes, resource\n"
        "from flowcore.runtime.allocator import retain_freed_memory, retained\n"
        "libc = ctypes.CDLL('libc.so.6')\n"
        "libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]\n"
        "def step():\n"
        "    blocks = [libc.malloc(1 << 20) for _ in range(4)]\n"
        "    for b in blocks: libc.memset(b, 1, 1 << 20)\n"
        "    for b in blocks: libc.free(b)\n"
        "def faults():\n"
        "    for _ in range(3): step()\n"
        "    r = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    for _ in range(10): step()\n"
        "    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r) / 10\n"
        "before = faults()\n"
        "assert retain_freed_memory() and retained()['mmap_threshold'] == 32 << 20\n"
        "print(before, faults())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    before, after = map(float, out.stdout.split())
    pages = 4 * (1 << 20) // resource.getpagesize()
    assert before >= 0.9 * pages and after < 0.01 * pages, (before, after, pages)


# -- CUDA (run where a GPU is visible) ------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.float16, torch.bfloat16])
def test_cuda_saving_activation_ops_equal_the_torch_ops(dtype):
    skip_without_cuda_kernels(dtype)
    gen = torch.Generator().manual_seed(1)
    y, b, g = [(3 * torch.randn(*shape, generator=gen, dtype=F64)).to(dtype)
               for shape in ((3, 37, 300), (300,), (2, 37, 300))]
    # ×4 below for the backward's sums over rows, ×2 more: the saved σ', σ'' are rounded to the
    # storage type once more
    tol = CUDA_STORAGE_TOL[dtype]
    d = [a.double() for a in (y, b, g)]
    for activation in ACTS:
        out, saved = torch.ops.flowcore.mlp_act_fwd_save(y.cuda(), b.cuda(), activation, 2)
        gy = torch.ops.flowcore.mlp_act_bwd_saved(saved, g.cuda())
        want_out, want_gy = act_fwd_torch(d[0], d[1], activation), act_bwd_torch(d[0][:2], d[1], d[2], activation)
        for got, want, bound in ((out, want_out, tol), (gy, want_gy, 8 * tol)):
            assert got.dtype == dtype and ((got.double().cpu() - want).abs() / want.abs().clamp_min(1)).max() <= bound


@needs_gpu
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.float16, torch.bfloat16])
def test_cuda_in_place_ops_equal_the_functional_ones(dtype):
    skip_without_cuda_kernels(dtype)
    gen = torch.Generator().manual_seed(2)
    y, b, g = [(3 * torch.randn(*shape, generator=gen, dtype=F64)).to(dtype).cuda()
               for shape in ((3, 37, 300), (300,), (2, 37, 300))]
    out, saved = torch.ops.flowcore.mlp_act_fwd_save(y, b, "gelu", 2)
    rows = y.clone()
    assert torch.equal(torch.ops.flowcore.mlp_act_fwd_save_(rows, b, "gelu", 2), saved) and torch.equal(rows, out)
    rows = y.clone()
    torch.ops.flowcore.mlp_act_fwd_(rows, b, "silu")
    assert torch.equal(rows, torch.ops.flowcore.mlp_act_fwd(y, b, "silu"))
    want_gy = torch.ops.flowcore.mlp_act_bwd_saved(saved, g)
    grad = g.clone()
    bias = torch.ops.flowcore.mlp_act_bwd_saved_(saved, grad)
    assert torch.equal(grad, want_gy), "the same kernel, writing over its input"
    want_bias = want_gy[0].double().sum(0)
    # 37 rows summed in float (at::sum's accumulator), the result rounded to the storage type
    bound = CUDA_STORAGE_TOL[dtype] * want_gy[0].double().abs().sum(0)
    assert bias.dtype == dtype and ((bias.double() - want_bias).abs() <= bound).all()


@needs_gpu
def test_cuda_whole_network_call_equals_the_twin():
    skip_without_cuda_kernels(F64)
    weights, biases = layers([4, 64, 64, 2], seed=6)
    weights, biases = ([w.detach().cuda().requires_grad_() for w in weights],
                       [b.detach().cuda().requires_grad_() for b in biases])
    h = torch.randn(3, 33, 4, dtype=F64, device="cuda", requires_grad=True)
    got, got_dead = NetCall.apply(h, "gelu", 0.58, 2, *weights, *biases)
    want, want_dead = stacked_layers(h, 2, weights, biases, "gelu", 0.58, fused=False)
    assert rel(got, want) <= RTOL and rel(got_dead, want_dead) <= RTOL
    params = [h, *weights, *biases]
    grads = torch.autograd.grad(got.square().sum(), params)
    wanted = torch.autograd.grad(want.square().sum(), params)
    assert all(rel(a, b) <= RTOL for a, b in zip(grads, wanted))


def test_opcheck_of_the_new_ops():
    """Schemas, fake (meta) kernels and autograd registration agree with the kernels (torch.library.opcheck)."""
    ops = torch.ops.flowcore
    gen = torch.Generator().manual_seed(7)
    y, b = torch.randn(3, 4, 5, generator=gen, dtype=F64), torch.randn(5, generator=gen, dtype=F64)
    _, saved = ops.mlp_act_fwd_save(y, b, "gelu", 2)
    torch.library.opcheck(ops.mlp_act_fwd_save.default, (y, b, "tanh", 2))
    torch.library.opcheck(ops.mlp_act_bwd_saved.default, (saved, torch.randn(2, 4, 5, generator=gen, dtype=F64)))
    torch.library.opcheck(ops.mlp_act_bwd_saved_.default, (saved, torch.randn(2, 4, 5, generator=gen, dtype=F64)))
    torch.library.opcheck(ops.mlp_act_fwd_.default, (y.clone(), b, "gelu"))
    torch.library.opcheck(ops.mlp_act_fwd_save_.default, (y.clone(), b, "silu", 2))
    weights, biases = layers([5, 6, 2], seed=8, requires_grad=False)
    torch.library.opcheck(ops.mlp_net_fwd.default, (y, weights, biases, "silu", 0.5, 2, True))
    torch.library.opcheck(ops.mlp_layer_bwd.default, (torch.randn(2, 4, 6, generator=gen, dtype=F64), None, y,
                                                     weights[0], True))
    torch.library.opcheck(ops.mlp_layer_bwd.default, (torch.randn(2, 4, 6, generator=gen, dtype=F64), None, y,
                                                     weights[0], False, False))
