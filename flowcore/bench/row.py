"""One benchmark row: an objective × net × batch × device, its variants timed interleaved with the
GEMM bound (see `bench_row`)."""
from __future__ import annotations

import contextlib
import math
import statistics
import traceback
from collections.abc import Callable

import torch

from ..codegen import backends
from ..nn.registry import gemm_layers
from .config import COMPILED_VARIANTS, VARIANTS, BenchConfig, NetSpec, load_objective
from .flops import plan_gemms
from .handwritten import handwritten_for
from .measure import GemmStep, breakdown, peak_memory, summary, time_calls
from .steps import (Builds, Models, TrainingStep, compiled_loss, data_batch, error_text, flowcore_loss,
                    handwritten_make, reference_loss)


def _guard(fn: Callable, result: dict, key: str):
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - a measurement that fails is reported, not fatal
        result[key] = error_text(error)
        return None


def _fail(result: dict, error: BaseException) -> None:
    result["error"] = error_text(error)
    result["traceback"] = traceback.format_exc(limit=6)


@contextlib.contextmanager
def _dynamo_quiet():
    """Dynamo's warnings about what it cannot trace (sympy's caches in the interpreter) are not ours."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _paired(numerator: list[float], denominator: list[float]) -> float | None:
    """Median over rounds of numerator/denominator: a paired ratio, robust to load drifting between rounds."""
    pairs = [x / y for x, y in zip(numerator, denominator) if x and y]
    return statistics.median(pairs) if pairs else None


def bench_row(name: str, spec: NetSpec, batch: int, device_name: str, config: BenchConfig, builds: Builds,
              variants: tuple[str, ...] | None = None) -> dict:
    """Measure one objective × net × batch × device (the variants: `flowcore.bench.suite`; default
    ``config.variants``).

    Everything of a row is timed *interleaved*: each variant's first step (timed on its own: it
    builds lazily made kernels, or traces and compiles for torch.compile), then ``warmup − 1``
    untimed rounds, then ``repeats`` rounds of one timed call each of: the variants, flowcore's fm
    step (for objective/fm; not in an fm row) and the GEMM-only step (`measure.GemmStep`, the
    bound) — each after ``back_to_back − 1`` untimed calls of its own (1: every timed step follows
    another variant's, with the caches and allocator state that one left). The step times are
    medians; ratios and efficiencies are medians of the per-round ratios, so a change of load on a
    shared machine hits numerator and denominator alike. Then per variant one step for the peak
    memory and, with ``profile``, one profiled step.
    """
    variants = tuple(config.variants or VARIANTS) if variants is None else tuple(variants)
    device = torch.device(device_name)
    dtype = getattr(torch, config.dtype)
    sigma = spec.resolved_sigma()
    objective = load_objective(name, sigma)
    x1 = data_batch(spec, batch, config.seed, device, dtype, config.data_path)
    models = Models(objective, spec, device, dtype, config.seed, tuple(x1.shape[1:]))
    row: dict = {"objective": name, "net": spec.name, "kind": spec.kind, "label": spec.label, "depth": spec.depth,
                 "width": spec.width, "activation": spec.activation,
                 "data": spec.data_label(config.data_path), "sample_shape": list(x1.shape[1:]),
                 "batch": batch, "device": device_name, "dtype": config.dtype,
                 "parameters": sum(p.numel() for p in models.net.parameters()),
                 "native_jvp": callable(getattr(models.net, "jvp", None)), "notes": []}
    if spec.stand_in is not None and not config.data_path:
        row["notes"].append(f"data: {row['data']}")

    compiled, note, build_seconds = builds.get(name, objective, device)
    layers = gemm_layers(spec.kind, models.net)
    teacher_layers = gemm_layers(spec.kind, models.teacher_net) if models.teacher_net is not None else None
    gemms = plan_gemms(compiled.program.plan, list(objective.split(batch)), layers, teacher_layers)
    row["gemm_flops"] = sum(g.flops for g in gemms)
    row["gemm_count"] = len(gemms)
    fm_objective = objective if name == "fm" else load_objective("fm", sigma)
    fm_compiled = compiled if name == "fm" else builds.get("fm", fm_objective, device)[0]
    row["fm_gemm_flops"] = sum(g.flops for g in plan_gemms(fm_compiled.program.plan, list(fm_objective.split(batch)),
                                                           layers))

    # What to time: label -> factory. "fm" (flowcore's fm) and "bound" (the GEMMs alone) are helpers;
    # a variant that cannot run here is `skipped` with the reason.
    factories: dict[str, Callable[[], Callable]] = {}
    skipped: dict[str, str] = {}
    step_of = lambda make, models=models: (lambda: TrainingStep(make, models, objective, x1, config.seed))
    if "flowcore" in variants:
        factories["flowcore"] = lambda: TrainingStep(flowcore_loss(compiled), models, objective, x1, config.seed)
    if "flowcore_torch" in variants:
        portable = backends.portable().name
        if compiled.backend == portable:
            skipped["flowcore_torch"] = f"the flowcore variant already runs the {portable} backend"
        else:
            factories["flowcore_torch"] = lambda: TrainingStep(
                flowcore_loss(builds.get(name, objective, device, portable)[0]), models, objective, x1, config.seed)
    if "reference" in variants:
        factories["reference"] = step_of(reference_loss(objective))
    for label, compile_backend in (("torch_compile", config.torch_compile_backend), ("handwritten", None),
                                   ("handwritten_compile", config.torch_compile_backend)):
        if label not in variants:
            continue
        if label in COMPILED_VARIANTS and not config.torch_compile:
            skipped[label] = "torch.compile not requested"
        elif label == "torch_compile":
            factories[label] = step_of(compiled_loss(objective, compile_backend))
        elif handwritten_for(name, objective)[0] is None:
            skipped[label] = handwritten_for(name, objective)[1]
        else:
            factories[label] = step_of(handwritten_make(name, objective, compile_backend))
    if name != "fm" and "flowcore" in variants:
        fm_models = Models(fm_objective, spec, device, dtype, config.seed, tuple(x1.shape[1:]))
        factories["fm"] = lambda: TrainingStep(flowcore_loss(fm_compiled), fm_models, fm_objective, x1, config.seed)
    factories["bound"] = lambda: GemmStep(gemms, device, dtype)

    results: dict[str, dict] = {label: {"variant": label} for label in factories}
    steps: dict[str, Callable] = {}
    times: dict[str, list] = {label: [] for label in factories}  # per round; None where a step failed
    compiling = [label for label in factories if label in COMPILED_VARIANTS]
    if compiling:
        import torch._dynamo as dynamo
        from torch._dynamo.utils import counters

        dynamo.reset()  # a fresh cache per row: no recompilation limits, no shapes marked dynamic
        counters.clear()

    def quiet(label: str):
        return _dynamo_quiet() if label in COMPILED_VARIANTS else contextlib.nullcontext()

    def first_step(label: str) -> None:
        result = results[label]
        breaks = sum(counters["graph_break"].values()) if label in compiling else 0
        try:
            with quiet(label):
                step = factories[label]()
                result["first_step_ms"] = 1e3 * time_calls(step, device, 1)[0]
            if getattr(step, "last_loss", None) is not None:
                result["first_loss"] = float(step.last_loss)
            steps[label] = step
        except Exception as error:  # noqa: BLE001 - record it; the others go on
            _fail(result, error)
        if label in compiling:  # compiled in the first step: its graph breaks are the counter's increase
            result["graph_breaks"] = sum(counters["graph_break"].values()) - breaks

    for label in factories:
        first_step(label)
        if label == "flowcore" and "error" in results[label] and compiled.backend != "torch":
            compiled, note, build_seconds = builds.fall_back(name, objective, device,
                                                             RuntimeError(results[label]["error"]))
            results[label] = {"variant": label}
            first_step(label)

    def run_round(timed: bool) -> None:
        for label in factories:
            elapsed = None
            if label in steps:
                try:
                    with quiet(label):  # back_to_back − 1 untimed calls first: a step after its own kind
                        elapsed = time_calls(steps[label], device, 1, warmup=config.back_to_back - 1)[0]
                except Exception as error:  # noqa: BLE001
                    _fail(results[label], error)
                    del steps[label]
            if timed:
                times[label].append(elapsed)

    for _ in range(max(config.warmup - 1, 0)):
        run_round(timed=False)
    for _ in range(config.repeats):
        run_round(timed=True)

    bound = times["bound"]
    for label, step in steps.items():
        result, samples = results[label], [t for t in times[label] if t is not None]
        if not samples:
            continue
        result.update(summary(samples))
        if label == "bound":
            continue
        result["efficiency"] = _paired(bound, times[label])
        result["last_loss"] = float(step.last_loss)
        if not math.isfinite(result["last_loss"]):
            result["note"] = "the loss is not finite"
        if label == "fm":
            continue
        with quiet(label):
            result["peak_memory_bytes"] = _guard(lambda step=step: peak_memory(step, device), result,
                                                 "peak_memory_error")
            if config.profile:
                result["breakdown"] = _guard(lambda step=step: breakdown(step, device), result, "breakdown_error")

    bound_result = results.pop("bound")
    if "error" in bound_result:
        raise RuntimeError(f"timing the GEMM bound failed: {bound_result['error']}")
    row["bound_ms"] = bound_result["median_ms"]
    row["bound_samples_ms"] = bound_result["samples_ms"]
    row["matmul_gflops"] = row["gemm_flops"] / row["bound_ms"] / 1e6 if row["bound_ms"] > 0 else None
    if "flowcore" in results:
        results["flowcore"]["backend"] = compiled.backend
        results["flowcore"]["build_s"] = build_seconds
        if note:
            row["notes"].append(note)
    if "flowcore_torch" in results:
        results["flowcore_torch"]["backend"] = backends.portable().name
    for label in compiling:
        measured = results[label]
        measured["backend"] = config.torch_compile_backend
        if "median_ms" in measured:  # the first step traced and compiled forward and backward, then ran them once
            measured["compile_s"] = max(measured["first_step_ms"] - measured["median_ms"], 0.0) / 1e3
        steps.pop(label, None)
    if compiling:
        dynamo.reset()
    for label, why in skipped.items():
        results[label] = {"variant": label, "skipped": why}
    fm_result = results.pop("fm", None)
    row["variants"] = {label: results[label] for label in VARIANTS if label in results}

    fc_times = times.get("flowcore", [])
    fm_times = fc_times if name == "fm" else times.get("fm", [])
    row["fm_flowcore_ms"] = ((results.get("flowcore") if name == "fm" else fm_result) or {}).get("median_ms")
    if fm_result and "error" in fm_result:
        row["notes"].append(f"flowcore fm (for obj/fm): {fm_result['error'][:200]}")
    row["ratios"] = {"reference/flowcore": _paired(times.get("reference", []), fc_times),
                     "torch_compile/flowcore": _paired(times.get("torch_compile", []), fc_times),
                     "reference/flowcore_torch": _paired(times.get("reference", []), times.get("flowcore_torch", [])),
                     "handwritten/flowcore": _paired(times.get("handwritten", []), fc_times),
                     "handwritten_compile/flowcore": _paired(times.get("handwritten_compile", []), fc_times),
                     "objective/fm": _paired(fc_times, fm_times),
                     "objective/fm flops": row["gemm_flops"] / row["fm_gemm_flops"]}
    first = {v: r.get("first_loss") for v, r in results.items() if r.get("first_loss") is not None}
    if "reference" in first:
        scale = max(abs(first["reference"]), 1e-12)
        if "flowcore" in first:
            row["first_loss_rel_diff"] = abs(first["flowcore"] - first["reference"]) / scale
        # every other variant against the reference: the same loss on the same weights and draws
        row["first_loss_rel_diffs"] = {v: abs(loss - first["reference"]) / scale for v, loss in first.items()
                                       if v != "reference"}
    return row
