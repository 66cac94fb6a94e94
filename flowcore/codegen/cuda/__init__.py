"""The `cuda` backend: the cpu backend's per-sample bodies as CUDA kernels, built with nvcc, launched
through the extension's `flowcore::run_kernel` on the current stream."""
from ..base import Backend
from .build import build, compile_only, unavailable
from .emit import emit_sources

BACKEND = Backend(
    name="cuda", devices=("cuda",), emit=emit_sources, build=build, unavailable=unavailable,
    description="the cpu backend's per-sample bodies as CUDA kernels (float32/64; fp16 and bf16 computed in "
                "float), compiled by nvcc (cached), launched on the current stream",
    uses_extension=True, default_on=("cuda",), compile_only=compile_only)

__all__ = ["BACKEND", "build", "compile_only", "emit_sources"]
