"""Which backends this machine can run: every registered backend, skipped with the reason its
`unavailable()` gives (the cpu backend needs a C++ compiler; the cuda backend nvcc and a GPU)."""
import pytest
import torch

from flowcore.codegen import backends


def available() -> list:
    found = []
    for backend in backends.REGISTERED:
        reason = backend.unavailable()
        marks = () if reason is None else pytest.mark.skip(reason=f"{backend.name} backend: {reason}")
        found.append(pytest.param(backend.name, marks=marks))
    return found


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA runtime tests need a GPU")


def skip_without_cuda_kernels(dtype: torch.dtype) -> None:
    """Skip a CUDA test of the fused MLP where the extension was built without its CUDA part."""
    from flowcore.nn import fused

    if not fused.kernels_available("cuda", dtype):
        pytest.skip("the extension was built without its CUDA part")

# The fused MLP's CUDA kernels against the torch ops in float64: the reference sees the same rounded
# inputs, the kernels compute in float (double for float64) and round once on output — a few units
# of the storage precision. Callers multiply it for sums over row blocks and re-rounded savings.
CUDA_STORAGE_TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 4e-3, torch.bfloat16: 3e-2}
