"""The `cuda` backend: the cpu backend's per-sample bodies as CUDA kernels, built with nvcc, launched
through the extension's `flowcore::run_kernel` on the current stream."""
from .build import build, compile_only
from .emit import emit_sources

__all__ = ["build", "compile_only", "emit_sources"]
