"""Build the `cuda` backend: nvcc on the emitted source → a cached shared library → callables.

Like the cpu backend, the generated source is torch-free, so nvcc compiles it on its own (seconds,
no torch headers) into a shared library (CUDA runtime linked statically) that lives in flowcore's
build cache; its host launchers ``K_cuda_<dtype>`` are passed by address to the extension's
``flowcore::run_kernel`` (CUDA dispatch), which launches them on the current torch stream.

* `compile_only(title, digest, kernels, arch_list)` needs nvcc only (no GPU, no CUDA torch):
  what CI uses (``.ci/compile_cuda.py``) to check that every CUDA source compiles.
* `build(...)` needs a CUDA torch and a visible GPU, and says so clearly otherwise.

nvcc and the architectures come from flowcore.native.toolchain (``FLOWCORE_NVCC``,
``TORCH_CUDA_ARCH_LIST``; without it, the visible GPUs, or "9.0" where there is none);
``FLOWCORE_NVCCFLAGS`` adds flags.
"""
from __future__ import annotations

import ctypes
import os
import shlex
import time
from pathlib import Path

import torch

from ...compiler.kernel import Kernel
from ...native.cache import BuildCache, cache_key
from ...native.extension import cuda_arch_list, extension_info, has_device_kernels, load_extension
from ...native.toolchain import CompilerError, find_nvcc, gencode_flags, nvcc_version, run_compiler
from ..base import KernelLibrary
from ..cpu.build import CpuKernel, bind_kernels, library_name
from .emit import CUDA_DTYPES, emit_sources

__all__ = ["CudaKernel", "build", "compile_library", "compile_only", "nvcc_flags", "unavailable"]

NVCC_FLAGS = ("-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden")
DTYPE_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16"}


def resolve_archs(archs: list[str] | str | None) -> list[str]:
    """A list as given, else the arch list of a string (or of the environment and GPUs for None)."""
    return cuda_arch_list(archs) if archs is None or isinstance(archs, str) else list(archs)


def nvcc_flags(archs: list[str]) -> list[str]:
    return list(NVCC_FLAGS) + gencode_flags(archs) + shlex.split(os.environ.get("FLOWCORE_NVCCFLAGS", ""))


def _require_nvcc() -> str:
    nvcc = find_nvcc()
    if nvcc is None:
        raise CompilerError("flowcore's cuda backend needs nvcc: none at $FLOWCORE_NVCC, $CUDA_HOME/bin or on "
                            "PATH (install the CUDA toolkit, or use the cpu or torch backend)")
    return nvcc


def compile_library(sources: dict[str, str], directory: Path, library: str, nvcc: str, flags: list[str]) -> list[str]:
    """Write `sources` into `directory` and nvcc its .cu file into the shared library `library`."""
    for name, text in sources.items():
        (directory / name).write_text(text)
    main = [name for name in sources if name.endswith(".cu")]
    run_compiler([nvcc, *flags, "-I", str(directory), *main, "-o", library], f"{library} from {', '.join(main)}",
                 directory)
    return [library, *sources]


def _build_entry(title: str, digest: str, kernels: list[Kernel], archs: list[str], cache: BuildCache | None):
    sources = emit_sources(title, digest, kernels)
    nvcc = _require_nvcc()
    flags = nvcc_flags(archs)
    library = library_name(sources)
    key = cache_key(sources, [nvcc, *flags], {"backend": "cuda", "compiler": nvcc_version(nvcc)})
    entry = (cache or BuildCache()).get_or_build(
        key, lambda directory: compile_library(sources, directory, library, nvcc, flags),
        describe={"backend": "cuda", "objective": title, "digest": digest, "arch": archs,
                  "kernels": [k.name for k in kernels]})
    return sources, library, key, entry


def compile_only(title: str, digest: str, kernels: list[Kernel], arch_list: list[str] | str | None = None,
                 directory: str | os.PathLike | None = None, cache: BuildCache | None = None) -> Path:
    """Compile `kernels` for `arch_list` (default: flowcore.native.extension.cuda_arch_list) and return
    the shared library's path.

    Needs nvcc only. With `directory` the sources and the library are written there (no cache);
    otherwise the build cache is used."""
    archs = resolve_archs(arch_list)
    if directory is not None:
        sources = emit_sources(title, digest, kernels)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        library = library_name(sources)
        compile_library(sources, directory, library, _require_nvcc(), nvcc_flags(archs))
        return directory / library
    _, library, _, entry = _build_entry(title, digest, kernels, archs, cache)
    return entry.files[library]


class CudaKernel(CpuKernel):
    """One built CUDA kernel: ``fn(like, B, N, *element_inputs, *sample_inputs)`` on CUDA tensors,
    launched on the current stream; float32, float64, float16 and bfloat16 (the last two in float)."""

    backend = "cuda"
    device_type = "cuda"


def _runtime_problem() -> str | None:
    """Why this process cannot run CUDA kernels (no CUDA torch, no GPU), or None."""
    if torch.version.cuda is None:
        return (f"flowcore's cuda backend needs a CUDA build of torch; this torch ({torch.__version__}) "
                "has no CUDA. Use the cpu or torch backend.")
    if not torch.cuda.is_available():
        return ("flowcore's cuda backend needs a visible GPU; torch.cuda.is_available() is False. "
                "Use the cpu or torch backend (or compile_only() to just check the source compiles).")
    return None


def unavailable() -> str | None:
    """None where the cuda backend can build and run here, else why not (no CUDA torch, GPU or nvcc)."""
    if find_nvcc() is None:
        return "no nvcc: none at $FLOWCORE_NVCC, $CUDA_HOME/bin or on PATH"
    return _runtime_problem()


def build(title: str, digest: str, kernels: list[Kernel], cache: BuildCache | None = None,
          arch_list: list[str] | str | None = None) -> KernelLibrary:
    """Compile (or fetch from the cache) `kernels` for the visible GPUs and return their callables."""
    problem = _runtime_problem()
    if problem is not None:
        raise RuntimeError(problem)
    load_extension()
    if not has_device_kernels("run_kernel", "cuda"):
        raise RuntimeError(
            f"flowcore's extension was loaded without its CUDA launcher ({extension_info().get('how')} build; nvcc "
            "was missing when it was built?). Reinstall flowcore with nvcc available, or set "
            "FLOWCORE_JIT_EXTENSION=1 to build it just in time here.")
    archs = resolve_archs(arch_list)
    t0 = time.perf_counter()
    sources, library, key, entry = _build_entry(title, digest, kernels, archs, cache)
    handle = ctypes.CDLL(str(entry.files[library]))
    functions = bind_kernels(handle, kernels, "{name}_cuda_{suffix}", DTYPE_SUFFIX, CudaKernel)
    assert set(DTYPE_SUFFIX.values()) == set(CUDA_DTYPES)
    return KernelLibrary(
        backend="cuda", functions=functions, sources=sources, build_seconds=entry.build_seconds, cache_hit=entry.hit,
        info={"key": key, "library": str(entry.files[library]), "arch": archs, "handle": handle,
              "seconds": time.perf_counter() - t0})
