"""The `cpu` backend (generated C++ through the extension's ``flowcore::run_kernel``) against the
`torch` backend, kernel by kernel, for every built-in objective.

Both backends print the same schedule (flowcore.compiler.schedule), so they compute the same
formulas; what differs is rounding: the order of a per-sample sum (sequential in C++, pairwise in
torch) and the association of a few products. Tolerances:

* float64: ``|cpu − torch| ≤ 1e-12 · max(1, max|torch|)`` per output. Outputs are short polynomials
  of O(1) inputs (|x| ≤ 2, times in [0, 1]) and sums of N ≤ 40 of them, so honest differences are
  ~N·eps64·scale ≈ 1e-14·scale; a wrong sign, term or index is O(1).
* float32: the cpu result in float32 against the torch result in float64 on the same (float32)
  inputs: ``≤ 4·eps32·(N + 8)·max(1, max|ref|)`` (F32_TOL = 4·eps32 ≈ 4.8e-7). Each output element
  takes a few dozen float32 roundings of terms bounded by a few times the scale, and a sum adds
  one rounding of the running total per element (≤ N·eps32·Σ|terms|). Measured over every
  built-in, forward, backward and double backward, N up to 1000: worst 0.32·eps32·(N + 8)·scale,
  so the bound has >10x margin, while one wrong term (≥ ~1/N of the scale) is far above it.
"""
from __future__ import annotations

import functools
import re
import time

import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcore import objectives
from flowcore.codegen import cpu
from flowcore.codegen.cpu.emit import emit_sources
from flowcore.codegen.cxx.printer import cxx_code, double_literals
from flowcore.codegen.torch import emit_module, load_module
from flowcore.compiler.driver import compile_program
from flowcore.compiler.kernel import ASSIGN, REDUCE, Kernel, Step, backward
from flowcore.lang.interpolants import trig
from flowcore.lang.numeric import evaluate_sympy
from flowcore.native.cache import BuildCache
from flowcore.native.extension import load_extension

F64_TOL = 1e-12
F32_TOL = 4 * 2.0**-23  # 4 eps32; see the module docstring
DOUBLE_BACKWARD = {"lsd", "esd", "meanflow", "psd_u"}
NAMES = objectives.names()


def double_backward(kernel: Kernel) -> Kernel:
    return backward(backward(kernel))


def kernels_of(name: str, interpolant=None) -> tuple[str, list[Kernel]]:
    compilation = compile_program(objectives.get(name), interpolant)
    forward = [seg.kernel for seg in compilation.program.segments if seg.kernel is not None]
    kernels = forward + [backward(k) for k in forward]
    if name in DOUBLE_BACKWARD:
        kernels += [double_backward(k) for k in forward]
    return compilation.digest, kernels


@functools.cache
def built(name: str, interpolant: str = "linear"):
    """(kernels, cpu library, torch module) of a built-in objective, built once per session."""
    digest, kernels = kernels_of(name, trig() if interpolant == "trig" else None)
    title = name if interpolant == "linear" else f"{name}_{interpolant}"
    library = cpu.build(title, digest, kernels)
    module = load_module(emit_module(title, kernels), f"torch_{title}")
    return kernels, library, module


def random_inputs(kernel: Kernel, B: int, N: int, seed: int, dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    element = [(torch.rand(B, N, generator=g, dtype=torch.float64) * 4 - 2).to(dtype) for _ in kernel.element_inputs]
    sample = [torch.rand(B, generator=g, dtype=torch.float64).to(dtype) for _ in kernel.sample_inputs]
    return element + sample


def assert_matches(kernel: Kernel, library, module, B: int, N: int, seed: int) -> None:
    fn, reference = library[kernel.name], getattr(module, kernel.name)
    for dtype in (torch.float64, torch.float32):
        inputs = random_inputs(kernel, B, N, seed, dtype)
        like = torch.empty(0, dtype=dtype)
        got = fn(like, B, N, *inputs)
        want = reference(torch.empty(0, dtype=torch.float64), B, N, *[x.double() for x in inputs])
        assert len(got) == len(want) == len(kernel.element_outputs) + len(kernel.sample_outputs)
        names = [s.name for s, _ in kernel.element_outputs + kernel.sample_outputs]
        for out_name, a, b in zip(names, got, want):
            assert a.dtype == dtype and a.shape == b.shape, f"{kernel.name}.{out_name}: {a.dtype} {a.shape} vs {b.shape}"
            scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
            tol = F64_TOL * scale if dtype == torch.float64 else F32_TOL * (N + 8) * scale
            err = (a.double() - b).abs().max().item() if b.numel() else 0.0
            assert err <= tol, f"{kernel.name}.{out_name} ({dtype}, B={B}, N={N}, seed={seed}): error {err:.3g} > {tol:.3g}"


# -- every built-in: forward, backward and (a few) double backward --------------------------------
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=6)
@given(B=st.integers(1, 7), N=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_cpu_matches_torch_backend(name, B, N, seed):
    kernels, library, module = built(name)
    for kernel in kernels:
        assert_matches(kernel, library, module, B, N, seed)


@pytest.mark.parametrize("name", ["lsd", "meanflow", "psd_m"])
def test_cpu_matches_torch_backend_trig_interpolant(name):
    """cos/sin(πτ/2) coefficients: the printer's function wrappers and folded constants."""
    kernels, library, module = built(name, "trig")
    assert any("fc_cos" in text for text in library.sources.values())
    for kernel in kernels:
        assert_matches(kernel, library, module, 3, 17, 1234)


@pytest.mark.parametrize("B,N", [(0, 5), (3, 0), (1, 1), (64, 1100)])
def test_edge_shapes_and_parallel_chunks(B, N):
    """Empty batches, empty samples (sums are 0), and a batch large enough for at::parallel_for."""
    kernels, library, module = built("lsd")
    for kernel in kernels:
        assert_matches(kernel, library, module, B, N, 7)


def test_reassigned_step_symbols_run_in_order():
    """A kernel that assigns one symbol twice runs as the torch backend runs it (in order: later
    uses see the later value); the C++ gives the redefinition a fresh name."""
    x, t, total, a = sympy.symbols("x t total a", real=True)
    kernel = Kernel(name="reassigned", element_inputs=(x,), sample_inputs=(t,), lets=(),
                    steps=(Step(total, REDUCE, x**2), Step(a, ASSIGN, total * t), Step(a, ASSIGN, a + 1)),
                    element_outputs=((sympy.Symbol("y", real=True), x * a),),
                    sample_outputs=((sympy.Symbol("loss", real=True), a * t),))
    library = cpu.build("reassigned", "r" * 16, [kernel])
    assert "const acc_t a_ = a + acc_t(1);" in library.sources["reassigned_rrrrrrrrrrrrrrrr.cpp"]
    module = load_module(emit_module("reassigned", [kernel]), "reassigned")
    assert_matches(kernel, library, module, 4, 11, 3)
    assert_matches(kernel, library, Interpreter([kernel]), 4, 11, 3)


# -- a hand-made kernel covering the printer: functions, rationals, pi, powers, odd names ----------
def custom_kernel(name: str = "custom_mix", constant: float = 0.375) -> Kernel:
    R = sympy.Rational
    x, y = sympy.symbols("x y", real=True)
    gamma, t, sin_, j = sympy.symbols("gamma t sin j", real=True)  # names C++ code must not clash with
    sq, dt = sympy.symbols("sqnorm0 dot1", real=True)
    body = (sympy.exp(-x) * sympy.cos(sympy.pi * t / 2) + sympy.sqrt(y**2 + 1) / 3
            + sympy.log(1 + x**2) * sympy.tanh(y) * gamma ** R(3, 2) + sympy.sin(sin_ * x) / (2 + y**2))
    steps = (Step(sq, REDUCE, body**2), Step(dt, REDUCE, x * y * j),
             Step(sympy.Symbol("w", real=True), ASSIGN, sympy.Float(constant) * sq / (1 + sq) + dt**3 / 7))
    w = steps[2].symbol
    return Kernel(
        name=name, element_inputs=(x, y), sample_inputs=(gamma, t, sin_, j), lets=(), steps=steps,
        element_outputs=((sympy.Symbol("b", real=True), w * x + sympy.atan(y) + y**4 / (1 + x**2)),),
        sample_outputs=((sympy.Symbol("loss", real=True), R(2, 3) * w + sympy.erf(t) * sympy.E),),
        no_grad_inputs=frozenset({t, j}))


class Interpreter:
    """A kernel's semantics run directly (steps in order, sums over the element axis), with
    flowcore.lang.numeric: independent of the schedule and of the torch backend's printer."""

    def __init__(self, kernels: list[Kernel]):
        self.kernels = {k.name: k for k in kernels}

    def __getattr__(self, name: str):
        kernel = self.kernels[name]

        def run(like, B, N, *inputs):
            full = torch.empty(B, N, dtype=torch.float64)
            values = dict(zip(kernel.element_inputs, inputs))
            values.update({sym: x.reshape(B, 1) for sym, x in zip(kernel.sample_inputs, inputs[len(kernel.element_inputs):])})
            for step in kernel.steps:
                value = evaluate_sympy(kernel.substituted(step.expr), values, full)
                values[step.symbol] = value.sum(1, keepdim=True) if step.kind == REDUCE else value[:, :1]
            out = [evaluate_sympy(kernel.substituted(e), values, full) for _, e in kernel.element_outputs]
            return tuple(out + [evaluate_sympy(kernel.substituted(e), values, full)[:, 0] for _, e in kernel.sample_outputs])

        return run


@settings(max_examples=8)
@given(B=st.integers(1, 6), N=st.integers(1, 30), seed=st.integers(0, 2**31 - 1))
def test_custom_kernel_functions_match(B, N, seed):
    """Against the interpreter, not the torch backend: the torch printer writes ``a/(b*b)`` as
    ``a/b*b`` and ``sqrt(2)`` as ``torch.sqrt(2)`` (reported), which this kernel exercises."""
    kernels, library, _ = built_custom()
    for kernel in kernels:
        assert_matches(kernel, library, Interpreter(kernels), B, N, seed)


@functools.cache
def built_custom():
    k = custom_kernel()
    kernels = [k, backward(k), double_backward(k)]
    return kernels, cpu.build("custom_mix", "0" * 16, kernels), Interpreter(kernels)


# -- generated text ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_generated_text(name):
    """Header names objective + digest; one per-sample body and f32/f64 entry points per kernel;
    every floating constant cast to acc_t (a float kernel has no double literal)."""
    digest, kernels = kernels_of(name)
    sources = emit_sources(name, digest, kernels)
    text = sources[f"{name}_{digest}.cpp"]
    assert text.startswith(f"// flowcore generated code: objective `{name}`, digest {digest}; backend cpu.")
    assert "flowcore_kernel.h" in sources and '#include "flowcore_kernel.h"' in text
    assert not re.search(r"#include\s*<(torch|ATen|c10)", text)
    bodies = re.findall(r"FLOWCORE_HD inline void (\w+)_sample\(", text)
    assert bodies == [k.name for k in kernels]
    for k in kernels:
        assert len(re.findall(rf"FLOWCORE_EXPORT void {k.name}_f(32|64)\(", text)) == 2
    assert double_literals(text) == []
    for banned in ("M_PI", "std::pow", "std::exp", "1.0/", "pow(", " double "):
        assert banned not in text.replace("fc_pow(", ""), banned


def test_no_double_literals_in_float_code():
    text = emit_sources("custom_mix", "0" * 16, built_custom()[0])["custom_mix_0000000000000000.cpp"]
    assert double_literals(text) == []
    assert "acc_t(1.5707963267948966)" in text  # pi/2 folded, cast
    assert double_literals("y = x * 0.5;") == ["0.5"] and double_literals("acc_t(0.5)*x + acc_t(2)") == []


def test_printer_casts_every_constant():
    x, t = sympy.symbols("x t", real=True)
    assert cxx_code(x / 2) == "acc_t(0.5)*x"
    assert cxx_code(x / 3) == "x/acc_t(3)"
    assert cxx_code(x**2) == "(x*x)"
    assert cxx_code(x**-2) == "(acc_t(1)/(x*x))"
    assert cxx_code(sympy.sqrt(x)) == "fc_sqrt(x)"
    assert cxx_code(sympy.cos(sympy.pi * t / 2)) == "fc_cos(acc_t(1.5707963267948966)*t)"
    assert cxx_code(sympy.Float(1e-3) * sympy.exp(x)) == "acc_t(0.001)*fc_exp(x)"
    with pytest.raises(NotImplementedError, match="besselj"):
        cxx_code(sympy.besselj(0, x))


# -- the extension op -------------------------------------------------------------------------------
def test_opcheck_run_kernel():
    kernels, library, _ = built("lsd")
    ops = load_extension()
    for kernel in (kernels[1], kernels[len(kernels) // 2 + 1]):  # a forward loss and a backward kernel
        fn = library[kernel.name]
        for dtype in (torch.float32, torch.float64):
            B, N = 3, 5
            inputs = random_inputs(kernel, B, N, 0, dtype)
            k = len(kernel.element_inputs)
            args = (fn.fns, B, N, torch.empty(0, dtype=dtype), inputs[:k], inputs[k:],
                    len(kernel.element_outputs), len(kernel.sample_outputs))
            torch.library.opcheck(ops.run_kernel.default, args)


def test_clear_errors():
    kernels, library, _ = built("lsd")
    kernel = kernels[1]  # lsd_t0_loss(net0, x0, x1) -> loss
    fn = library[kernel.name]
    B, N = 2, 3
    inputs = random_inputs(kernel, B, N, 0, torch.float64)
    with pytest.raises(TypeError, match="does not support torch.float16"):
        fn(torch.empty(0, dtype=torch.float16), B, N, *[x.half() for x in inputs])
    with pytest.raises(TypeError, match="3 inputs, got 2"):
        fn(torch.empty(0, dtype=torch.float64), B, N, *inputs[:2])
    with pytest.raises(RuntimeError, match="has dtype Float but the kernel runs in Double"):
        fn(torch.empty(0, dtype=torch.float64), B, N, inputs[0].float(), *inputs[1:])
    with pytest.raises(RuntimeError, match="expected"):
        fn(torch.empty(0, dtype=torch.float64), B, N + 1, *inputs)
    # the shape, not only the element count: a transposed (N, B) element input is refused
    with pytest.raises(RuntimeError, match=r"element input 0 has shape \[3, 2\]; expected \(B, N\) = \(2, 3\)"):
        fn(torch.empty(0, dtype=torch.float64), B, N, inputs[0].t().contiguous(), *inputs[1:])
    # non-contiguous inputs are accepted (made contiguous)
    transposed = [x.t().contiguous().t() for x in inputs]
    assert torch.equal(fn(torch.empty(0, dtype=torch.float64), B, N, *transposed)[0],
                       fn(torch.empty(0, dtype=torch.float64), B, N, *inputs)[0])


# -- build and cache --------------------------------------------------------------------------------
def test_fresh_objective_build_is_cached(tmp_path, capsys):
    cache = BuildCache(tmp_path / "cache")
    constant = 0.125 + time.time_ns() % 1000 / 4096  # a source no earlier run has built
    k = custom_kernel(name="fresh_kernel", constant=constant)
    kernels = [k, backward(k)]
    t0 = time.perf_counter()
    first = cpu.build("fresh", "f" * 16, kernels, cache=cache)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = cpu.build("fresh", "f" * 16, kernels, cache=cache)
    warm = time.perf_counter() - t0
    assert not first.cache_hit and first.build_seconds > 0
    assert second.cache_hit and second.build_seconds == 0.0
    assert first.info["library"] == second.info["library"]
    with capsys.disabled():
        print(f"\n[cpu backend] fresh objective ({len(kernels)} kernels): cold build {cold:.2f}s "
              f"(compiler {first.build_seconds:.2f}s), warm {warm:.3f}s")
    for kernel in kernels:
        assert_matches(kernel, second, Interpreter(kernels), 3, 9, 5)


def test_torch_compile_fullgraph_dynamic():
    """The fake kernel lets torch.compile trace a cpu kernel call without a graph break, with
    dynamic B and N (the op's B and N are SymInts)."""
    kernels, library, _ = built("lsd")
    kernel = next(k for k in kernels if k.name == "lsd_t1_loss")
    fn = library[kernel.name]

    def loss(net1, net1_d0, net2, t, s):
        B, N = net1.shape
        (per_sample,) = fn(net1, B, N, net1, net1_d0, net2, t, s)
        return per_sample.sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager", dynamic=True)
    for B, N in [(4, 6), (7, 3)]:
        args = random_inputs(kernel, B, N, B, torch.float32)
        torch.testing.assert_close(compiled(*args), loss(*args))


def test_stale_ahead_of_time_extension_is_detected(tmp_path):
    """flowcore._C carries FLOWCORE_SOURCES_HASH=<digest of csrc/ + torch version>; a mismatch is
    seen by reading the file, before anything is loaded."""
    from flowcore.native import extension

    digest = extension.sources_digest()
    assert re.fullmatch(r"[0-9a-f]{16}", digest) and (extension.csrc_dir() / "flowcore_ops.cpp").is_file()
    library = tmp_path / "_C.so"
    library.write_bytes(b"\x7fELF...FLOWCORE_SOURCES_HASH=" + digest.encode() + b"\x00...")
    assert extension._aot_staleness(library) is None
    library.write_bytes(b"\x7fELF...FLOWCORE_SOURCES_HASH=0123456789abcdef\x00...")
    assert "other extension sources or another torch" in extension._aot_staleness(library)
    library.write_bytes(b"\x7fELF... no marker")
    assert extension._aot_staleness(library) is None
