"""The `torch` backend: emitted Python over torch ops — builds instantly, runs anywhere torch runs."""
from .emit import build, emit_module, load_module

__all__ = ["build", "emit_module", "load_module"]
