"""Public testing helpers: check a compiled objective against the reference interpreter.

    report = flowcore.testing.check_objective(my_objective, backend="cpu", examples=50)
    assert report.passed, report
"""
from .check import CheckReport, check_objective
from .compare import FLOAT64_RTOL, Comparison, compare_with_reference, relative_error
from .nets import SmoothLogVar, SmoothTeacher, SmoothVelocity

__all__ = ["CheckReport", "check_objective", "FLOAT64_RTOL", "Comparison", "compare_with_reference",
           "relative_error", "SmoothLogVar", "SmoothTeacher", "SmoothVelocity"]
