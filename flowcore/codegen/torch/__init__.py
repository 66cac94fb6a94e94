"""The `torch` backend: emitted Python over torch ops — builds instantly, runs anywhere torch runs."""
from ..base import Backend
from .emit import build, emit_module, emit_sources, load_module


def unavailable() -> str | None:
    """Always available: it needs nothing but torch."""
    return None


BACKEND = Backend(
    name="torch", devices=("cpu", "cuda"), emit=emit_sources, build=build, unavailable=unavailable,
    description="an emitted Python module of torch ops: instant to build, no compiler, runs wherever torch runs",
    portable=True, default_on=("cpu",))

__all__ = ["BACKEND", "build", "emit_module", "emit_sources", "load_module"]
