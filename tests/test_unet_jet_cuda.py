"""The UNet pointwise-jet CUDA kernels (csrc/unet_jet_cuda.cuh): emulated on the host everywhere (their index
arithmetic, grid-stride loops, the pixel norm's column sums and the shared-memory reductions of the FiLM
backward and the unit rows, csrc/unet_jet_cuda_emulate.cc) against the CPU ops, which tests/test_unet_jet.py
checks against the torch formulas; and on a GPU, when one is present, the real kernels against the CPU ops in
float32, float64, float16 and bfloat16."""
from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
import torch
from emulators import build_emulator
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowcore.nn.unet.layers import _NORM_FLOOR as FLOOR
from flowcore.nn.unet.layers import _PIXEL_EPS as EPS
from flowcore.nn.unet.layers import CLIP, SILU_RMS
from flowcore.nn.unet.pointwise import kernels_available

GAIN = 1.0 / SILU_RMS
F64 = torch.float64

pytestmark = pytest.mark.skipif(not kernels_available("cpu", F64), reason="the flowcore extension does not build here")


def inputs(B, C, S, n, seed=0, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    x0 = scale * torch.randn(B, C, S, generator=gen, dtype=F64)
    x0.view(-1)[:: max(1, x0.numel() // 3)] *= 200.0   # some past ±256 for clip's mask
    t = torch.randn(n * B, C, S, generator=gen, dtype=F64)
    l0 = 0.5 * torch.randn(B, C, generator=gen, dtype=F64)
    lt = torch.randn(n * B, C, generator=gen, dtype=F64)
    g = torch.randn((1 + n) * B, C, S, generator=gen, dtype=F64)
    return x0, t, l0, lt, g


def cpu_results(x0, t, l0, lt, g):
    """What the emulator writes, from the CPU ops."""
    ops = torch.ops.flowcore
    film_gy, film_gl = ops.unet_film_silu_jet_bwd(x0, l0, t, lt, g, GAIN)
    clip, inside = ops.unet_clip_jet(x0, t, CLIP, True)
    return [ops.unet_silu_jet(x0, t, GAIN, True), ops.unet_silu_jet_bwd(x0, t, g, GAIN),
            ops.unet_film_silu_jet(x0, l0, t, lt, GAIN, True), film_gy, film_gl, clip, inside.to(F64),
            ops.unet_silu_jet(x0, t, GAIN, False), ops.unet_film_silu_jet(x0, l0, t, lt, GAIN, False),
            ops.unet_clip_jet(x0, t, CLIP, False)[0], *pixel_norm_results(x0, t, g)]


def pixel_norm_results(x0, t, g):
    ops = torch.ops.flowcore
    rows, row_grads = x0.flatten(0, 1), g[:x0.shape[0]].flatten(0, 1)
    return [ops.unet_pixel_norm_jet(x0, t, EPS, True), ops.unet_pixel_norm_jet_bwd(x0, t, g, EPS),
            ops.unet_pixel_norm_jet(x0, t, EPS, False), ops.unet_unit_rows([rows], FLOOR)[0],
            ops.unet_unit_rows_bwd([rows], [row_grads], FLOOR)[0]]


# -- the CUDA kernels emulated on the host ---------------------------------------------------------------
@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """The CUDA kernels compiled for the host, each block's threads as std::threads (no GPU needed)."""
    return build_emulator(tmp_path_factory, "unet_jet_cuda_emulate.cc")


def run_emulated(binary, dtype, B, C, S, n, blocks, x0, t, l0, lt, g):
    payload = np.array([B, C, S, n, blocks], dtype=np.int64).tobytes() + b"".join(
        x.contiguous().numpy().tobytes() for x in (x0, t, l0, lt, g))
    out = subprocess.run([str(binary), dtype], input=payload, capture_output=True, check=True).stdout
    values = torch.from_numpy(np.frombuffer(out, dtype=np.float64).copy())
    P, R = B * C * S, B * C
    sizes = [(1 + n) * P, (1 + n) * P, (1 + n) * P, (1 + n) * P, (1 + n) * R, (1 + n) * P, P, n * P, n * P, n * P,
             (1 + n) * P, (1 + n) * P, n * P, P, P]
    assert sum(sizes) == values.numel()
    return list(values.split(sizes))


@settings(deadline=None, max_examples=8)
@given(B=st.integers(1, 3), C=st.integers(1, 4), S=st.integers(1, 300), n=st.integers(0, 3), blocks=st.integers(1, 3))
@example(B=1, C=1, S=1, n=0, blocks=1)          # one element, no tangents
@example(B=2, C=3, S=257, n=2, blocks=2)        # rows past a 256-thread block: the reduction's stride loop
def test_emulated_cuda_kernels_equal_the_cpu_ops(emulator, B, C, S, n, blocks):
    """float64: the same formulas in another order of operations (the reductions are summed per thread,
    then as a tree), so equal to float64 rounding of sums over at most 300 terms."""
    data = inputs(B, C, S, n, seed=B * 1000 + C * 100 + S + n)
    got = run_emulated(emulator, "f64", B, C, S, n, blocks, *data)
    for index, (value, expected) in enumerate(zip(got, cpu_results(*data))):
        torch.testing.assert_close(value, expected.reshape(-1), rtol=1e-12, atol=1e-12,
                                   msg=lambda m, i=index: f"output {i}: {m}")


def test_emulated_cuda_kernels_in_float32(emulator):
    """float32 storage and arithmetic (A = S here; on a GPU float32 computes in float too): the CPU ops in
    float64 on the same rounded inputs, within float32 rounding of O(10) operations and the row sums."""
    B, C, S, n = 2, 3, 70, 2
    data = [x.float().double() for x in inputs(B, C, S, n, seed=4)]
    got = run_emulated(emulator, "f32", B, C, S, n, 2, *data)
    for index, (value, expected) in enumerate(zip(got, cpu_results(*data))):
        torch.testing.assert_close(value, expected.reshape(-1), rtol=2e-5, atol=2e-4 if index in (4, 13, 14) else 2e-5,
                                   msg=lambda m, i=index: f"output {i}: {m}")


# -- the real kernels on a GPU -------------------------------------------------------------------------------
def _cuda_kernels() -> bool:
    return torch.cuda.is_available() and kernels_available("cuda", torch.float32)


gpu = pytest.mark.skipif(not _cuda_kernels(), reason="needs a GPU and the extension's CUDA kernels")

# float32 / float64 compute in their own type; float16 / bfloat16 store in it and compute in float, so
# their outputs carry one rounding to the storage type (2^-11, 2^-8 relative) on top of the inputs'.
GPU_TOLERANCES = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3),
                  torch.bfloat16: (1.6e-2, 1.6e-2)}


@gpu
@pytest.mark.parametrize("dtype", list(GPU_TOLERANCES))
def test_cuda_kernels_equal_the_cpu_ops(dtype):
    B, C, S, n = 3, 5, 300, 2
    data = [x.to(dtype) for x in inputs(B, C, S, n, seed=9, scale=2.0)]
    data[0] = data[0].clamp(-300, 300)   # finite in float16
    expected = cpu_results(*[x.double() for x in data])
    ops = torch.ops.flowcore
    x0, t, l0, lt, g = (x.cuda() for x in data)
    film_gy, film_gl = ops.unet_film_silu_jet_bwd(x0, l0, t, lt, g, GAIN)
    clip, inside = ops.unet_clip_jet(x0, t, CLIP, True)
    got = [ops.unet_silu_jet(x0, t, GAIN, True), ops.unet_silu_jet_bwd(x0, t, g, GAIN),
           ops.unet_film_silu_jet(x0, l0, t, lt, GAIN, True), film_gy, film_gl, clip, inside,
           ops.unet_silu_jet(x0, t, GAIN, False), ops.unet_film_silu_jet(x0, l0, t, lt, GAIN, False),
           ops.unet_clip_jet(x0, t, CLIP, False)[0], *pixel_norm_results(x0, t, g)]
    rtol, atol = GPU_TOLERANCES[dtype]
    for index, (value, want) in enumerate(zip(got, expected)):
        # g_l and the unit rows sum over S, the pixel norm over C
        scale = math.sqrt(S) if index in (4, 13, 14) else math.sqrt(C) if index >= 10 else 1.0
        torch.testing.assert_close(value.double().cpu(), want, rtol=rtol * scale, atol=atol * scale,
                                   msg=lambda m, i=index: f"{dtype} output {i}: {m}")


@gpu
def test_cuda_kernels_run_on_the_current_stream():
    x0, t, l0, lt, _ = (x.float().cuda() for x in inputs(2, 3, 40, 1, seed=2))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = torch.ops.flowcore.unet_film_silu_jet(x0, l0, t, lt, GAIN, True)
    stream.synchronize()
    torch.testing.assert_close(out.cpu().double(), torch.ops.flowcore.unet_film_silu_jet(
        *(x.cpu().double() for x in (x0, l0, t, lt)), GAIN, True), rtol=1e-5, atol=1e-5)
