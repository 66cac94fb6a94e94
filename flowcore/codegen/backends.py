"""The backend registry: every code generator flowcore knows, in one tuple.

Everything that names backends asks this module: ``flowcore.compile`` (flowcore.runtime.compiled),
`flowcore.codegen.emit_sources`, the command line's ``--backend`` choices, the training config's
``backend`` (and what ``"auto"`` picks), and the benchmark's native backend per device and its
fallback. Adding a backend is one folder under flowcore/codegen/ whose ``__init__`` defines a
`Backend` record, plus one entry in `REGISTERED` (flowcore/codegen/README.md; docs/design.md).
"""
from __future__ import annotations

from . import cpu, cuda
from .base import Backend
from .torch import BACKEND as TORCH

__all__ = ["REGISTERED", "Backend", "default_for", "get", "names", "native_for", "portable"]

#: registration order is the order of every list shown to users
REGISTERED: tuple[Backend, ...] = (TORCH, cpu.BACKEND, cuda.BACKEND)


def _check(registered: tuple[Backend, ...]) -> dict[str, Backend]:
    by_name: dict[str, Backend] = {}
    for backend in registered:
        if backend.name in by_name or backend.name == "auto":  # "auto" is the training config's choice
            raise ValueError(f"backend name {backend.name!r} is registered twice or reserved")
        by_name[backend.name] = backend
    if sum(b.portable for b in registered) != 1:
        raise ValueError("exactly one registered backend must be portable (the fallback of every device)")
    return by_name


_BY_NAME = _check(REGISTERED)


def names() -> tuple[str, ...]:
    """The registered backends' names, in registration order."""
    return tuple(_BY_NAME)


def get(name: str) -> Backend:
    """The backend called `name`; an unknown name is an error that lists the registered ones."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def portable() -> Backend:
    """The backend that runs wherever torch runs (torch): every device's fallback."""
    return next(b for b in REGISTERED if b.portable)


def native_for(device_type: str) -> Backend:
    """The device's own compiled backend (cpu on "cpu", cuda on "cuda"), else the portable one."""
    return next((b for b in REGISTERED if not b.portable and device_type in b.devices), portable())


def default_for(device_type: str) -> Backend:
    """What the training config's ``backend = "auto"`` picks on `device_type` (a backend's
    `default_on`): the CUDA kernels on a GPU; on the CPU the emitted-torch backend, as fast as the C++
    one for the small 2-D nets, whose steps are GEMM- or overhead-bound. Else the portable one."""
    return next((b for b in REGISTERED if device_type in b.default_on), portable())
