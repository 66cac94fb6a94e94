"""Generated code without waste (issue 12, point 7): no kernel that only stores zeros, no backward
kernel or output that nothing needs, no compound base repeated for a power."""
import sympy
import torch

import flowcore as fc
from flowcore import objectives
from flowcore.codegen import emit_sources
from flowcore.codegen.torch import emit as torch_emit
from flowcore.compiler.driver import compile_program
from flowcore.compiler.kernel import REDUCE, Kernel, Step
from flowcore.compiler.schedule import Assign, schedule
from flowcore.compiler.segments import program_kernels
from flowcore.testing.nets import SmoothVelocity

BUILT_INS = ("lsd", "esd", "psd_m", "fm", "meanflow")


def test_no_kernel_or_output_is_a_structural_zero():
    """LSD's level-1 input feeds only the sg'd teacher call and its loss uses that call only
    under sg: the gradients there are zero by construction, so no kernel computes them."""
    for name in BUILT_INS:
        for kernel in program_kernels(compile_program(objectives.get(name)).program):
            outputs = kernel.element_outputs + kernel.sample_outputs
            assert outputs, f"{kernel.name} has no outputs"
            zeros = [sym.name for sym, expr in outputs if kernel.substituted(expr) == 0]
            assert not zeros, f"{kernel.name} stores zeros in {zeros}"
    names = {k.name: k for k in program_kernels(compile_program(objectives.get("lsd")).program)}
    assert "lsd_t1_level1_backward" not in names
    assert [s.name for s, _ in names["lsd_t1_loss_backward"].element_outputs] == ["grad_net1", "grad_net1_d0"]


class _CallLog:
    """Wraps the torch backend's loaded kernel functions, recording each call's kernel name."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        load = torch_emit.load_module

        def load_and_wrap(source, name):
            module = load(source, name)
            for attribute, value in list(vars(module).items()):
                if callable(value) and not attribute.startswith("_") and attribute != "torch":
                    setattr(module, attribute, self._wrap(attribute, value))
            return module

        monkeypatch.setattr(torch_emit, "load_module", load_and_wrap)

    def _wrap(self, name, fn):
        def run(*args):
            self.calls.append(name)
            return fn(*args)
        return run


def _outputs_of(compiled, kernel_name: str) -> list[str]:
    kernels = {k.name: k for k in program_kernels(compiled.program)}
    kernel = kernels[kernel_name]
    return [sym.name for sym, _ in kernel.element_outputs + kernel.sample_outputs]


def test_backward_kernels_for_data_run_only_when_data_requires_grad(monkeypatch):
    log = _CallLog(monkeypatch)
    compiled = fc.compile("lsd", backend="torch")
    net = SmoothVelocity((2,))
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(64, 2, dtype=torch.float64, generator=gen)

    compiled(net, x1, generator=gen).loss.backward()
    called = [name for name in log.calls if "backward" in name]
    assert called, "no backward kernel ran"
    data_grads = {name: [o for o in _outputs_of(compiled, name) if o.startswith(("grad_x0", "grad_x1"))]
                  for name in called}
    assert not any(data_grads.values()), f"x0, x1 need no gradient, yet these were computed: {data_grads}"
    assert "lsd_t1_level1_backward" not in log.calls

    log.calls.clear()
    x1 = x1.clone().requires_grad_(True)
    compiled(net, x1, generator=gen).loss.backward()
    computed = [o for name in log.calls if "backward" in name for o in _outputs_of(compiled, name)]
    assert "grad_x1" in computed and x1.grad is not None and x1.grad.abs().sum() > 0


def _square_of_a_sum() -> Kernel:
    a, b, total = sympy.symbols("a b total", real=True)
    return Kernel("square_of_sum", (a, b), (), (), (Step(total, REDUCE, (a + 2 * b) ** 2),), (),
                  ((sympy.Symbol("out", real=True), total),))


def test_power_of_a_compound_base_prints_the_base_once():
    kernel = _square_of_a_sum()
    for backend in ("torch", "cpu", "cuda"):
        sources = emit_sources(backend, "square", "0" * 16, [kernel])
        text = next(t for f, t in sources.items() if not f.endswith(".h"))
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("//", '"""')))
        assert code.count("a + 2*b") + code.count("a + acc_t(2)*b") == 1, (backend, code)
    lsd = (emit_sources("torch", "lsd", "0" * 16, program_kernels(compile_program(objectives.get("lsd")).program)))
    (text,) = lsd.values()
    assert text.count("net1 + net1_d0*(-s + t) - net2") == 1


def test_schedules_hold_no_dead_statement():
    """Dead-step elimination is the schedule's: every value it computes is read later."""
    for name in BUILT_INS:
        for kernel in program_kernels(compile_program(objectives.get(name)).program):
            plan = schedule(kernel)
            read = set().union(*(e.free_symbols for _, e in plan.sample_outputs))
            for phase in reversed(plan.phases):
                defined = phase.statements if isinstance(phase, Assign) else phase.temps + phase.sums
                uses = [e for _, e in defined] + ([] if isinstance(phase, Assign) else [e for _, e in phase.outputs])
                for sym, _ in defined:
                    assert sym in read or any(sym in e.free_symbols for e in uses), (kernel.name, sym)
                read |= set().union(*(e.free_symbols for e in uses))
