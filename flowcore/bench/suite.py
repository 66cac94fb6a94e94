"""The benchmark suite: training-step time of flowcore's compiled objectives against the reference.

For each objective × network × batch × device one *row* times a full training step (draw x0 and
the times, forward, backward, RAdam step) of these variants on identical nets, data and draws:

- ``flowcore``: ``flowcore.compile(objective, backend)`` — backend ``cpu`` on the CPU, ``cuda``
  on a GPU, ``torch`` (with a note) if that one cannot be built; the net's native ``jvp`` is used
  when it has one;
- ``flowcore_torch``: the same on the portable ``torch`` backend (skipped where ``flowcore`` is it);
- ``reference``: ``flowcore.evaluate`` (the interpreter: eager ``torch.func.jvp``);
- ``torch_compile``: ``torch.compile`` of the reference's loss function (its compile time — the
  first step minus a steady one — is recorded; an error is recorded and the suite goes on);
- ``handwritten``, ``handwritten_compile``: the loss written by hand in eager PyTorch
  (`flowcore.bench.handwritten`: FM, LSD, PSD-M; skipped, with the reason, for the others) and
  ``torch.compile`` of it.

A net is a registered network kind with its options and its data set (`config.NETS`: the MLPs on
the checkerboard, ``unet-digits`` — the digits UNet preset on the 8×8 digits, ``unet-cifar`` — the
paper's CIFAR-10 UNet on CIFAR-10 or random images of its shape). A network with a native ``jvp``
(FlowMapMLP, FlowMapUNet) is used by it in the compiled variants through the net-call protocol.
``flowcore bench --op attention_jvp`` times one op instead (`flowcore.bench.attention`).

Each row also has its GEMM FLOPs (`flowcore.bench.flops`), a **bound**: those GEMMs timed with
``torch.mm`` on their own shapes, interleaved with the steps (Σ flops / measured throughput), and
each variant's **efficiency** = bound / step time; the peak memory of a step (`flowcore.bench.measure`);
optionally a profiled breakdown of a step. Ratios: reference / flowcore, torch.compile / flowcore,
and flowcore's objective / fm at the same net, batch and device (flowcore's fm step is timed in
every row, interleaved with the variants). Separately: cold and warm compile times of a new objective.

Modules: `config` (what to run), `steps` (the variants' training steps), `row` (one row),
`compile_times`, and this one, which runs them all.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict

import torch

from ..runtime.allocator import retain_freed_memory, retained
from ..wording import counted
from .compile_times import compile_times
from .config import SCHEMA, BenchConfig
from .measure import machine_info
from .row import bench_row
from .steps import Builds, error_text


def run_suite(config: BenchConfig, progress: Callable[[str], None] | None = None,
              on_row: Callable[[dict], None] | None = None) -> dict:
    """Run every row of `config` (and the compile-time measurements); returns the JSON-able result."""
    config = config.resolved()
    say = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.retain_memory:
        retain_freed_memory()  # for the rest of the process
    try:
        return _run(config, say, on_row)
    finally:
        torch.set_num_threads(threads)


def _run(config: BenchConfig, say: Callable[[str], None], on_row) -> dict:
    result = {"schema": SCHEMA, "machine": {**machine_info(), "malloc": retained()}, "config": asdict(config),
              "rows": [], "compile": [], "notes": []}
    builds = Builds()
    cases = [(name, net, batch, device) for device in config.devices for net in config.nets
             for batch in config.batches_for(net) for name in config.objectives]
    start = time.perf_counter()
    for index, (name, net, batch, device) in enumerate(cases, 1):
        spec = config.net(net)
        say(f"[{index}/{len(cases)}] {name} {spec.title} batch {batch} on {device}")
        try:
            row = bench_row(name, spec, batch, device, config, builds)
        except Exception as error:  # noqa: BLE001 - a row that cannot even start is reported
            row = {"objective": name, "net": spec.name, "label": spec.label, "depth": spec.depth, "width": spec.width,
                   "batch": batch,
                   "device": device, "dtype": config.dtype, "error": error_text(error),
                   "traceback": traceback.format_exc(limit=6), "variants": {}, "ratios": {}, "notes": []}
        result["rows"].append(row)
        say("    " + _row_line(row))
        if on_row:
            on_row(result)
    if config.compile_times:
        for device in config.devices:
            say(f"compile times of a new objective on {device}")
            result["compile"] += compile_times(device, config)
            if on_row:
                on_row(result)
    result["machine"]["load_average_end"] = machine_info().get("load_average")
    result["elapsed_s"] = time.perf_counter() - start
    note = busy_note(result["machine"]["load_average"], os.cpu_count() or 1)
    if note:
        result["notes"].append(note)
    return result


def busy_note(load_average: list[float] | None, cores: int) -> str | None:
    """A note for a machine whose load average exceeded half its cores during the run, else None."""
    if not load_average or max(load_average) <= 0.5 * cores:
        return None
    return (f"the machine was busy (load average {', '.join(f'{x:.2f}' for x in load_average)} on "
            f"{counted(cores, 'core')}): timings are noisy")


def _row_line(row: dict) -> str:
    if "error" in row:
        return f"error: {row['error']}"
    parts = []
    for variant, measured in row["variants"].items():
        if "median_ms" in measured:
            parts.append(f"{variant} {measured['median_ms']:.1f} ms")
        elif "error" in measured:
            parts.append(f"{variant} error")
    return ", ".join(parts) + f"; bound {row['bound_ms']:.1f} ms"
