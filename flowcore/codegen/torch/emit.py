"""Emit a readable Python module of torch functions, one per kernel (forward and backward).

A kernel function is called as ``fn(like, B, N, *element_inputs, *sample_inputs)`` with element
inputs shaped (B, N) and sample inputs (B,); `like` gives the dtype and device of constant outputs.
It returns the element outputs (B, N), then the sample outputs (B,). Per-sample values are kept as
(B, 1) columns inside, so they broadcast against (B, N).
"""
from __future__ import annotations

import time
from types import ModuleType

from ...compiler.kernel import Kernel
from ..base import KernelLibrary
from ...compiler.schedule import Assign, Loop, schedule
from .printer import torch_code


def emit_function(kernel: Kernel) -> str:
    plan = schedule(kernel)
    args = ", ".join(["like", "B", "N"] + [s.name for s in kernel.element_inputs + kernel.sample_inputs])
    lines = [f"def {kernel.name}({args}):"]
    for sym in kernel.sample_inputs:
        lines.append(f"    {sym.name} = {sym.name}.reshape(B, 1)")
    defined: set = set()  # vectorized code computes a temporary once, whichever loop first needs it
    for phase in plan.phases:
        if isinstance(phase, Assign):
            lines += [f"    {sym.name} = {torch_code(expr)}" for sym, expr in phase.statements]
        else:
            assert isinstance(phase, Loop)
            lines += [f"    {sym.name} = {torch_code(expr)}" for sym, expr in phase.temps if sym not in defined]
            defined.update(sym for sym, _ in phase.temps)
            lines += [f"    {sym.name} = _full({torch_code(expr)}, like, B, N).sum(1, keepdim=True)"
                      for sym, expr in phase.sums]
            lines += [f"    {sym.name} = _full({torch_code(expr)}, like, B, N)" for sym, expr in phase.outputs]
    for sym, expr in plan.sample_outputs:
        lines.append(f"    {sym.name} = _full({torch_code(expr)}, like, B, 1).reshape(B)")
    outputs = [sym.name for sym, _ in kernel.element_outputs + kernel.sample_outputs]
    lines.append(f"    return ({''.join(name + ', ' for name in outputs).rstrip()})")
    return "\n".join(lines)


HELPERS = '''
def _full(value, like, B, N):
    """`value` broadcast to (B, N) (constants and per-sample columns included), contiguous."""
    if not isinstance(value, torch.Tensor):
        return torch.full((B, N), float(value), dtype=like.dtype, device=like.device)
    return value.expand(B, N).contiguous() if value.shape != (B, N) else value
'''


def emit_module(title: str, kernels: list[Kernel]) -> str:
    header = f'"""flowcore generated code — {title}; backend torch. Do not edit."""\nimport torch\n'
    return "\n\n".join([header + HELPERS] + [emit_function(k) for k in kernels]) + "\n"


def emit_sources(title: str, digest: str, kernels: list[Kernel]) -> dict[str, str]:
    """{file name: text}: the module ``<digest>.py`` (what `build` loads)."""
    return {f"{digest}.py": emit_module(f"{title}, digest {digest}", kernels)}


def load_module(source: str, name: str) -> ModuleType:
    module = ModuleType(name)
    exec(compile(source, f"<flowcore {name}>", "exec"), module.__dict__)
    return module


def build(title: str, digest: str, kernels: list[Kernel]) -> KernelLibrary:
    """Emit and load the module; nothing to cache, a build takes milliseconds."""
    start = time.perf_counter()
    sources = emit_sources(title, digest, kernels)
    module = load_module(sources[f"{digest}.py"], f"flowcore_{digest}")
    functions = {k.name: getattr(module, k.name) for k in kernels}
    return KernelLibrary("torch", functions, sources, time.perf_counter() - start)
