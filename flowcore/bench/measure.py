"""Measuring: step times, matmul throughput on given shapes, peak memory, a time breakdown, the machine.

Peak memory is the largest increase of live tensor bytes held by torch's allocator over the
level at the start of one training step (after warm-up, so the optimizer state already exists):
- CUDA: ``torch.cuda.max_memory_allocated() − memory_allocated()`` at the start, after
  ``reset_peak_memory_stats``;
- CPU: torch has no CPU allocator statistics, and RSS / tracemalloc are wrong for it (glibc keeps
  freed blocks, tracemalloc sees no tensor memory), so the step runs once under
  ``torch.profiler`` with ``profile_memory=True`` and the running sum of its allocation and free
  events (every tensor the c10 CPU allocator hands out — eager ops, the extension's outputs,
  Inductor's buffers) gives the peak. Both are the same quantity: bytes of tensors live at once,
  not what the process maps.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from .flops import Gemm

# Ops whose self time is matrix multiplication (eager aten, oneDNN/MKL linear as Inductor calls them) or
# convolution — the UNet's convolutions are GEMMs (im2col) and the bound counts them as such (flowcore.bench.flops).
GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation", "aten::addmv",
            "aten::mv", "aten::matmul", "aten::linear", "mkl::_mkl_linear", "mkldnn::_linear_pointwise",
            "aten::_mm_plus_mm", "aten::addbmm", "aten::dot",
            "aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution", "aten::convolution",
            "aten::conv2d", "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward",
            "aten::thnn_conv2d", "mkldnn::_convolution_pointwise"}
# CUDA kernel names of matrix multiplications and convolutions (cuBLAS, cuBLASLt, CUTLASS, cuDNN).
GEMM_KERNELS = ("gemm", "cutlass", "cublas", "xmma", "matmul", "sm90_", "sm80_", "ampere_", "hopper_", "cudnn",
                "implicit_convolve", "fprop", "dgrad", "wgrad")
# Profiler ranges whose self time is Inductor's generated (fused) code: torch.compile's kernels.
COMPILED_REGIONS = ("CompiledFunction", "Torch-Compiled Region", "CompiledFxGraph", "inductor")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 0) -> list[float]:
    """Wall seconds of each of `repeats` calls of `fn` after `warmup` untimed ones (synchronized)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> dict:
    """Median (the figure the tables show), min, max and every sample, in milliseconds."""
    ms = [1e3 * t for t in times]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "samples_ms": ms}


def gemm_operands(kind: str, m: int, k: int, n: int, device, dtype):
    """Operands with the layouts of nn.Linear's forward and backward: (a, b) whose product is the
    (m, n) result — or its transpose for a weight gradient with fewer inputs than outputs, which
    BLAS computes several times faster as ``(hᵀ·g)ᵀ`` (what flowcore's backward does, csrc/mlp_net.cpp;
    the bound takes the faster orientation)."""
    make = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)
    if kind == "fwd":  # x (rows, in) @ Wᵀ, W stored (out, in)
        return make(m, k), make(n, k).t()
    if kind == "dgrad":  # g (rows, out) @ W (out, in)
        return make(m, k), make(k, n)
    if kind == "wgrad" and n < m:  # (hᵀ (in, rows) @ g (rows, out))ᵀ
        return make(k, n).t(), make(k, m)
    if kind == "wgrad":  # gᵀ (out, rows) @ h (rows, in)
        return make(k, m).t(), make(k, n)
    raise ValueError(f"unknown GEMM kind {kind!r}")


class GemmStep:
    """Every GEMM of a training step, back to back: ``torch.mm`` on each shape and operand layout.

    Called like a training step and timed in the same rounds as the variants, its time is the
    row's **bound** — Σ flops / the matmul throughput on those very shapes, measured in the same
    run under the same load. Operands are allocated once per distinct shape (random values).
    """

    def __init__(self, gemms: list[Gemm], device: torch.device, dtype: torch.dtype):
        self.gemms = list(gemms)
        self.flops = sum(g.flops for g in self.gemms)
        self._operands: dict[tuple, tuple] = {}
        for gemm in self.gemms:
            if gemm.shape not in self._operands:
                a, b = gemm_operands(*gemm.shape, device, dtype)
                self._operands[gemm.shape] = (a, b, torch.empty(a.shape[0], b.shape[1], device=device, dtype=dtype))
        self._calls = [self._operands[g.shape] for g in self.gemms]

    def __call__(self) -> None:
        for a, b, out in self._calls:
            torch.mm(a, b, out=out)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence file descriptor 2 (kineto logs its start/stop there from C++); Python errors still raise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _profile(step: Callable[[], object], device: torch.device, memory: bool):
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = profile(activities=activities, profile_memory=memory)
    # The whole profiled step runs with fd 2 silenced: kineto logs its start/stop there, and the CPU
    # allocator warns about every block freed in the step but allocated before it. Exceptions still raise.
    with _quiet_native_stderr():
        prof.start()
        try:
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            wall = time.perf_counter() - start
        finally:
            prof.stop()
    return prof, wall


def peak_memory(step: Callable[[], object], device: torch.device) -> int:
    """Peak bytes of live tensors above the level at the start of one call of `step` (module doc)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return max(torch.cuda.max_memory_allocated(device) - base, 0)
    prof, _ = _profile(step, device, memory=True)
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def _cpu_self_times(prof) -> dict[str, float]:
    """Self time (µs) per event name on the CPU: duration minus its direct children's, per thread.

    Computed from the raw kinetic events (``key_averages`` builds a FunctionEvent tree first and is
    an order of magnitude slower)."""
    threads: dict[int, list] = {}
    for event in prof.profiler.kineto_results.events():
        if event.name() == "[memory]" or event.device_type() != torch.autograd.DeviceType.CPU:
            continue
        threads.setdefault(event.start_thread_id(), []).append((event.start_ns(), -event.duration_ns(), event.name()))
    totals: dict[str, float] = {}

    def close(frame):
        _, name, children, duration = frame
        totals[name] = totals.get(name, 0.0) + max(duration - children, 0) / 1e3

    for events in threads.values():
        events.sort()
        stack: list[list] = []  # [end, name, Σ children's durations, duration]
        for start, negative, name in events:
            duration = -negative
            while stack and stack[-1][0] <= start:
                close(stack.pop())
            if stack:
                stack[-1][2] += min(duration, stack[-1][0] - start)
            stack.append([start + duration, name, 0, duration])
        while stack:
            close(stack.pop())
    return totals


def breakdown(step: Callable[[], object], device: torch.device) -> dict:
    """Where one profiled step's wall time goes, in ms: GEMMs, flowcore's fused kernels, other ops, overhead.

    CPU: self times of the ops (GEMMs: matrix products and convolutions). ``flowcore::*`` (the generated kernels, the extension's ops) and
    Inductor's compiled regions are "fused"; every other op — activations, copies, reductions, the
    optimizer's foreach ops — is "other ops"; overhead is the rest of the wall time: Python,
    autograd bookkeeping, dispatch, everything outside an op.
    CUDA: device time of the kernels by name (cuBLAS/CUTLASS → GEMMs; flowcore's generated kernels
    and MLP ops and Inductor's Triton kernels → fused; PyTorch's own → other ops) and overhead is
    wall − device busy time (the GPU waiting on the host: launches, Python, synchronization).
    Profiling slows small ops, so shares are indicative.
    """
    prof, wall = _profile(step, device, memory=False)
    gemm = fused = other = 0.0
    if device.type == "cuda":
        for event in prof.profiler.kineto_results.events():
            if event.device_type() != torch.autograd.DeviceType.CUDA or event.name() == "[memory]":
                continue
            time_us, name = event.duration_ns() / 1e3, event.name().lower()
            if any(tag in name for tag in GEMM_KERNELS):
                gemm += time_us
            elif "at::native" in name or "memcpy" in name or "memset" in name:
                other += time_us
            elif "flowcore" in name or "triton" in name or "_kernel<" in name:
                fused += time_us  # flowcore's generated kernels and MLP ops, Inductor's Triton kernels
            else:
                other += time_us
    else:
        for key, self_us in _cpu_self_times(prof).items():
            if key in GEMM_OPS:
                gemm += self_us
            elif key.startswith("flowcore::") or any(tag in key for tag in COMPILED_REGIONS):
                fused += self_us
            elif "::" in key and not key.startswith("autograd::"):
                other += self_us
            # anything else (autograd nodes, Optimizer.step, record_function ranges) is overhead
    wall_ms = 1e3 * wall
    gemm, fused, other = gemm / 1e3, fused / 1e3, other / 1e3
    return {"wall_ms": wall_ms, "gemm_ms": gemm, "fused_ms": fused, "other_ms": other,
            "overhead_ms": max(wall_ms - gemm - fused - other, 0.0)}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """Where the figures come from: platform, CPU, torch, threads, GPU, date, load."""
    from .. import __version__

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flowcore": __version__,
        "threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    try:
        info["load_average"] = list(os.getloadavg())
    except (OSError, AttributeError):
        info["load_average"] = None
    return info
