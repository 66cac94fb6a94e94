"""What every backend provides: a `Backend` record, and the `KernelLibrary` its build returns.

A kernel callable is ``fn(like, B, N, *element_inputs, *sample_inputs) -> tuple[Tensor, ...]``:
element inputs are contiguous (B, N) tensors, sample inputs (B,); `like` fixes dtype and device
of outputs; the result is the element outputs (B, N) then the sample outputs (B,), in the
kernel's order. Backends are registered in flowcore.codegen.backends (flowcore/codegen/README.md
says how to add one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ..compiler.kernel import Kernel

#: ``emit(title, digest, kernels) -> {file name: source text}``
Emit = Callable[[str, str, "list[Kernel]"], "dict[str, str]"]
#: ``build(title, digest, kernels) -> KernelLibrary``
Build = Callable[[str, str, "list[Kernel]"], "KernelLibrary"]


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


@dataclass(frozen=True)
class Backend:
    """One code generator, as the rest of flowcore sees it (docs/design.md, Backends).

    `name` is what users write (``flowcore.compile(..., backend=name)``, ``--backend``, the training
    config's ``backend``); `devices` the torch device types its kernels run on. `emit` prints the
    sources without building; `build` prints, compiles (or fetches from the cache) and loads them.
    `unavailable()` is None where the backend can build and run here, else a sentence saying why
    not (cheap: it finds compilers and devices, it builds nothing)."""

    name: str
    devices: tuple[str, ...]
    emit: Emit
    build: Build
    unavailable: Callable[[], str | None]
    description: str
    #: its kernels run through the extension's ``flowcore::run_kernel`` (which must load first)
    uses_extension: bool = False
    #: runs wherever torch runs: what a device without a usable backend of its own falls back to
    portable: bool = False
    #: devices on which the training config's ``backend = "auto"`` picks this backend
    default_on: tuple[str, ...] = ()
    #: ``compile_only(title, digest, kernels) -> library path``: builds without a device, loads nothing
    compile_only: Callable[[str, str, "list[Kernel]"], Path] | None = None

    def available(self) -> bool:
        return self.unavailable() is None
