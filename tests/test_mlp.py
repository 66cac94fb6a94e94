"""flowcore.nn.FlowMapMLP's fused JVP (docs/math.md §4, §6): values, gradients THROUGH the tangent, and
higher derivatives, against plain autograd — on both paths (the extension's fused kernels and the
pure-torch fallback).

The reference: a plain ``nn.Sequential`` from the same weights, embedding written out here, JVPs by
``torch.func.jvp``, gradients through the tangent by double backward; float64 to 1e-10 relative (same
function, other op order: ~1e-16 rounding per op over a few hundred ops). Also gradcheck /
gradgradcheck (reverse, forward, forward-over-reverse, batched) of the Functions and the network's
``jvp``, opcheck, no-grad mode, jvp_many, the fallback, and compiled objectives (torch, cpu) vs the
reference interpreter. CUDA sources are compiled by .ci/compile_cuda.py (it globs csrc/*.cu; tested in
test_codegen_cuda); runtime CUDA tests run where a GPU is visible.
"""
from __future__ import annotations

import functools
import warnings
from unittest import mock

import pytest
import torch
from backends import CUDA_STORAGE_TOL, available, needs_gpu, skip_without_cuda_kernels
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import flowcore as fc
from flowcore.nn import FlowMapMLP, SinusoidalTimes, fused
from flowcore.nn.fused import ActJvp, ActJvpBackward, act_bwd_torch, act_fwd_torch
from flowcore.native import extension
from flowcore.native.extension import ExtensionBuildError
from flowcore.testing import FLOAT64_RTOL, compare_with_reference
from flowcore.testing.strategies import batches

ACTS = ["gelu", "silu", "tanh"]
F64 = torch.float64
RTOL = 1e-10
# float32: eps 6e-8; GEMM sums of `width` terms (~sqrt(width)·eps) and float kernels of ~3e-7 relative
# error give ~1e-6 over 3 layers of width 32: 1e-4 keeps two orders of margin and still catches bugs (O(1)).
RTOL_F32 = 1e-4


@pytest.fixture(scope="module")
def paths():
    """The implementations to test: `fused=True` where the kernels load, always the torch path."""
    return ([True] if fused.kernels_available("cpu", F64) else []) + [False]


def rel(got: torch.Tensor, want: torch.Tensor, floor: float = 1e-8) -> float:
    return (got - want).norm().item() / max(want.norm().item(), floor)


# -- the independent reference ----------------------------------------------------------------------
class Plain(nn.Module):
    """``σ·Sequential(x/σ; e(s, t))`` from `net`'s weights, the embedding written out here."""

    def __init__(self, net: FlowMapMLP):
        super().__init__()
        act = {"gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}[net.activation]
        layers = [nn.Linear(m.in_features, m.out_features, dtype=m.weight.dtype) if isinstance(m, nn.Linear) else act()
                  for m in net.body]
        self.seq, self.sigma = nn.Sequential(*layers), net.sigma
        with torch.no_grad():
            for mine, theirs in zip(self.seq.parameters(), net.body.parameters()):
                mine.copy_(theirs)
        self.features = getattr(net.embedding, "features", None)

    def forward(self, s, t, x):
        if self.features is None:
            e = torch.stack([s, t], 1)
        else:
            half = self.features // 2
            freqs = 1000.0 * 1e4 ** (-torch.arange(half, dtype=F64, device=s.device) / half)
            a, d = s[:, None] * freqs.to(s.dtype), (t - s)[:, None] * freqs.to(s.dtype)
            e = torch.cat([a.cos(), a.sin(), d.cos(), d.sin()], 1)
        return self.sigma * self.seq(torch.cat([e, x / self.sigma], 1))


def make_net(cfg: dict, fused_path, dtype=F64) -> FlowMapMLP:
    torch.manual_seed(cfg["seed"])
    embedding = "raw" if cfg["embedding"] == "raw" else SinusoidalTimes(cfg["embedding"])
    return FlowMapMLP(cfg["dim"], cfg["width"], cfg["depth"], cfg["activation"], cfg["sigma"],
                      time_embedding=embedding, fused=fused_path).to(dtype)


configs = st.fixed_dictionaries({
    "dim": st.integers(1, 3), "width": st.integers(1, 24), "depth": st.integers(1, 3),
    "activation": st.sampled_from(ACTS), "embedding": st.sampled_from(["raw", 2, 8]),
    "sigma": st.sampled_from([1.0, 0.58, 2.0]), "batch": st.integers(1, 6), "seed": st.integers(0, 2**16)})


def inputs(cfg: dict, k: int = 1, dtype=F64, requires_grad: bool = False):
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    B, D = cfg["batch"], cfg["dim"]
    make = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_(requires_grad)  # noqa: E731
    s, t = [torch.rand(B, generator=gen, dtype=dtype).requires_grad_(requires_grad) for _ in range(2)]
    return (s, t, make(B, D)), [(make(B), make(B), make(B, D)) for _ in range(k)]


# -- construction and input errors ------------------------------------------------------------------
_S, _X = torch.rand(3, dtype=F64), torch.randn(3, 2, dtype=F64)
_NET = FlowMapMLP(2, 8, 2).double()
BAD = [  # (call, error, message)
    (lambda: FlowMapMLP(2, 8, 2, "relu"), ValueError, "unknown activation 'relu'"),
    (lambda: FlowMapMLP(2, 8, 2, time_embedding="fourier"), ValueError, "unknown time_embedding 'fourier'"),
    (lambda: FlowMapMLP(2, 8, 2, time_embedding=nn.Identity()), TypeError, "needs `channels` and `jvp"),
    (lambda: FlowMapMLP(2, 0, 2), ValueError, "must be positive"),
    (lambda: FlowMapMLP(2, 8, 2, sigma=0.0), ValueError, "sigma must be positive"),
    (lambda: SinusoidalTimes(7), ValueError, "features must be even"),
    (lambda: _NET(_S, _S, torch.randn(3, 3, dtype=F64)), ValueError, r"expects x shaped \(B, 2\), got \(3, 3\)"),
    (lambda: _NET.jvp(_S, _S, _X.flatten(), _S, _S, _X), ValueError, r"expects x shaped \(B, 2\), got \(6,\)"),
    (lambda: _NET.jvp(torch.rand(4, dtype=F64), _S, _X, _S, _S, _X), ValueError, r"expects s shaped \(3,\)"),
    (lambda: _NET.jvp(_S, _S, _X, _S, _S, _X[:, :1]), ValueError, r"the tangent dx \(tangent 0\) shaped \(B, 2\)"),
    (lambda: _NET.jvp(_S, _S, _X, _S[:2], _S, _X), ValueError, r"expects ds shaped \(3,\)"),
    (lambda: _NET.jvp_many(_S, _S, _X, [(_S, _S)]), ValueError, "must be a triple"),
    (lambda: act_fwd_torch(torch.zeros(1, 1, 1), torch.zeros(1), "relu"), ValueError, "unknown activation 'relu'"),
]


@pytest.mark.parametrize("call,error,message", BAD, ids=[m.split(" ")[0] + str(i) for i, (_, _, m) in enumerate(BAD)])
def test_bad_configurations_and_inputs_give_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_scalar_times_and_none_tangents():
    net = FlowMapMLP(2, 8, 2).double()
    x, dx = torch.randn(3, 2, dtype=F64), torch.randn(3, 2, dtype=F64)
    v, v_dot = net.jvp(0.25, torch.tensor(0.75, dtype=F64), x, None, 1.0, dx)
    full = torch.full((3,), 0.25, dtype=F64), torch.full((3,), 0.75, dtype=F64)
    v2, v_dot2 = net.jvp(*full, x, torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64), dx)
    assert torch.equal(v, v2) and torch.equal(v_dot, v_dot2)
    assert torch.equal(net.jvp(*full, x)[1], torch.zeros_like(x))


# -- values and gradients against the plain network ------------------------------------------------
@settings(max_examples=10)
@given(cfg=configs, which=st.integers(0, 1))
def test_jvp_and_gradients_through_the_tangent_match_plain_autograd(paths, cfg, which):
    net = make_net(cfg, paths[which % len(paths)])
    plain = Plain(net)
    (s, t, x), [(ds, dt, dx)] = inputs(cfg, requires_grad=True)
    leaves = [s, t, x, ds, dt, dx]
    assert rel(net(s, t, x), plain(s, t, x)) <= RTOL
    v, v_dot = net.jvp(s, t, x, ds, dt, dx)
    want_v, want_dot = torch.func.jvp(plain, (s, t, x), (ds, dt, dx))
    assert rel(v, want_v) <= RTOL and rel(v_dot, want_dot) <= RTOL
    gen = torch.Generator().manual_seed(cfg["seed"] + 2)
    r1, r2 = torch.randn(v.shape, generator=gen, dtype=F64), torch.randn(v.shape, generator=gen, dtype=F64)
    got = torch.autograd.grad((v * r1).sum() + (v_dot * r2).sum(), list(net.parameters()) + leaves)
    want = torch.autograd.grad((want_v * r1).sum() + (want_dot * r2).sum(), list(plain.parameters()) + leaves)
    assert all(rel(g, w) <= RTOL for g, w in zip(got, want))


@settings(max_examples=6)
@given(cfg=configs, live=st.lists(st.booleans(), min_size=1, max_size=3))
def test_jvp_many_with_dead_tangents_equals_detaching_them(paths, cfg, live):
    """``live=False`` tangents (needed only under sg) equal the all-live values and carry no graph;
    gradients through the rest are unchanged."""
    (s, t, x), tangents = inputs(cfg, k=len(live), requires_grad=True)
    for path in paths:
        net = make_net(cfg, path)
        v, dots = net.jvp_many(s, t, x, tangents, live=live)
        v_all, dots_all = net.jvp_many(s, t, x, tangents)
        assert rel(v, v_all) <= RTOL and all(rel(d, d1) <= RTOL for d, d1 in zip(dots, dots_all))
        assert all(d.requires_grad == keep for d, keep in zip(dots, live))
        weights, params = [torch.randn(v.shape, dtype=F64) for _ in live], list(net.parameters()) + [s, t, x]
        got = torch.autograd.grad(v.sum() + sum((d * w).sum() for d, w, keep in zip(dots, weights, live) if keep),
                                  params, allow_unused=True)
        want = torch.autograd.grad(v_all.sum() + sum((d * w).sum() for d, w, keep in zip(dots_all, weights, live)
                                                     if keep), params, allow_unused=True)
        assert all((g is None and w is None) or rel(g, w) <= RTOL for g, w in zip(got, want))
    with pytest.raises(ValueError, match="2 live flags for 1 tangents"):
        net.jvp_many(s, t, x, tangents[:1], live=[True, False])


@settings(max_examples=6)
@given(cfg=configs, k=st.integers(2, 3))
def test_jvp_many_equals_separate_jvps_and_fused_equals_fallback(paths, cfg, k):
    (s, t, x), tangents = inputs(cfg, k=k, requires_grad=True)
    first = None
    for path in paths:
        net = make_net(cfg, path)
        v, dots = net.jvp_many(s, t, x, tangents)
        separate = [net.jvp(s, t, x, *tangent) for tangent in tangents]
        assert len(dots) == k and all(rel(v, v1) <= RTOL and rel(d, d1) <= RTOL for (v1, d1), d in zip(separate, dots))
        first = first or (v, dots)  # the fused path (where available) equals the fallback
        assert rel(v, first[0]) <= RTOL and all(rel(d, d1) <= RTOL for d, d1 in zip(dots, first[1]))
        weights, params = [torch.randn(v.shape, dtype=F64) for _ in range(k)], list(net.parameters()) + [s, t, x]
        got = torch.autograd.grad(v.sum() + sum((d * w).sum() for d, w in zip(dots, weights)), params)
        want = torch.autograd.grad(separate[0][0].sum() + sum((d[1] * w).sum() for d, w in zip(separate, weights)),
                                   params)
        assert all(rel(g, w) <= RTOL for g, w in zip(got, want))


def test_float32_agrees_with_float64_to_float32_rounding(paths):
    cfg = dict(dim=2, width=32, depth=3, activation="gelu", embedding=8, sigma=0.58, batch=64, seed=3)
    for path, cfg["activation"] in [(path, a) for path in paths for a in ACTS]:
        (s, t, x), [tangent] = inputs(cfg)
        v, v_dot = make_net(cfg, path, torch.float32).jvp(*[a.float() for a in (s, t, x, *tangent)])
        want_v, want_dot = make_net(cfg, path, F64).jvp(s, t, x, *tangent)
        assert v.dtype == torch.float32
        assert rel(v.double(), want_v) <= RTOL_F32 and rel(v_dot.double(), want_dot) <= RTOL_F32


# -- the fused activation ops and Functions ---------------------------------------------------------
@pytest.mark.parametrize("activation", ACTS)
def test_activation_functions_gradcheck_and_gradgradcheck(paths, activation):
    gen = torch.Generator().manual_seed(0)
    y, b, g = [(2 * torch.randn(*shape, generator=gen, dtype=F64)).requires_grad_()
               for shape in ((3, 2, 3), (3,), (3, 2, 3))]
    for path in paths:
        fwd = lambda y, b: ActJvp.apply(y, b, activation, path)  # noqa: E731
        bwd = lambda y, b, g: ActJvpBackward.apply(y, b, g, activation, path)  # noqa: E731
        for fn, args in ((fwd, (y, b)), (bwd, (y, b, g))):
            assert torch.autograd.gradcheck(fn, args, check_forward_ad=True, check_backward_ad=True,
                                            check_batched_grad=True, check_batched_forward_grad=True)
            assert torch.autograd.gradgradcheck(fn, args, check_fwd_over_rev=True, check_rev_over_rev=True,
                                                check_batched_grad=True, fast_mode=fn is bwd)


@settings(max_examples=8)
@given(T=st.integers(1, 4), B=st.integers(0, 5), N=st.integers(1, 300), activation=st.sampled_from(ACTS),
       dtype=st.sampled_from([F64, torch.float32]), seed=st.integers(0, 2**16))
def test_kernels_equal_the_torch_ops(paths, T, B, N, activation, dtype, seed):
    if len(paths) == 1:
        pytest.skip("the fused kernels are not available here")
    gen = torch.Generator().manual_seed(seed)
    y, b, g = [(s * torch.randn(*shape, generator=gen, dtype=F64)).to(dtype)
               for s, shape in ((4, (T, B, N)), (1, (N,)), (1, (T, B, N)))]
    d = [a.double() for a in (y, b, g)]
    want_a, want_g = act_fwd_torch(*d[:2], activation), act_bwd_torch(*d, activation)
    got_a, got_g = torch.ops.flowcore.mlp_act_fwd(y, b, activation), torch.ops.flowcore.mlp_act_bwd(y, b, g, activation)
    assert got_a.dtype == dtype and got_a.shape == (T, B, N)
    # float32 kernels (same rounded inputs): σ, σ' to ~2e-7 absolute (A&S erfc, polynomial exp and
    # tanh), the bias add's rounding moves z by ~1e-6, and products with |ẏ| ≤ ~20
    tol = 1e-13 if dtype == F64 else 5e-6
    err = lambda got, want: ((got.double() - want).abs() / want.abs().clamp_min(1)).amax().item() if B else 0.0  # noqa: E731
    assert err(got_a, want_a) <= tol and err(got_g, want_g) <= tol


def test_ops_opcheck_and_argument_errors(paths):
    if len(paths) == 1:
        pytest.skip("the fused kernels are not available here")
    ops = torch.ops.flowcore
    y, b = torch.randn(2, 3, 5, dtype=F64), torch.randn(5, dtype=F64)
    torch.library.opcheck(ops.mlp_act_fwd.default, (y, b, "silu"))
    torch.library.opcheck(ops.mlp_act_bwd.default, (y, b, torch.randn_like(y), "gelu"))
    for args, message in [((y, b, "relu"), "unknown activation 'relu'"), ((y, b[:4], "gelu"), r"bias must have shape"),
                          ((y[0], b, "gelu"), "stacked rows"), ((y.half(), b.half(), "gelu"), "float32 and float64")]:
        with pytest.raises(RuntimeError, match=message):
            ops.mlp_act_fwd(*args)
    # bfloat16 on the CPU: the torch path, no error
    out = fused.act_fwd(y.bfloat16(), b.bfloat16(), "gelu")
    assert out.dtype == torch.bfloat16


# -- the whole network's jvp: gradcheck, gradgradcheck, torch.func -----------------------------------
@pytest.mark.parametrize("activation", ACTS)
def test_network_jvp_gradcheck_and_gradgradcheck(paths, activation):
    cfg = dict(dim=2, width=3, depth=2, activation=activation, embedding=2, sigma=0.7, batch=2, seed=5)
    for path in paths:
        net = make_net(cfg, path)
        net.embedding = SinusoidalTimes(2, scale=2.0)  # finite differences need moderate frequencies
        net.forward = net.jvp  # functional_call calls forward: make it the jvp
        names = [name for name, _ in net.named_parameters()]
        (s, t, x), [(ds, dt, dx)] = inputs(cfg, requires_grad=True)
        args = (s, t, x, ds, dt, dx, *[p.detach().clone().requires_grad_() for p in net.parameters()])
        f = lambda *a: torch.func.functional_call(net, dict(zip(names, a[6:])), a[:6])  # noqa: E731
        assert torch.autograd.gradcheck(f, args, check_forward_ad=True, check_backward_ad=True,
                                        check_batched_grad=True, check_batched_forward_grad=True, fast_mode=True)
        assert torch.autograd.gradgradcheck(f, args, check_fwd_over_rev=True, check_rev_over_rev=True,
                                            check_batched_grad=True, fast_mode=True)


def test_torch_func_interop(paths):
    cfg = dict(dim=2, width=8, depth=2, activation="gelu", embedding=8, sigma=0.5, batch=4, seed=7)
    for path in paths:
        net = make_net(cfg, path)
        plain = Plain(net)
        (s, t, x), [(ds, dt, dx), (es, et, ex)] = inputs(cfg, k=2)
        # torch.func.jvp of the module (its forward is the plain torch graph) and of net.jvp
        assert rel(torch.func.jvp(net, (s, t, x), (ds, dt, dx))[1], net.jvp(s, t, x, ds, dt, dx)[1]) <= RTOL
        second = torch.func.jvp(lambda *p: net.jvp(*p, ds, dt, dx)[1], (s, t, x), (es, et, ex))[1]
        inner = lambda *p: torch.func.jvp(plain, p, (ds, dt, dx))[1]  # noqa: E731
        assert rel(second, torch.func.jvp(inner, (s, t, x), (es, et, ex))[1]) <= RTOL
        # torch.func.grad through the tangent and vmap over a batch of tangents
        grad = torch.func.grad(lambda xx: net.jvp(s, t, xx, ds, dt, dx)[1].square().sum())(x)
        want = torch.func.grad(lambda xx: torch.func.jvp(plain, (s, t, xx), (ds, dt, dx))[1].square().sum())(x)
        assert rel(grad, want) <= RTOL
        batched = torch.func.vmap(lambda d: net.jvp(s, t, x, ds, dt, d)[1])(torch.stack([dx, ex]))
        assert rel(batched[1], net.jvp(s, t, x, ds, dt, ex)[1]) <= RTOL


# -- no-grad mode ---------------------------------------------------------------------------------------
def test_no_grad_mode_saves_nothing(paths):
    cfg = dict(dim=2, width=16, depth=3, activation="gelu", embedding="raw", sigma=1.0, batch=8, seed=1)
    for path in paths:
        net = make_net(cfg, path)
        (s, t, x), tangents = inputs(cfg, k=2, requires_grad=True)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x.shape) or x, lambda x: x):
            with torch.no_grad():
                v, dots = net.jvp_many(s, t, x, tangents)
            assert saved == [] and v.grad_fn is None and all(d.grad_fn is None for d in dots)
            v_grad, dots_grad = net.jvp_many(s, t, x, tangents)
            assert saved, "the grad-mode call saves its activations (sanity check of the hook)"
        assert rel(v, v_grad) == 0 and all(rel(a, b) == 0 for a, b in zip(dots, dots_grad))


# -- loading and the fallback ------------------------------------------------------------------------
def test_unloadable_extension_or_the_environment_variable_select_the_torch_path(monkeypatch):
    monkeypatch.setattr(extension, "_device_kernels", {})
    monkeypatch.setattr(extension, "_optional", {})
    monkeypatch.setattr(extension, "load_extension", mock.Mock(side_effect=ExtensionBuildError("no C++ compiler")))
    cfg = dict(dim=2, width=8, depth=2, activation="silu", embedding="raw", sigma=1.0, batch=3, seed=2)
    net = make_net(cfg, None)
    (s, t, x), [tangent] = inputs(cfg)
    with pytest.warns(RuntimeWarning, match="fused MLP kernels are unavailable.*no C\\+\\+ compiler"):
        got = net.jvp(s, t, x, *tangent)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = net.jvp(s, t, x, *tangent)
    want = make_net(cfg, False).jvp(s, t, x, *tangent)
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(got, again, want))
    with pytest.raises(RuntimeError, match="fused=True but the fused MLP kernels are unavailable"):
        make_net(cfg, True).jvp(s, t, x, *tangent)
    monkeypatch.undo()  # the extension loads again; FLOWCORE_MLP_FUSED=0 still forces the torch path
    monkeypatch.setenv(fused.ENV_FUSED, "0")
    assert not fused.kernels_available("cpu", F64)
    assert all(map(torch.equal, make_net(cfg, None).jvp(s, t, x, *tangent), want))


# -- compiled objectives with FlowMapMLP equal the reference ------------------------------------------
x_var = fc.Var("x")
TWO_DIRECTIONS = fc.Objective("two_directions", [fc.Term(
    "two_directions", fc.sqnorm(fc.Dt(fc.X(fc.s, fc.t, x_var)) + fc.sg(fc.Ds(fc.X(fc.s, fc.t, x_var)))
                                + fc.Dx(fc.X(fc.s, fc.t, x_var), x_var, along=fc.x0)).bind(x=fc.I(fc.s)),
    fc.Square(fc.s, fc.t), 1.0)])
OBJECTIVES = ["lsd", "esd", "meanflow", "psd_u", "psd_m", "two_directions"]


@functools.lru_cache(maxsize=None)
def program(name: str, backend: str):
    return fc.compile(TWO_DIRECTIONS if name == "two_directions" else name, backend=backend)


class CountingMLP(FlowMapMLP):
    """Records how many tangents each native JVP call carried."""

    def jvp_many(self, s, t, x, tangents, live=None):
        self.__dict__.setdefault("calls", []).append(len(tangents))
        self.__dict__.setdefault("live", []).append(None if live is None else tuple(live))
        return super().jvp_many(s, t, x, tangents, live=live)


@pytest.mark.parametrize("backend", [b for b in available() if b.values[0] in ("torch", "cpu")])
@pytest.mark.parametrize("name", OBJECTIVES)
@settings(max_examples=2)
@given(data=st.data())
def test_compiled_objectives_with_the_fused_mlp_match_the_reference(name, backend, data):
    compiled = program(name, backend)
    batch = data.draw(batches(compiled.objective, max_batch=6, shapes=[(2,)]))
    torch.manual_seed(batch["seed"])
    net = CountingMLP(2, 12, 2, data.draw(st.sampled_from(ACTS)), 0.58,
                      time_embedding=data.draw(st.sampled_from(["raw", SinusoidalTimes(8)]))).double()
    result = compare_with_reference(compiled, compiled.objective, net, batch["x1"], batch["x0"], batch["times"])
    assert result.worst <= FLOAT64_RTOL, result
    calls = net.__dict__.get("calls", [])
    if name in ("lsd", "esd", "meanflow", "two_directions") and min(compiled.objective.split(len(batch["x1"]))) > 0:
        assert any(calls), "the compiled objective used the network's native jvp"
    if name == "two_directions":
        assert 3 in calls, "three directions at one primal go through one jvp_many call"
    if name == "esd" and min(compiled.objective.split(len(batch["x1"]))) > 0:
        # ∂_s X̂ (live) and the sg'd ∇X̂·v̂ share one primal pass; only ∂_s X̂ keeps a graph
        merged = [live for live in net.__dict__["live"] if live is not None]
        assert len(merged) == 1 and sorted(merged[0]) == [False, True], net.__dict__["live"]
    if name in ("lsd", "psd_u", "psd_m") and len(batch["x1"]):
        assert 0 in calls, "plain evaluations go through the fused path (jvp_many without tangents)"


# -- CUDA ---------------------------------------------------------------------------------------------
@needs_gpu
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.float16, torch.bfloat16])
def test_cuda_kernels_equal_the_torch_ops(dtype):
    skip_without_cuda_kernels(dtype)
    gen = torch.Generator().manual_seed(0)
    y, b, g = [(3 * torch.randn(*shape, generator=gen, dtype=F64)).to(dtype)
               for shape in ((3, 37, 300), (300,), (3, 37, 300))]
    tol = CUDA_STORAGE_TOL[dtype]  # ×4 below for the backward's 3-row sums
    d, c = [a.double() for a in (y, b, g)], [a.cuda() for a in (y, b, g)]
    for activation in ACTS:
        want = [act_fwd_torch(*d[:2], activation), act_bwd_torch(*d, activation)]
        got = [fused.act_fwd(*c[:2], activation, True), fused.act_bwd(*c, activation, True)]
        for a, w, bound in zip(got, want, (tol, 4 * tol)):
            assert a.dtype == dtype and ((a.double().cpu() - w).abs() / w.abs().clamp_min(1)).max().item() <= bound


@needs_gpu
def test_cuda_network_jvp_and_gradients_match_plain():
    skip_without_cuda_kernels(F64)
    cfg = dict(dim=2, width=64, depth=3, activation="gelu", embedding=8, sigma=0.58, batch=33, seed=9)
    net, (s, t, x), [tangent] = make_net(cfg, True).cuda(), *inputs(cfg)
    plain = Plain(net).cuda()
    args = [a.cuda().requires_grad_() for a in (s, t, x, *tangent)]
    v, v_dot = net.jvp(*args)
    want_v, want_dot = torch.func.jvp(plain, tuple(args[:3]), tuple(args[3:]))
    assert rel(v, want_v) <= RTOL and rel(v_dot, want_dot) <= RTOL
    got = torch.autograd.grad(v.sum() + v_dot.square().sum(), list(net.parameters()))
    want = torch.autograd.grad(want_v.sum() + want_dot.square().sum(), list(plain.parameters()))
    assert all(rel(g, w) <= RTOL for g, w in zip(got, want))


def test_module_keeps_its_state_dict_layout():  # checkpoints of the plain MLP load: raw times add no state
    assert list(FlowMapMLP(2, 8, 3).state_dict()) == [f"body.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")]
