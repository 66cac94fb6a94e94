"""Emit the `cuda` backend's source: the SAME per-sample bodies as the `cpu` backend, plus kernels.

Per kernel ``K``: the shared ``K_sample<scalar_t, acc_t>`` text (flowcore.codegen.cxx.body), a
``__global__ K_kernel`` (one thread per sample, grid-stride over the batch; the pointer arrays
arrive BY VALUE as parameter structs) and host launchers::

    extern "C" int K_cuda_f32(int64_t B, int64_t N, const void* const* ein, const void* const* sin,
                              void* const* eout, void* const* sout, void* stream);   // also f64, f16, bf16

returning the launch's cudaError_t (0 = success). fp16 and bf16 compute in float.
"""
from __future__ import annotations

from ...compiler.kernel import Kernel
from ..cxx.body import HEADER_NAME, SampleBody, emit_file, file_stem, header_text

#: dtype suffix -> (storage type, accumulator type)
CUDA_DTYPES = {"f32": ("float", "float"), "f64": ("double", "double"), "f16": ("__half", "float"),
               "bf16": ("__nv_bfloat16", "float")}


def cuda_entry_points(body: SampleBody) -> str:
    name = body.kernel.name
    nei, nsi, neo, nso = body.counts
    opening = f"__global__ void {name}_kernel("
    out = [
        "template <typename scalar_t, typename acc_t>",
        (f"{opening}int64_t B, int64_t N, fc_pointers<const scalar_t*, {nei}> ein, "
         f"fc_pointers<const scalar_t*, {nsi}> sin,"),
        f"{' ' * len(opening)}fc_pointers<scalar_t*, {neo}> eout, fc_pointers<scalar_t*, {nso}> sout) {{",
        "  for (int64_t b = fc_first_sample(); b < B; b += fc_sample_stride())",
        f"    {body.name}<scalar_t, acc_t>(b, N, ein.p, sin.p, eout.p, sout.p);",
        "}",
    ]
    for suffix, (scalar, acc) in CUDA_DTYPES.items():
        opening = f"FLOWCORE_EXPORT int {name}_cuda_{suffix}("
        out += [
            f"{opening}int64_t B, int64_t N, const void* const* ein, const void* const* sin,",
            f"{' ' * len(opening)}void* const* eout, void* const* sout, void* stream) {{",
            (f"  return fc_cuda_launch<{scalar}, {nei}, {nsi}, {neo}, {nso}>({name}_kernel<{scalar}, {acc}>, B, N, "
             "ein, sin, eout, sout, stream);"),
            "}",
        ]
    return "\n".join(out)


def emit_cuda(title: str, digest: str, kernels: list[Kernel]) -> str:
    return emit_file(title, digest, kernels, "cuda", cuda_entry_points)


def emit_sources(title: str, digest: str, kernels: list[Kernel]) -> dict[str, str]:
    """{file name: text}: the objective's ``<title>_<digest>.cu`` and the header it includes."""
    return {f"{file_stem(title, digest)}.cu": emit_cuda(title, digest, kernels), HEADER_NAME: header_text()}
