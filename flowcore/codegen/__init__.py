"""Code generators, one folder per backend (torch, cpu, cuda), the C++ that cpu and cuda share (cxx/),
and the registry that lists them (flowcore.codegen.backends; README.md says how to add one)."""
from __future__ import annotations

from . import backends


def emit_sources(backend: str, title: str, digest: str, kernels: list) -> dict[str, str]:
    """The generated source files of `kernels` for `backend`, without building anything."""
    return backends.get(backend).emit(title, digest, kernels)
