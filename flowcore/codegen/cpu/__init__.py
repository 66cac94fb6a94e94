"""The `cpu` backend: torch-free C++ built with g++, run through the extension's `flowcore::run_kernel`."""
from ..base import Backend
from .build import build, unavailable
from .emit import emit_sources

BACKEND = Backend(
    name="cpu", devices=("cpu",), emit=emit_sources, build=build, unavailable=unavailable,
    description="torch-free C++ over raw pointers, compiled by the system C++ compiler (about a second, cached), "
                "run by the extension's run_kernel with at::parallel_for",
    uses_extension=True)

__all__ = ["BACKEND", "build", "emit_sources"]
