"""The `cuda` backend: its generated source, that it compiles with nvcc for sm_90 (no GPU needed),
and — where a GPU is visible — that it computes what the cpu and torch backends compute.

* Text (always): the CUDA file pastes the cpu file's per-sample bodies verbatim, has a kernel and
  four launchers (f32, f64, f16, bf16) per kernel, and no uncast floating constant.
* Compile (needs nvcc only): every built-in objective's forward and backward kernels (double
  backward for a few), one .cu per objective, compiled in parallel for sm_90. The extension's own
  .cu files are compiled by ``.ci/compile_cuda.py`` (they need torch's headers: ~1 min); that
  script is loaded here by path to test its commands.
* Run (needs a CUDA torch and a GPU): float64 against the cpu backend to 1e-12; float32 to the
  cpu file's float32 bound; float16 / bfloat16 (computed in float, stored rounded) to a bound of a
  few units of their storage precision; the current stream is honoured; opcheck on CUDA tensors.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from flowcore import objectives
from flowcore.codegen.cpu.emit import emit_sources as emit_cpu_sources
from flowcore.codegen.cxx.printer import double_literals
from flowcore.codegen.cuda.build import compile_only
from flowcore.codegen.cuda.emit import emit_sources
from flowcore.native.toolchain import find_nvcc


def _ci_script():
    """.ci/compile_cuda.py, the CUDA compile check (a script, not a module of flowcore)."""
    path = Path(__file__).resolve().parents[1] / ".ci" / "compile_cuda.py"
    spec = importlib.util.spec_from_file_location("compile_cuda", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compile_cuda = _ci_script()
builtin_kernels = compile_cuda.builtin_kernels

NAMES = objectives.names()
DOUBLE_BACKWARD = {"lsd", "meanflow"}
NVCC = find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (no $FLOWCORE_NVCC, $CUDA_HOME/bin/nvcc or nvcc "
                                                     "on PATH): CUDA sources cannot be compiled on this machine")
needs_gpu = pytest.mark.skipif(torch.version.cuda is None or not torch.cuda.is_available() or NVCC is None,
                               reason="CUDA runtime tests need a CUDA build of torch, a visible GPU and nvcc")


def kernels_for(name: str):
    title, digest, kernels = builtin_kernels(name, double_backward=name in DOUBLE_BACKWARD)
    return title, digest, kernels


def sample_bodies(text: str) -> dict[str, str]:
    """name -> text of each ``template ... K_sample(...) { ... }`` definition."""
    out = {}
    for match in re.finditer(r"template <typename scalar_t, typename acc_t>\nFLOWCORE_HD inline void (\w+)_sample\(",
                             text):
        end = text.index("\n}\n", match.start())
        out[match.group(1)] = text[match.start(): end + 2]
    return out


# -- text -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_cuda_text_shares_the_cpu_bodies(name):
    title, digest, kernels = kernels_for(name)
    cuda = emit_sources(title, digest, kernels)[f"{name}_{digest}.cu"]
    cpu = emit_cpu_sources(title, digest, kernels)[f"{name}_{digest}.cpp"]
    assert cuda.startswith(f"// flowcore generated code: objective `{name}`, digest {digest}; backend cuda.")
    assert not re.search(r"#include\s*<(torch|ATen|c10)", cuda)
    bodies = sample_bodies(cuda)
    assert list(bodies) == [k.name for k in kernels]
    assert bodies == sample_bodies(cpu)  # the same per-element code, verbatim
    for k in kernels:
        assert f"__global__ void {k.name}_kernel(" in cuda
        for suffix in ("f32", "f64", "f16", "bf16"):
            assert f"FLOWCORE_EXPORT int {k.name}_cuda_{suffix}(" in cuda
    assert "fc_cuda_launch<__half," in cuda and "fc_cuda_launch<__nv_bfloat16," in cuda
    assert double_literals(cuda) == []


# -- compile with nvcc (no GPU needed) ----------------------------------------------------------------
@needs_nvcc
def test_every_builtin_compiles_for_sm90(tmp_path):
    """One .cu per objective (forward + backward, double backward for a few) → a shared library."""
    jobs = {name: kernels_for(name) for name in NAMES}  # sympy work stays in this thread

    def compile_one(item):
        name, (title, digest, kernels) = item
        try:
            return name, compile_only(title, digest, kernels, ["9.0"], directory=tmp_path / name), None
        except Exception as e:  # noqa: BLE001 - collected and reported together
            return name, None, e

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(compile_one, jobs.items()))
    failures = {name: str(error) for name, _, error in results if error is not None}
    assert not failures, "\n\n".join(f"{name}:\n{msg}" for name, msg in failures.items())
    nm = shutil.which("nm")
    for name, library, _ in results:
        assert library.is_file() and library.stat().st_size > 0
        if nm:
            symbols = subprocess.run([nm, "-D", "--defined-only", str(library)], capture_output=True,
                                     text=True, check=True).stdout
            for kernel in jobs[name][2]:
                for suffix in ("f32", "f64", "f16", "bf16"):
                    assert f" {kernel.name}_cuda_{suffix}\n" in symbols
            assert "_sample" not in symbols  # only the launchers are exported


@needs_nvcc
def test_arch_flags():
    from flowcore.native.toolchain import arch_list, gencode_flags

    assert arch_list("8.0;9.0+PTX") == ["8.0", "9.0+PTX"]
    assert arch_list("Hopper") == ["9.0+PTX"]
    assert gencode_flags(["9.0+PTX", "9.0a"]) == ["-gencode=arch=compute_90,code=sm_90",
                                                   "-gencode=arch=compute_90,code=compute_90",
                                                   "-gencode=arch=compute_90a,code=sm_90a"]
    with pytest.raises(ValueError, match="cannot read"):
        arch_list("sm_90")


# -- run on a GPU -------------------------------------------------------------------------------------
@functools.cache
def built(name: str):
    from flowcore.codegen import cpu, cuda

    title, digest, kernels = kernels_for(name)
    return kernels, cpu.build(title, digest, kernels), cuda.build(title, digest, kernels)


def random_inputs(kernel, B, N, seed, dtype, device):
    g = torch.Generator().manual_seed(seed)
    element = [(torch.rand(B, N, generator=g, dtype=torch.float64) * 4 - 2) for _ in kernel.element_inputs]
    sample = [torch.rand(B, generator=g, dtype=torch.float64) for _ in kernel.sample_inputs]
    return [x.to(dtype=dtype, device=device) for x in element + sample]


# storage precision of each dtype (unit roundoff), the bound's unit
UNIT = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


@needs_gpu
@pytest.mark.parametrize("name", ["fm", "lsd", "meanflow", "psd_u"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(name, dtype):
    """Same inputs (rounded to `dtype`), reference = the cpu backend in float64. float64 to 1e-12;
    float32 to 8·u32·(N+8)·scale; f16/bf16 to 4 units of storage rounding of the scale (they compute in
    float and round each output once: the float error is far below that)."""
    kernels, cpu_lib, cuda_lib = built(name)
    B, N = 37, 203
    for kernel in kernels:
        inputs = random_inputs(kernel, B, N, 11, dtype, "cuda")
        got = cuda_lib[kernel.name](torch.empty(0, dtype=dtype, device="cuda"), B, N, *inputs)
        want = cpu_lib[kernel.name](torch.empty(0, dtype=torch.float64), B, N, *[x.double().cpu() for x in inputs])
        for a, b in zip(got, want):
            assert a.dtype == dtype and a.device.type == "cuda" and a.shape == b.shape
            scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
            if dtype == torch.float64:
                tol = 1e-12 * scale
            elif dtype == torch.float32:
                tol = 8 * UNIT[dtype] * (N + 8) * scale
            else:
                tol = 4 * UNIT[dtype] * scale + 8 * UNIT[torch.float32] * (N + 8) * scale
            err = (a.double().cpu() - b).abs().max().item() if b.numel() else 0.0
            assert err <= tol, f"{kernel.name} ({dtype}): error {err:.3g} > {tol:.3g}"


@needs_gpu
def test_cuda_runs_on_the_current_stream_and_device():
    kernels, cpu_lib, cuda_lib = built("lsd")
    kernel = kernels[1]
    B, N = 1000, 300
    inputs = random_inputs(kernel, B, N, 3, torch.float32, "cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # the inputs were written on the default stream
    with torch.cuda.stream(stream):
        outputs = cuda_lib[kernel.name](torch.empty(0, device="cuda"), B, N, *inputs)
    stream.synchronize()
    want = cpu_lib[kernel.name](torch.empty(0), B, N, *[x.cpu() for x in inputs])
    torch.testing.assert_close(outputs[0].cpu(), want[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="runs on cuda tensors"):
        cuda_lib[kernel.name](torch.empty(0), B, N, *[x.cpu() for x in inputs])


@needs_gpu
def test_opcheck_run_kernel_cuda():
    from flowcore.native.extension import load_extension

    kernels, _, cuda_lib = built("lsd")
    ops = load_extension()
    kernel = kernels[1]
    fn = cuda_lib[kernel.name]
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        inputs = random_inputs(kernel, 4, 9, 0, dtype, "cuda")
        k = len(kernel.element_inputs)
        torch.library.opcheck(ops.run_kernel.default, (fn.fns, 4, 9, torch.empty(0, dtype=dtype, device="cuda"),
                                                       inputs[:k], inputs[k:], len(kernel.element_outputs),
                                                       len(kernel.sample_outputs)))


def test_cuda_build_without_gpu_is_a_clear_error():
    if torch.version.cuda is not None and torch.cuda.is_available():
        pytest.skip("a GPU is visible: build works here")
    from flowcore.codegen import cuda

    title, digest, kernels = kernels_for("fm")
    with pytest.raises(RuntimeError, match="cuda backend needs"):
        cuda.build(title, digest, kernels)


def test_compiling_the_extension_into_a_new_keep_directory_creates_it(tmp_path, monkeypatch, capsys):
    """``python .ci/compile_cuda.py --extension --keep DIR``: nvcc writes the objects straight into
    DIR, so DIR must exist first (nvcc itself is replaced by a recorder here)."""
    cuda_build = _ci_script()  # a fresh copy: the recorder below patches its names
    keep = tmp_path / "not" / "yet"
    seen = []

    def record(command, what, cwd):
        seen.append(Path(command[command.index("-o") + 1]).parent.is_dir())

    monkeypatch.setattr(cuda_build, "find_nvcc", lambda: "nvcc")
    monkeypatch.setattr(cuda_build, "nvcc_version", lambda nvcc: "nvcc (recorder)")
    monkeypatch.setattr(cuda_build, "run_compiler", record)
    assert cuda_build.main(["--extension", "--keep", str(keep), "--arch", "9.0"]) == 0
    assert seen and all(seen), seen
    assert f"{len(seen)}/{len(seen)} CUDA sources compiled" in capsys.readouterr().out


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
def test_ci_compiles_the_new_cuda_source():
    """.ci/compile_cuda.py (``--all`` is its default) nvcc's every csrc/*.cu."""
    assert any(source.endswith("mlp_cuda.cu") for source, _ in compile_cuda.extension_compile_commands(["9.0"],
                                                                                                     Path("/tmp")))
