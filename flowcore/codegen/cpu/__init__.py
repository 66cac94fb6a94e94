"""The `cpu` backend: torch-free C++ built with g++, run through the extension's `flowcore::run_kernel`."""
from .build import build
from .emit import emit_sources

__all__ = ["build", "emit_sources"]
