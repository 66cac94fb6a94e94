"""What every backend provides: a library of callable kernels built from `Kernel`s.

A kernel callable is ``fn(like, B, N, *element_inputs, *sample_inputs) -> tuple[Tensor, ...]``:
element inputs are contiguous (B, N) tensors, sample inputs (B,); `like` fixes dtype and device
of outputs; the result is the element outputs (B, N) then the sample outputs (B,), in the
kernel's order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class KernelLibrary:
    backend: str
    functions: dict[str, Callable]
    sources: dict[str, str]  # file name -> generated source (what `flowcore compile --emit` writes)
    build_seconds: float = 0.0
    cache_hit: bool = False
    info: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> Callable:
        return self.functions[name]
