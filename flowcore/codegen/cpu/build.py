"""Build the `cpu` backend: g++ on the emitted source → a cached shared library → callables.

The generated source is torch-free, so it compiles with the system C++ compiler directly (no
torch headers: a new objective builds in about a second). The shared library lives in flowcore's
build cache (flowcore.native.cache), keyed by the source text, the flags, the compiler's version
and the torch / Python versions; it is loaded with ctypes, and the addresses of its entry points
are handed, as ints, to the extension's ``flowcore::run_kernel`` op (flowcore.native.extension),
which allocates the outputs and runs the kernel over chunks of samples with ``at::parallel_for``.

Environment: ``FLOWCORE_CXX`` (else ``CXX``, else ``g++``) picks the compiler
(flowcore.native.toolchain); ``FLOWCORE_CXXFLAGS`` adds flags (part of the cache key).
"""
from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import time
from pathlib import Path

import torch

from ...compiler.kernel import Kernel
from ...native.cache import BuildCache, cache_key
from ...native.extension import load_extension
from ...native.toolchain import cxx_compiler, cxx_version, run_compiler
from ..base import KernelLibrary
from .emit import CPU_DTYPES, HEADER_NAME, emit_sources

__all__ = ["CpuKernel", "build", "compile_library", "cxx_flags", "unavailable"]

#: g++ flags for generated kernels. -fvisibility=hidden: only FLOWCORE_EXPORT entry points are
#: exported; -fno-math-errno lets sqrt inline and pure math hoist out of loops (errno is never read).
#: The two -Werror flags make any float->double promotion (silent double math in a
#: float kernel) or implicit double->float narrowing a build error.
CXX_FLAGS = ("-O3", "-fno-math-errno", "-shared", "-fPIC", "-std=c++17", "-fvisibility=hidden",
             "-Werror=double-promotion", "-Werror=float-conversion")

#: torch dtype -> entry point suffix
DTYPE_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def cxx_flags() -> list[str]:
    return list(CXX_FLAGS) + shlex.split(os.environ.get("FLOWCORE_CXXFLAGS", ""))


def unavailable() -> str | None:
    """None where the cpu backend can build here, else why not (no C++ compiler on PATH)."""
    if shutil.which(cxx_compiler()) is None:
        return f"no C++ compiler: `{cxx_compiler()}` is not on PATH (set FLOWCORE_CXX or CXX)"
    return None


def compile_library(sources: dict[str, str], directory: Path, library: str, cxx: str | None = None,
                    flags: list[str] | None = None) -> list[str]:
    """Write `sources` into `directory` and compile its .cpp file into `library` there.

    Returns the artifact names (the library and the sources, kept beside it for inspection)."""
    cxx = cxx or cxx_compiler()
    flags = cxx_flags() if flags is None else flags
    for name, text in sources.items():
        (directory / name).write_text(text)
    main = [name for name in sources if name.endswith(".cpp")]
    command = [cxx, *flags, "-I", str(directory), *main, "-o", library]
    run_compiler(command, f"{library} from {', '.join(main)}", directory)
    return [library, *sources]


class CpuKernel:
    """One built kernel: ``fn(like, B, N, *element_inputs, *sample_inputs) -> tuple[Tensor, ...]``."""

    backend = "cpu"
    device_type = "cpu"

    def __init__(self, kernel: Kernel, addresses: dict[torch.dtype, int], library: ctypes.CDLL):
        self.name = kernel.name
        self.element_inputs = tuple(s.name for s in kernel.element_inputs)
        self.sample_inputs = tuple(s.name for s in kernel.sample_inputs)
        self.element_outputs = tuple(s.name for s, _ in kernel.element_outputs)
        self.sample_outputs = tuple(s.name for s, _ in kernel.sample_outputs)
        self.addresses = addresses
        self._library = library  # keeps the shared library loaded while the callable lives
        order = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
        self.fns = [int(addresses.get(dtype, 0)) for dtype in order]
        self._op = load_extension().run_kernel

    def check(self, like: torch.Tensor, inputs: tuple) -> None:
        n_in = len(self.element_inputs) + len(self.sample_inputs)
        if len(inputs) != n_in:
            raise TypeError(f"{self.name}() takes (like, B, N, {', '.join(self.element_inputs + self.sample_inputs)}): "
                            f"{n_in} inputs, got {len(inputs)}")
        if like.dtype not in self.addresses:
            supported = ", ".join(str(d).removeprefix("torch.") for d in self.addresses)
            raise TypeError(f"flowcore {self.backend} kernel {self.name} does not support {like.dtype}; "
                            f"it supports {supported}")
        if like.device.type != self.device_type:
            raise ValueError(f"flowcore {self.backend} kernel {self.name} runs on {self.device_type} tensors; "
                             f"`like` is on {like.device}")

    def __call__(self, like: torch.Tensor, B: int, N: int, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.check(like, inputs)
        k = len(self.element_inputs)
        outputs = self._op(self.fns, B, N, like, list(inputs[:k]), list(inputs[k:]),
                           len(self.element_outputs), len(self.sample_outputs))
        return tuple(outputs)

    def __repr__(self) -> str:
        ins = ", ".join(self.element_inputs) + ("; " + ", ".join(self.sample_inputs) if self.sample_inputs else "")
        outs = ", ".join(self.element_outputs + self.sample_outputs)
        return f"<flowcore {self.backend} kernel {self.name}({ins}) -> ({outs})>"


def bind_kernels(handle: ctypes.CDLL, kernels: list[Kernel], symbol: str, suffixes: dict[torch.dtype, str],
                 kernel_class: type) -> dict:
    """``{name: kernel_class(kernel, {dtype: entry address}, handle)}``; `symbol` formats each entry
    point's name from ``name`` (the kernel's) and ``suffix`` (the dtype's, from `suffixes`)."""
    functions = {}
    for kernel in kernels:
        addresses = {dtype: ctypes.cast(getattr(handle, symbol.format(name=kernel.name, suffix=suffix)),
                                        ctypes.c_void_p).value
                     for dtype, suffix in suffixes.items()}
        functions[kernel.name] = kernel_class(kernel, addresses, handle)
    return functions


def library_name(sources: dict[str, str]) -> str:
    main = next(name for name in sources if name.endswith((".cpp", ".cu")))
    return f"lib{Path(main).stem}.so"


def build(title: str, digest: str, kernels: list[Kernel], cache: BuildCache | None = None) -> KernelLibrary:
    """Compile (or fetch from the cache) `kernels` and return their callables.

    `title` and `digest` name the objective in the generated source (see emit_sources); the
    cache key is the source text itself, so equal kernels share an entry whatever their title.
    """
    t0 = time.perf_counter()
    sources = emit_sources(title, digest, kernels)
    emit_seconds = time.perf_counter() - t0
    cxx, flags = cxx_compiler(), cxx_flags()
    version = cxx_version(cxx)
    library = library_name(sources)
    key = cache_key(sources, [cxx, *flags], {"backend": "cpu", "compiler": version})
    entry = (cache or BuildCache()).get_or_build(
        key, lambda directory: compile_library(sources, directory, library, cxx, flags),
        describe={"backend": "cpu", "objective": title, "digest": digest, "kernels": [k.name for k in kernels]})
    handle = ctypes.CDLL(str(entry.files[library]))
    functions = bind_kernels(handle, kernels, "{name}_{suffix}", DTYPE_SUFFIX, CpuKernel)
    assert set(DTYPE_SUFFIX.values()) == set(CPU_DTYPES)
    return KernelLibrary(
        backend="cpu", functions=functions, sources=sources, build_seconds=entry.build_seconds, cache_hit=entry.hit,
        info={"key": key, "library": str(entry.files[library]), "compiler": version, "flags": flags,
              "emit_seconds": emit_seconds, "header": HEADER_NAME, "handle": handle})
