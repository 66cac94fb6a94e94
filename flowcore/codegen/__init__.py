"""Code generators, one folder per backend (a printer and its config): torch, cpu, cuda."""
from __future__ import annotations


def emit_sources(backend: str, title: str, digest: str, kernels: list) -> dict[str, str]:
    """The generated source files of `kernels` for `backend`, without building anything."""
    if backend == "torch":
        from .torch import emit_module

        return {f"{digest}.py": emit_module(f"{title}, digest {digest}", kernels)}
    if backend == "cpu":
        from .cpu import emit_sources as emit
    elif backend == "cuda":
        from .cuda import emit_sources as emit
    else:
        raise ValueError(f"unknown backend {backend!r}; choose one of torch, cpu, cuda")
    return emit(title, digest, kernels)
