"""Build the `cuda` backend: nvcc on the emitted source → a cached shared library → callables.

Like the cpu backend, the generated source is torch-free, so nvcc compiles it on its own (seconds,
no torch headers) into a shared library (CUDA runtime linked statically) that lives in flowcore's
build cache; its host launchers ``K_cuda_<dtype>`` are passed by address to the extension's
``flowcore::run_kernel`` (CUDA dispatch), which launches them on the current torch stream.

* `compile_only(title, digest, kernels, arch_list)` needs nvcc only (no GPU, no CUDA torch):
  what CI uses to check that every CUDA source compiles.
* `build(...)` needs a CUDA torch and a visible GPU, and says so clearly otherwise.
* ``python -m flowcore.codegen.cuda.build --all`` compiles the extension's .cu files and the
  generated kernels of every built-in objective, one line per file with its time; exit status 1
  if any fails.

Architectures come from ``TORCH_CUDA_ARCH_LIST`` ("8.0;9.0+PTX", "9.0a", "Hopper", "native"); when
it is unset: the visible GPUs' capabilities, or "9.0" where there is no GPU. ``FLOWCORE_NVCC``
picks nvcc (else ``$CUDA_HOME/bin/nvcc``, else ``nvcc`` on PATH); ``FLOWCORE_NVCCFLAGS`` adds flags.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ...compiler.kernel import Kernel
from ...runtime.cache import BuildCache, cache_key
from ..base import KernelLibrary
from ..cpu.build import CpuKernel, KernelBuildError, bind_kernels, library_name, run_compiler
from .emit import CUDA_DTYPES, emit_sources

__all__ = [
    "CudaKernel",
    "arch_list",
    "build",
    "compile_only",
    "find_nvcc",
    "gencode_flags",
    "main",
    "nvcc_flags",
]

DEFAULT_ARCH = "9.0"
NVCC_FLAGS = ("-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden")
DTYPE_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16"}
_NAMED_ARCHES = {  # as torch.utils.cpp_extension names them
    "Volta": "7.0+PTX", "Turing": "7.5+PTX", "Ampere": "8.0;8.6+PTX", "Ada": "8.9+PTX", "Hopper": "9.0+PTX",
    "Blackwell": "10.0;10.3;12.0;12.1+PTX",
}


def find_nvcc() -> str | None:
    """nvcc's path: ``FLOWCORE_NVCC``, ``$CUDA_HOME/bin/nvcc`` (or CUDA_PATH), or ``nvcc`` on PATH."""
    if os.environ.get("FLOWCORE_NVCC"):
        return shutil.which(os.environ["FLOWCORE_NVCC"])
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


@functools.cache
def nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    return f"{nvcc}: {lines[-1] if lines else 'unknown version'}"


@functools.cache
def cuda_home(nvcc: str) -> str | None:
    """The CUDA toolkit root of `nvcc` (nvcc may be a wrapper script outside the toolkit)."""
    out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True, check=False)
    match = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, flags=re.MULTILINE)
    return str(Path(match.group(1).strip()).resolve()) if match else None


def arch_list(spec: str | None = None) -> list[str]:
    """Architectures as ``["8.0", "9.0+PTX"]``: from `spec`, else ``TORCH_CUDA_ARCH_LIST``, else the
    visible GPUs (the newest one also as PTX), else ``9.0``."""
    spec = spec if spec is not None else os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    spec = spec.strip()
    if not spec or spec == "native":
        if torch.cuda.is_available() and torch.cuda.device_count():
            caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
            archs = [f"{major}.{minor}" for major, minor in caps]
            archs[-1] += "+PTX"
            return archs
        return [DEFAULT_ARCH]
    for name, value in _NAMED_ARCHES.items():
        spec = spec.replace(name, value)
    archs = [a for a in re.split(r"[;\s,]+", spec) if a]
    for arch in archs:
        if not re.fullmatch(r"\d+\.\d+[af]?(\+PTX)?", arch):
            raise ValueError(f"TORCH_CUDA_ARCH_LIST: cannot read the architecture {arch!r} (in {spec!r}); "
                             "write e.g. '8.0;9.0+PTX' or '9.0a'")
    return archs


def resolve_archs(archs: list[str] | str | None) -> list[str]:
    """A list as given, else `arch_list(spec)` of a string (or of the environment for None)."""
    return arch_list(archs) if archs is None or isinstance(archs, str) else list(archs)


def gencode_flags(archs: list[str]) -> list[str]:
    """nvcc -gencode flags: SASS for each arch, plus PTX for those marked +PTX."""
    flags = []
    for arch in archs:
        base = arch.removesuffix("+PTX")
        number = base.replace(".", "")
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{number},code=compute_{number}")
    return flags


def nvcc_flags(archs: list[str]) -> list[str]:
    return list(NVCC_FLAGS) + gencode_flags(archs) + shlex.split(os.environ.get("FLOWCORE_NVCCFLAGS", ""))


def _require_nvcc() -> str:
    nvcc = find_nvcc()
    if nvcc is None:
        raise KernelBuildError("flowcore's cuda backend needs nvcc: none at $FLOWCORE_NVCC, $CUDA_HOME/bin or on "
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
    """Compile `kernels` for `arch_list` (default: see `arch_list()`) and return the shared library's path.

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


def build(title: str, digest: str, kernels: list[Kernel], cache: BuildCache | None = None,
          arch_list: list[str] | str | None = None) -> KernelLibrary:
    """Compile (or fetch from the cache) `kernels` for the visible GPUs and return their callables."""
    if torch.version.cuda is None:
        raise RuntimeError(f"flowcore's cuda backend needs a CUDA build of torch; this torch ({torch.__version__}) "
                           "has no CUDA. Use the cpu or torch backend.")
    if not torch.cuda.is_available():
        raise RuntimeError("flowcore's cuda backend needs a visible GPU; torch.cuda.is_available() is False. "
                           "Use the cpu or torch backend (or compile_only() to just check the source compiles).")
    from ...runtime.extension import extension_info, load_extension
    load_extension()
    if not torch._C._dispatch_has_kernel_for_dispatch_key("flowcore::run_kernel", "CUDA"):
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


# -- CI: compile every CUDA source ----------------------------------------------------------------
def builtin_kernels(name: str, double_backward: bool = True):
    """(title, digest, kernels) of a built-in objective: forward, backward (and double backward)."""
    from ... import objectives
    from ...compiler.driver import compile_program
    from ...compiler.kernel import backward

    compilation = compile_program(objectives.get(name))
    forward = [seg.kernel for seg in compilation.program.segments if seg.kernel is not None]
    kernels = forward + [backward(k) for k in forward]
    if double_backward:
        kernels += [backward(backward(k)) for k in forward]
    return name, compilation.digest, kernels


def extension_compile_commands(archs: list[str], out_dir: Path) -> list[tuple[str, list[str]]]:
    """nvcc commands compiling (-c, no link) each of the extension's .cu files against torch's headers."""
    from torch.utils import cpp_extension

    from ...runtime.extension import csrc_dir

    nvcc = _require_nvcc()
    home = cuda_home(nvcc)
    includes = [p for p in cpp_extension.include_paths("cuda") if Path(p).is_dir()]
    if home:
        includes.append(str(Path(home) / "include"))
    flags = ["-O3", "-std=c++20", "-Xcompiler", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
             *cpp_extension.COMMON_NVCC_FLAGS, *gencode_flags(archs)]
    commands = []
    root = csrc_dir()
    for source in sorted(root.glob("*.cu")):
        out = out_dir / f"{source.stem}.o"
        commands.append((str(source), [nvcc, *flags, *[f"-I{p}" for p in includes], f"-I{root}", "-c", str(source),
                                       "-o", str(out)]))
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowcore.codegen.cuda.build",
                                     description="Compile flowcore's CUDA sources with nvcc (no GPU needed).")
    parser.add_argument("--all", action="store_true", help="the extension's .cu files and every built-in objective")
    parser.add_argument("--extension", action="store_true", help="the extension's .cu files")
    parser.add_argument("--objective", action="append", default=[], help="a built-in objective (repeatable)")
    parser.add_argument("--arch", default=None, help="architectures, as TORCH_CUDA_ARCH_LIST (default: 9.0 without a GPU)")
    parser.add_argument("--jobs", "-j", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    parser.add_argument("--keep", default=None, help="write sources and libraries to this directory")
    args = parser.parse_args(argv)
    if not (args.all or args.extension or args.objective):
        parser.error("say what to compile: --all, --extension or --objective NAME")

    from ... import objectives

    archs = arch_list(args.arch)
    nvcc = find_nvcc()
    if nvcc is None:
        print("flowcore: nvcc not found (set CUDA_HOME or FLOWCORE_NVCC, or put nvcc on PATH)", file=sys.stderr)
        return 2
    print(f"flowcore: compiling CUDA sources with {nvcc_version(nvcc)} for {';'.join(archs)}", flush=True)
    names = list(objectives.names()) if args.all else args.objective
    keep = Path(args.keep) if args.keep else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)  # nvcc writes the extension's objects straight into it
    tmp = tempfile.TemporaryDirectory(prefix="flowcore-cu-")
    root = keep or Path(tmp.name)
    jobs: list = []
    if args.all or args.extension:
        for source, command in extension_compile_commands(archs, root):
            jobs.append((f"extension {Path(source).name}", lambda c=command: run_compiler(c, c[-3], root)))
    flags = nvcc_flags(archs)
    for name in names:  # emitting (sympy) stays in this thread; only nvcc runs in parallel
        title, digest, kernels = builtin_kernels(name)
        sources = emit_sources(title, digest, kernels)
        directory = root / name
        directory.mkdir(parents=True, exist_ok=True)
        jobs.append((f"objective {name} ({next(iter(sources))}, {len(kernels)} kernels)",
                     lambda s=sources, d=directory: compile_library(s, d, library_name(s), nvcc, flags)))

    def timed(job):
        label, run = job
        t0 = time.perf_counter()
        try:
            run()
            return label, time.perf_counter() - t0, None
        except Exception as e:  # noqa: BLE001 - reported per file
            return label, time.perf_counter() - t0, e

    failures = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for label, seconds, error in pool.map(timed, jobs):
            print(f"{'ok  ' if error is None else 'FAIL'} {seconds:7.2f}s  {label}", flush=True)
            if error is not None:
                failures += 1
                print(f"{error}", file=sys.stderr, flush=True)
    tmp.cleanup()
    print(f"flowcore: {len(jobs) - failures}/{len(jobs)} CUDA sources compiled", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
