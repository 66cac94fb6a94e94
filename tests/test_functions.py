"""Every elementwise function of the table (flowcore/lang/functions.py), tested from the table.

For each entry: the derivative rule (what `differentiate` uses) and sympy's derivative of the sympy
function (what kernel backward passes use) both equal torch autograd of the torch function; sympy and torch compute the same values; a small objective using
the function compiles (torch and cpu backends) to the reference's loss and gradients in float64;
the generated source spells the function as the table says; and the C++/CUDA spelling compiles
with nvcc in every precision a CUDA kernel has (float, double, half, bfloat16).
"""
from __future__ import annotations

import pytest
import sympy
import torch

import flowcore as fc
from backends import available
from flowcore.compiler.driver import compile_program
from flowcore.compiler.kernel import backward
from flowcore.lang.constructors import ELEMENTWISE
from flowcore.lang.functions import FUNCTIONS, Function
from flowcore.lang.numeric import evaluate_sympy
from flowcore.testing import FLOAT64_RTOL, SmoothVelocity, compare_with_reference

ENTRIES = [pytest.param(f, id=f.name) for f in FUNCTIONS.values()]
COMPILED = [b for b in available() if b.values[0] in ("torch", "cpu")]
U = sympy.Symbol("u", real=True)
# float64 rounding of one elementwise function and its derivative: a few ulps (2.2e-16 each),
# relative to max(|value|, 1); 1e-12 leaves three orders of magnitude.
ELEMENTWISE_TOL = 1e-12


def domain(function: Function, count: int, seed: int = 0) -> torch.Tensor:
    """Random float64 points where `function` is smooth: (0.05, 4) for positive arguments, else (-4, 4)."""
    gen = torch.Generator().manual_seed(seed)
    unit = torch.rand(count, generator=gen, dtype=torch.float64)
    return 0.05 + 3.95 * unit if function.positive_domain else 8 * unit - 4


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return bool(((got - want).abs() <= ELEMENTWISE_TOL * want.abs().clamp(min=1)).all())


# -- the table's own consistency ----------------------------------------------------------------------
@pytest.mark.parametrize("function", ENTRIES)
def test_derivative_rule_is_autograd_of_the_torch_function(function: Function):
    u = domain(function, 64).requires_grad_(True)
    (want,) = torch.autograd.grad(function.torch_function(u).sum(), u)
    got = evaluate_sympy(function.derivative(U), {U: u.detach()}, u.detach())
    assert close(got, want), (got - want).abs().max()


@pytest.mark.parametrize("function", ENTRIES)
def test_sympys_derivative_is_autograd_of_the_torch_function(function: Function):
    """Kernel backward passes differentiate the sympy function with sympy, not by the rule."""
    u = domain(function, 64, seed=2).requires_grad_(True)
    (want,) = torch.autograd.grad(function.torch_function(u).sum(), u)
    got = evaluate_sympy(sympy.diff(function.sympy(U), U), {U: u.detach()}, u.detach())
    assert close(got, want), (got - want).abs().max()


@pytest.mark.parametrize("function", ENTRIES)
def test_sympy_and_torch_compute_the_same_function(function: Function):
    u = domain(function, 16, seed=1)
    want = torch.tensor([float(function.sympy(sympy.Float(float(v), 30)).evalf(30)) for v in u], dtype=torch.float64)
    assert close(function.torch_function(u), want)


def test_a_function_is_one_constructor_of_the_language():
    for name in FUNCTIONS:
        assert getattr(fc, name) is ELEMENTWISE[name] and name in fc.__all__
        assert fc.pretty(getattr(fc, name)(fc.x0)) == f"{name}(x0)"
        assert isinstance(getattr(fc, name)(1 + fc.t), fc.Expr)  # of a coefficient: a coefficient


# -- compiled against the reference -------------------------------------------------------------------
def objective_using(function: Function) -> fc.Objective:
    """A small objective with `function` of a flow map, under a time derivative, and of a coefficient."""
    f = ELEMENTWISE[function.name]
    x = fc.Var("x")
    mapped = fc.X(fc.s, fc.t, x)
    arg = mapped * mapped + 1 if function.positive_domain else mapped  # positive where it must be
    # the weight 2 + f(1 + t) keeps f in the kernels and stays positive on [0, 1] (a negative one is refused)
    loss = (2 + f(1 + fc.t)) * fc.sqnorm(f(arg) - fc.sg(fc.V(fc.t, fc.t, x))) + fc.sqnorm(fc.Dt(f(arg)))
    return fc.Objective(f"uses_{function.name}", [fc.Term("main", loss.bind(x=fc.I(fc.s)), fc.Square(fc.s, fc.t), 1.0)])


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("function", ENTRIES)
def test_compiled_value_and_gradient_equal_the_reference(function: Function, backend: str):
    objective = objective_using(function)
    program = fc.compile(objective, backend=backend)
    gen = torch.Generator().manual_seed(7)
    x0, x1 = (torch.randn(6, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    times = {"main": {"s": torch.rand(6, generator=gen, dtype=torch.float64),
                      "t": torch.rand(6, generator=gen, dtype=torch.float64)}}
    result = compare_with_reference(program, objective, SmoothVelocity((3,), seed=1), x1, x0, times)
    assert result.worst <= FLOAT64_RTOL, result


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("function", ENTRIES)
def test_generated_source_spells_the_function_as_the_table(function: Function, backend: str):
    program = fc.compile(objective_using(function), backend=backend)
    source = "".join(program.library.sources.values())
    spelling = function.torch if backend == "torch" else function.c
    assert f"{spelling}(" in source


# -- C++/CUDA: the header's wrappers in every precision -------------------------------------------------
def test_every_function_compiles_for_cuda_in_every_precision(tmp_path):
    """One kernel file with every function, forward and backward, as f32, f64, f16 and bf16 launchers."""
    from flowcore.codegen.cuda import compile_only
    from flowcore.native.toolchain import find_nvcc

    if find_nvcc() is None:
        pytest.skip("nvcc not found: CUDA sources cannot be compiled on this machine")
    terms = [fc.Term(f.name, objective_using(f).terms[0].loss, fc.Square(fc.s, fc.t), 1 / len(FUNCTIONS))
             for f in FUNCTIONS.values()]
    compilation = compile_program(fc.Objective("every_function", terms))
    kernels = [segment.kernel for segment in compilation.program.segments if segment.kernel is not None]
    kernels += [backward(kernel) for kernel in kernels]
    library = compile_only("every_function", compilation.digest, kernels, ["9.0"], directory=tmp_path)
    assert library.is_file()
    source = "".join(path.read_text() for path in tmp_path.rglob("*.cu"))
    for function in FUNCTIONS.values():
        assert f"{function.c}(" in source, function.name
