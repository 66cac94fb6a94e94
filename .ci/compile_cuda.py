#!/usr/bin/env python
"""CI: compile every CUDA source with nvcc (no GPU needed) — the extension's csrc/*.cu (against
torch's headers) and the generated kernels of every built-in objective (forward, backward and double
backward, one .cu per objective). One line per file with its time; exit status 1 if any fails, 2 if
nvcc is missing. Architectures: ``--arch``, else TORCH_CUDA_ARCH_LIST, else 9.0 (set here when unset).

    python .ci/compile_cuda.py                     # everything (what .ci/run does)
    python .ci/compile_cuda.py --objective lsd     # one objective's kernels
    python .ci/compile_cuda.py --extension --keep DIR -j 8 --arch "8.0;9.0+PTX"

A script rather than a module of flowcore: it checks the sources, it is no part of the library.
nvcc, its flags and the architectures come from flowcore.native.toolchain, the same as the cuda
backend's and the extension's builds use.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flowcore.native.toolchain import CompilerError, find_nvcc, gencode_flags, nvcc_toolkit, nvcc_version, run_compiler


def builtin_kernels(name: str, double_backward: bool = True):
    """(title, digest, kernels) of a built-in objective: forward, backward (and double backward)."""
    from flowcore import objectives
    from flowcore.compiler.driver import compile_program
    from flowcore.compiler.kernel import backward

    compilation = compile_program(objectives.get(name))
    forward = [seg.kernel for seg in compilation.program.segments if seg.kernel is not None]
    kernels = forward + [backward(k) for k in forward]
    if double_backward:
        kernels += [backward(backward(k)) for k in forward]
    return name, compilation.digest, kernels


def extension_compile_commands(archs: list[str], out_dir: Path) -> list[tuple[str, list[str]]]:
    """nvcc commands compiling (-c, no link) each of the extension's .cu files against torch's headers."""
    import torch
    from torch.utils import cpp_extension

    from flowcore.native.extension import csrc_dir

    nvcc = find_nvcc()
    if nvcc is None:
        raise CompilerError("compiling the extension's CUDA sources needs nvcc: none at $FLOWCORE_NVCC, "
                            "$CUDA_HOME/bin or on PATH")
    home = nvcc_toolkit(nvcc)
    includes = [p for p in cpp_extension.include_paths("cuda") if Path(p).is_dir()]
    if home:
        includes.append(str(Path(home) / "include"))
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    flags = ["-O3", "-std=c++20", "-Xcompiler", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
             *cpp_extension.COMMON_NVCC_FLAGS, *gencode_flags(archs)]
    commands = []
    root = csrc_dir()
    for source in sorted(root.glob("*.cu")):
        out = out_dir / f"{source.stem}.o"
        commands.append((str(source), [nvcc, *flags, *[f"-I{p}" for p in includes], f"-I{root}", "-c", str(source),
                                       "-o", str(out)]))
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python .ci/compile_cuda.py",
                                     description="Compile flowcore's CUDA sources with nvcc (no GPU needed).")
    parser.add_argument("--all", action="store_true",
                        help="the extension's .cu files and every built-in objective (the default)")
    parser.add_argument("--extension", action="store_true", help="the extension's .cu files")
    parser.add_argument("--objective", action="append", default=[], help="a built-in objective (repeatable)")
    parser.add_argument("--arch", default=None,
                        help="architectures, as TORCH_CUDA_ARCH_LIST (default: 9.0 without a GPU)")
    parser.add_argument("--jobs", "-j", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    parser.add_argument("--keep", default=None, help="write sources and libraries to this directory")
    args = parser.parse_args(argv)
    everything = args.all or not (args.extension or args.objective)

    from flowcore import objectives
    from flowcore.codegen.cpu.build import library_name
    from flowcore.codegen.cuda.build import compile_library, nvcc_flags
    from flowcore.codegen.cuda.emit import emit_sources
    from flowcore.native.extension import cuda_arch_list

    archs = cuda_arch_list(args.arch)
    nvcc = find_nvcc()
    if nvcc is None:
        print("flowcore: nvcc not found (set CUDA_HOME or FLOWCORE_NVCC, or put nvcc on PATH)", file=sys.stderr)
        return 2
    print(f"flowcore: compiling CUDA sources with {nvcc_version(nvcc)} for {';'.join(archs)}", flush=True)
    names = list(objectives.names()) if everything else args.objective
    keep = Path(args.keep) if args.keep else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)  # nvcc writes the extension's objects straight into it
    tmp = tempfile.TemporaryDirectory(prefix="flowcore-cu-")
    root = keep or Path(tmp.name)
    jobs: list = []
    if everything or args.extension:
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
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    sys.exit(main())
