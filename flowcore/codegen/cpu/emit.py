"""Emit the `cpu` backend's source: the shared per-sample bodies (flowcore.codegen.cxx) plus thin
``extern "C" K_f32 / K_f64(begin, end, N, ein, sin, eout, sout)`` entry points that the extension's
`flowcore::run_kernel` calls from `at::parallel_for`."""
from __future__ import annotations

from ...compiler.kernel import Kernel
from ..cxx.body import HEADER_NAME, SampleBody, emit_file, file_stem, header_text

#: dtype suffix -> (storage type, accumulator type); the cpu backend builds f32 and f64
CPU_DTYPES = {"f32": ("float", "float"), "f64": ("double", "double")}


def cpu_entry_points(body: SampleBody) -> str:
    nei, nsi, neo, nso = body.counts
    out = []
    for suffix, (scalar, acc) in CPU_DTYPES.items():
        opening = f"FLOWCORE_EXPORT void {body.kernel.name}_{suffix}("
        out += [
            f"{opening}int64_t begin, int64_t end, int64_t N, const void* const* ein, const void* const* sin,",
            f"{' ' * len(opening)}void* const* eout, void* const* sout) {{",
            (f"  fc_cpu_run<{scalar}, {nei}, {nsi}, {neo}, {nso}>({body.name}<{scalar}, {acc}>, begin, end, N, "
             "ein, sin, eout, sout);"),
            "}",
        ]
    return "\n".join(out)


def emit_cpu(title: str, digest: str, kernels: list[Kernel]) -> str:
    return emit_file(title, digest, kernels, "cpu", cpu_entry_points)


def emit_sources(title: str, digest: str, kernels: list[Kernel]) -> dict[str, str]:
    """{file name: text}: the objective's ``<title>_<digest>.cpp`` and the header it includes."""
    return {f"{file_stem(title, digest)}.cpp": emit_cpu(title, digest, kernels), HEADER_NAME: header_text()}
