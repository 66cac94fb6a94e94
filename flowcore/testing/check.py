"""`check_objective`: the property test compiled-vs-reference, runnable on anyone's objective.

hypothesis draws batches (sizes, data shapes, seeds) and hard times (s = t, |t − s| < 1e-6) and
compares the compiled objective with the reference interpreter: the loss and the gradients with
respect to every network parameter and to x0 and x1, in float64.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings

from ..lang.objective import Objective
from .compare import FLOAT64_RTOL, compare_with_reference
from .nets import SmoothLogVar, SmoothTeacher, SmoothVelocity
from .strategies import batches


@dataclass
class CheckReport:
    objective: str
    backend: str
    examples: int = 0
    worst: float = 0.0
    worst_at: str = ""
    failures: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        from ..wording import counted

        lines = [(f"{status}: {self.objective} on {self.backend}: {counted(self.examples, 'example')}, "
                  f"worst relative error {self.worst:.2e} ({self.worst_at or 'loss'}), tolerance {FLOAT64_RTOL:.0e}")]
        lines += [f"  {failure}" for failure in self.failures[:5]]
        return "\n".join(lines)


def check_objective(objective: Objective, backend: str = "torch", examples: int = 20, interpolant=None,
                    shapes=None, seed: int = 0) -> CheckReport:
    """Run `examples` hypothesis examples of compiled-vs-reference on `objective`."""
    from ..runtime.compiled import compile

    compiled = compile(objective, backend=backend, interpolant=interpolant)
    report = CheckReport(objective.name, backend)

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(batch=batches(objective, shapes=shapes))
    def property_holds(batch):
        shape = batch["shape"]
        net = SmoothVelocity(shape, seed=seed + batch["seed"] % 7)
        teacher = SmoothTeacher(shape, seed=seed + 1) if objective.needs_teacher else None
        weight_net = SmoothLogVar(seed=seed + 2) if objective.needs_weight_net else None
        result = compare_with_reference(compiled, objective, net, batch["x1"], batch["x0"], batch["times"],
                                        teacher=teacher, weight_net=weight_net)
        report.examples += 1
        errors = {"loss": result.loss, **result.gradients}
        name, worst = max(errors.items(), key=lambda item: item[1])
        if worst > report.worst:
            report.worst, report.worst_at = worst, name
        if worst > FLOAT64_RTOL:
            message = (f"relative error {worst:.2e} in {name} (batch {batch['x1'].shape[0]}, shape {shape}, "
                       f"seed {batch['seed']}, times {batch['times']})")
            report.failures.append(message)
            raise AssertionError(message)

    try:
        property_holds()
    except AssertionError:
        pass  # recorded in the report, shrunk example last
    return report
