"""`flowcore bench --op attention_jvp`: the fused attention JVP alone against torch.func.jvp of math attention.

Per case (B, H, N, D) on a device, every round times, interleaved, for each variant:

- **fwd**: o and ȯ from q, k, v and their tangents q̇, k̇, v̇ (all (B, H, N, D), scale 1/√D), with
  every input requiring grad — the forward of a training step, which keeps what its backward needs;
- **bwd**: the gradients w.r.t. all six inputs from random cotangents on both o and ȯ (LSD trains
  through ȯ, docs/math.md §4), ``torch.autograd.grad`` of the outputs of an untimed forward.

Variants: ``flowcore`` (`flowcore.nn.attention_jvp.attention_jvp`, the extension's fused op) and
``reference`` (``torch.func.jvp`` of ``softmax(q kᵀ·scale) v`` written with matmuls, and autograd's
backward through it). The **bound** is the op's GEMM FLOPs at the machine's matmul throughput:
forward S = q kᵀ, Ṡ = [q̇ | q]·[k | k̇]ᵀ, o = P v, ȯ = [P ⊙ Ṡ | P]·[v; v̇] — 6 units of 2·N²·D FLOPs
per (b, h); backward dv, dv̇, dP, dṖ, dq, dk, dq̇, dk̇ — 12 units (without the recomputation of the
scores that a fused backward adds), divided by the throughput of a square ``torch.mm`` measured in
the same rounds (1024³ on a CPU, 4096³ on a GPU; the best of 3 a round and the best round: a round
whose OpenMP thread was descheduled on a shared machine measures the load, not the matmul). A fused
kernel that keeps its tiles in cache can approach it. Beside it, **GEMMs alone**: the same products as
``torch.bmm`` on whole (B·H, N, ·) operands, so with every N×N product written to memory — what an
unfused implementation cannot go below (the reference's matmuls).

Memory, two columns, both bytes of tensors, not of the process:

- **saved**: the distinct storages autograd keeps from the forward for the backward (what
  ``saved_tensors_hooks`` is handed, inputs excluded: both variants keep those alive anyway) —
  the O(B·H·N·D) against O(B·H·N²) of the issue, exactly, independent of the allocator;
- **peak**: the largest increase of live tensor bytes over one forward + backward
  (`flowcore.bench.measure.peak_memory`: CUDA's allocator statistics; on the CPU the profiler's
  allocation events, since torch keeps no CPU allocator statistics and RSS / tracemalloc do not see
  tensors as they are freed — the transient N×N matrices of the reference show up here). A kernel's
  scratch that does not come from torch's allocator (a C++ std::vector per tile) is not in it.
"""
from __future__ import annotations

import importlib
import math
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from .measure import peak_memory, summary, synchronize

OP_NAMES = ("attention_jvp",)
DEFAULT_TOKENS = (64, 256, 1024)
QUICK_TOKENS = (7, 33)  # not a multiple of any tile, and one key block and several


@dataclass(frozen=True)
class AttentionCase:
    batch: int
    heads: int
    tokens: int
    head_dim: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.heads, self.tokens, self.head_dim)

    def unit_flops(self) -> int:
        """One N×N×D product per (b, h): 2·B·H·N²·D FLOPs."""
        return 2 * self.batch * self.heads * self.tokens ** 2 * self.head_dim


def attention_cases(tokens=None, quick: bool = False) -> list[AttentionCase]:
    """The issue's cases (B = 16, H = 4, D = 64 at N = 64, 256, 1024), or tiny ones for --quick."""
    if quick:
        return [AttentionCase(2, 2, n, 8) for n in (tokens or QUICK_TOKENS)]
    return [AttentionCase(16, 4, n, 64) for n in (tokens or DEFAULT_TOKENS)]


def math_attention(q, k, v, scale: float):
    """softmax(q kᵀ·scale) v with matmuls: the attention torch.func.jvp can differentiate forward."""
    return torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1) @ v


def reference_jvp(q, k, v, dq, dk, dv, scale: float):
    """(o, ȯ) by torch.func.jvp of `math_attention`: the N×N matrices S, Ṡ, P, Ṗ materialised."""
    return torch.func.jvp(lambda q, k, v: math_attention(q, k, v, scale), (q, k, v), (dq, dk, dv))


def flowcore_jvp():
    """flowcore's fused op, ``attention_jvp(q, k, v, q̇, k̇, v̇, *, scale) -> (o, ȯ)``; an ImportError
    when this checkout does not have it."""
    module = importlib.import_module("flowcore.nn.attention_jvp")
    return module.attention_jvp


VARIANTS = {"flowcore": lambda scale: (lambda *x, op=flowcore_jvp(): op(*x, scale=scale)),
            "reference": lambda scale: (lambda *x: reference_jvp(*x, scale))}


class AttentionBound:
    """The op's GEMMs (module doc): ``fwd()`` 6 units, ``bwd()`` 12, as torch.bmm on random operands
    (GEMMs alone); ``throughput()`` FLOP/s of a cache-resident square product (the bound's rate)."""

    SQUARE = {"cpu": 1024, "cuda": 4096}  # ~10 ms on a 2-core CPU: long enough to ride out a descheduled thread

    def __init__(self, case: AttentionCase, device, dtype):
        b, n, d = case.batch * case.heads, case.tokens, case.head_dim
        # (m, k, n) of one product per (b, h); Σ m·k·n = units · N²·D
        self.forward_shapes = [(n, d, n), (n, 2 * d, n), (n, n, d), (n, 2 * n, d)]
        self.backward_shapes = [(n, 2 * n, d), (n, n, d), (n, 2 * d, n), (n, d, n),   # dv, dv̇, dP, dṖ
                                (n, 2 * n, d), (n, 2 * n, d), (n, n, d), (n, n, d)]   # dq, dk, dq̇, dk̇
        make = lambda shape: (torch.randn(b, shape[0], shape[1], device=device, dtype=dtype),
                              torch.randn(b, shape[1], shape[2], device=device, dtype=dtype),
                              torch.empty(b, shape[0], shape[2], device=device, dtype=dtype))
        operands = {shape: make(shape) for shape in {*self.forward_shapes, *self.backward_shapes}}
        self._fwd = [operands[s] for s in self.forward_shapes]
        self._bwd = [operands[s] for s in self.backward_shapes]
        unit = case.tokens ** 2 * case.head_dim
        self.forward_units = sum(m * k * n for m, k, n in self.forward_shapes) / unit
        self.backward_units = sum(m * k * n for m, k, n in self.backward_shapes) / unit
        self.forward_flops = self.forward_units * case.unit_flops()
        self.backward_flops = self.backward_units * case.unit_flops()
        self._device = torch.device(device)
        self.square = self.SQUARE.get(self._device.type, 512)
        self._square = [torch.randn(self.square, self.square, device=device, dtype=dtype) for _ in range(3)]

    def fwd(self) -> None:
        for a, b, out in self._fwd:
            torch.bmm(a, b, out=out)

    def bwd(self) -> None:
        for a, b, out in self._bwd:
            torch.bmm(a, b, out=out)

    def throughput(self) -> float:
        """FLOP/s of the best of three square products now (same threads, same load as the round)."""
        a, b, out = self._square
        best = min(_timed(lambda: torch.mm(a, b, out=out), self._device)[0] for _ in range(3))
        return 2 * self.square ** 3 / best


def _inputs(case: AttentionCase, device, dtype, seed: int):
    """q, k, v, q̇, k̇, v̇ and cotangents (go, gȯ), N(0, 1): logits of order √D·scale = 1."""
    generator = torch.Generator().manual_seed(seed)
    draw = lambda: torch.randn(*case.shape, generator=generator, dtype=dtype).to(device)
    return [draw() for _ in range(6)], (draw(), draw())


def _timed(fn, device) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    value = fn()
    synchronize(device)
    return time.perf_counter() - start, value


def saved_bytes(fn, inputs) -> int:
    """Bytes of the distinct storages autograd saves in `fn(*inputs)` for its backward, the inputs' excluded."""
    exclude = {x.untyped_storage().data_ptr() for x in inputs}
    seen: dict[int, int] = {}

    def pack(tensor):
        plain = tensor
        while torch._C._functorch.is_functorch_wrapped_tensor(plain):  # torch.func.jvp's level wrappers
            plain = torch._C._functorch.get_unwrapped(plain)
        try:
            storage = plain.untyped_storage()
            where = storage.data_ptr()
        except RuntimeError:  # a Python number wrapped as a 0-d tensor (``* scale``) has no storage
            return tensor
        if where not in exclude:
            seen[where] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        outputs = fn(*inputs)
    del outputs
    return sum(seen.values())


def _rel_diff(got, want) -> float:
    """max over o, ȯ and the six gradients of max|got − want| / max|want|, each size floored at 1e-3 of the
    largest's: a gradient that is 0 in exact arithmetic (∂/∂q at N = 1, where the softmax is constant)
    is compared at the scale of the others, not divided by its own rounding noise."""
    scale = max(float(w.abs().max()) for w in want)
    return max(float((g - w).abs().max()) / max(float(w.abs().max()), 1e-3 * scale, 1e-30)
               for g, w in zip(got, want))


def bench_case(case: AttentionCase, device_name: str, config) -> dict:
    """One case: every variant's fwd / bwd times (interleaved rounds), the bound, memory, agreement."""
    device, dtype = torch.device(device_name), getattr(torch, config.dtype)
    scale = 1 / math.sqrt(case.head_dim)
    base, cotangents = _inputs(case, device, dtype, config.seed)
    inputs = [x.clone().requires_grad_(True) for x in base]
    result = {"op": "attention_jvp", "batch": case.batch, "heads": case.heads, "tokens": case.tokens,
              "head_dim": case.head_dim, "device": device_name, "dtype": config.dtype, "variants": {}, "notes": []}
    fns, first = {}, {}
    for label in [v for v in VARIANTS if not config.variants or v in config.variants]:
        measured = result["variants"][label] = {}
        try:
            fn = VARIANTS[label](scale)
            outputs = fn(*inputs)
            grads = torch.autograd.grad(outputs, inputs, cotangents)
            first[label] = [x.detach() for x in (*outputs, *grads)]
            fns[label] = fn
        except Exception as error:  # noqa: BLE001 - a variant that cannot run is reported, the others go on
            measured["error"] = f"{type(error).__name__}: {error}"[:600]
    if "flowcore" in fns:
        available = importlib.import_module("flowcore.nn.attention_jvp").kernels_available(device, dtype)
        result["fused_kernels"] = bool(available)
        if not available:
            result["notes"].append(f"flowcore ran its pure-torch path: no fused attention kernel for {config.dtype} "
                                   f"on {device_name} in this build")
    bound = AttentionBound(case, device, dtype)
    times = {label: {"fwd": [], "bwd": []} for label in [*fns, "gemms", "bound"]}

    def round_(timed: bool) -> None:
        for label, fn in fns.items():
            fwd, outputs = _timed(lambda fn=fn: fn(*inputs), device)
            bwd, _ = _timed(lambda outputs=outputs: torch.autograd.grad(outputs, inputs, cotangents), device)
            if timed:
                times[label]["fwd"].append(fwd)
                times[label]["bwd"].append(bwd)
        fwd, _ = _timed(bound.fwd, device)
        bwd, _ = _timed(bound.bwd, device)
        rate = bound.throughput()
        if timed:
            times["gemms"]["fwd"].append(fwd)
            times["gemms"]["bwd"].append(bwd)
            rates.append(rate)

    rates: list[float] = []
    for _ in range(config.warmup):
        round_(timed=False)
    for _ in range(config.repeats):
        round_(timed=True)
    # The bound's rate is the best the square product reached in the case's rounds: on a shared machine a
    # round whose OpenMP thread was descheduled measures the load, not what the matmul can do.
    rate = max(rates)
    times["bound"] = {"fwd": [bound.forward_flops / rate] * len(rates),
                      "bwd": [bound.backward_flops / rate] * len(rates)}

    paired = lambda a, b: statistics.median(x / y for x, y in zip(a, b))
    for label, fn in fns.items():
        measured = result["variants"][label]
        for phase in ("fwd", "bwd"):
            measured[phase] = summary(times[label][phase])
            measured[phase]["efficiency"] = paired(times["bound"][phase], times[label][phase])
        measured["saved_bytes"] = saved_bytes(fn, inputs)
        measured["peak_memory_bytes"] = peak_memory(
            lambda fn=fn: torch.autograd.grad(fn(*inputs), inputs, cotangents), device)
    result["bound"] = {phase: summary(times["bound"][phase]) for phase in ("fwd", "bwd")}
    result["bound"]["units"] = {"fwd": bound.forward_units, "bwd": bound.backward_units}
    result["bound"]["matmul_gflops"] = rate / 1e9
    result["bound"]["matmul_gflops_rounds"] = [r / 1e9 for r in rates]
    result["gemms_alone"] = {phase: summary(times["gemms"][phase]) for phase in ("fwd", "bwd")}
    result["unit_flops"] = case.unit_flops()
    result["ratios"] = {}
    if "flowcore" in fns and "reference" in fns:
        for phase in ("fwd", "bwd"):
            result["ratios"][f"reference/flowcore {phase}"] = paired(times["reference"][phase],
                                                                    times["flowcore"][phase])
        result["rel_diff"] = _rel_diff(first["flowcore"], first["reference"])  # o, ȯ and all six gradients
    return result


def run_attention_bench(config, tokens=None, say=None, on_case=None) -> dict:
    """Every case of ``flowcore bench --op attention_jvp`` (`config`: a resolved BenchConfig: devices,
    repeats, warmup, threads, dtype, seed, quick; `variants` among `VARIANTS`); the JSON-able result,
    also handed to `on_case` after every case (to write it as it grows)."""
    from .config import SCHEMA
    from .measure import machine_info

    from ..runtime.allocator import retain_freed_memory, retained

    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.retain_memory:
        retain_freed_memory()  # as the suite does (flowcore.runtime.allocator), for both variants alike
    try:
        result = {"schema": SCHEMA, "op": "attention_jvp", "machine": {**machine_info(), "malloc": retained()},
                  "config": {"tokens": list(tokens or ()), "repeats": config.repeats, "warmup": config.warmup,
                             "dtype": config.dtype, "devices": config.devices, "quick": config.quick,
                             "threads": config.threads, "seed": config.seed},
                  "cases": [], "notes": []}
        start = time.perf_counter()
        say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        for device in config.devices:
            for case in attention_cases(tokens, config.quick):
                say(f"attention_jvp B={case.batch} H={case.heads} N={case.tokens} D={case.head_dim} on {device}")
                result["cases"].append(bench_case(case, device, config))
                if on_case:
                    on_case(result)
        result["elapsed_s"] = time.perf_counter() - start
        result["machine"]["load_average_end"] = machine_info().get("load_average")
        return result
    finally:
        torch.set_num_threads(threads)


def render_attention(result: dict) -> str:
    """The table of a ``--op attention_jvp`` run, with the machine line on top."""
    from ..wording import counted
    from ..cli.table import table
    from .report import MIB, UNRELIABLE, UNRELIABLE_NOTE, _efficiency, _ms, _ratio

    m = result["machine"]
    lines = [(f"flowcore {m['flowcore']} bench --op attention_jvp, {m['date']}: torch {m['torch']}, "
              f"{counted(m['threads'], 'thread')}, {m['cpu_model']} ({counted(m['cpu_count'], 'core')})")
             + (f", {m['device_name']}" if m.get("device_name") else "")
             + (f", load average {m['load_average'][0]:.2f}" if m.get("load_average") else ""),
             f"fwd = o and ȯ (inputs requiring grad), bwd = the six input gradients from cotangents on o and ȯ; "
             f"median of {result['config']['repeats']} interleaved rounds after {result['config']['warmup']} "
             "warm-up; bound = the op's GEMM FLOPs (6 N²D units forward, 12 backward) at the matmul throughput "
             "of a square torch.mm in the same rounds (GFLOP/s); bmm = the same GEMMs unfused (torch.bmm, N×N products in "
             "memory); saved = tensors kept for the backward beyond the inputs; peak = live tensor bytes over "
             "fwd + bwd", ""]
    header = ["B", "H", "N", "D", "dev", "fc fwd ms", "ref fwd ms", "ref/fc fwd", "bound fwd ms", "bmm fwd ms",
              "eff fc fwd", "eff ref fwd", "fc bwd ms", "ref bwd ms", "ref/fc bwd", "bound bwd ms", "bmm bwd ms",
              "eff fc bwd", "eff ref bwd", "saved MiB fc", "saved MiB ref", "peak MiB fc", "peak MiB ref",
              "GFLOP/s", "max rel diff"]
    body, notes = [], []
    for case in result["cases"]:
        fc, ref = case["variants"].get("flowcore", {}), case["variants"].get("reference", {})
        ratios = case.get("ratios", {})
        ms = lambda v, phase: "error" if "error" in v else _ms(v.get(phase, {}).get("median_ms"))
        eff = lambda v, phase: _efficiency(v.get(phase, {}).get("efficiency"))  # above 100 %: —*, unreliable
        mib = lambda v, key: "-" if v.get(key) is None else f"{v[key] / MIB:.3g}"
        body.append([str(case[k]) for k in ("batch", "heads", "tokens", "head_dim")] + [case["device"]] + [
            ms(fc, "fwd"), ms(ref, "fwd"), _ratio(ratios.get("reference/flowcore fwd")),
            _ms(case["bound"]["fwd"]["median_ms"]), _ms(case["gemms_alone"]["fwd"]["median_ms"]),
            eff(fc, "fwd"), eff(ref, "fwd"),
            ms(fc, "bwd"), ms(ref, "bwd"), _ratio(ratios.get("reference/flowcore bwd")),
            _ms(case["bound"]["bwd"]["median_ms"]), _ms(case["gemms_alone"]["bwd"]["median_ms"]),
            eff(fc, "bwd"), eff(ref, "bwd"),
            mib(fc, "saved_bytes"), mib(ref, "saved_bytes"), mib(fc, "peak_memory_bytes"),
            mib(ref, "peak_memory_bytes"), f"{case['bound']['matmul_gflops']:.3g}",
            "-" if case.get("rel_diff") is None else f"{case['rel_diff']:.1e}"])
        notes += [f"N={case['tokens']} {name}: {v['error']}" for name, v in case["variants"].items() if "error" in v]
        notes += [f"N={case['tokens']}: {note}" for note in case.get("notes", [])]
    lines.append(table(body, header))
    if any(UNRELIABLE in row for row in body):
        lines.append(UNRELIABLE_NOTE)
    lines += ["", *("note: " + note for note in notes + result.get("notes", []))] if notes or result["notes"] else []
    return "\n".join(lines)
