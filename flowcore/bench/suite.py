"""The benchmark suite: training-step time of flowcore's compiled objectives against the reference.

For each objective × network × batch × device one *row* times a full training step (draw x0 and
the times, forward, backward, RAdam step) of three variants on identical nets, data and draws:

- ``flowcore``: ``flowcore.compile(objective, backend)`` — backend ``cpu`` on the CPU, ``cuda``
  on a GPU, ``torch`` (with a note) if that one cannot be built; the net's native ``jvp`` is used
  when it has one;
- ``reference``: ``flowcore.evaluate`` (the interpreter: eager ``torch.func.jvp``);
- ``torch.compile``: ``torch.compile`` of the reference's loss function (its compile time — the
  first step minus a steady one — is recorded; an error is recorded and the suite goes on).

Each row also has its GEMM FLOPs (`flowcore.bench.flops`), a **bound**: those GEMMs timed with
``torch.mm`` on their own shapes, interleaved with the steps (Σ flops / measured throughput), and
each variant's **efficiency** = bound / step time; the peak memory of a step (`flowcore.bench.measure`);
optionally a profiled breakdown of a step. Ratios: reference / flowcore, torch.compile / flowcore,
and flowcore's objective / fm at the same net, batch and device (flowcore's fm step is timed in
every row, interleaved with the variants). Separately: cold and warm compile times of a new objective.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..batch import complete_batch
from ..runtime.allocator import retain_freed_memory, retained
from .flops import net_layers, plan_gemms
from .measure import GemmStep, breakdown, machine_info, peak_memory, summary, synchronize, time_calls

SCHEMA = "flowcore-bench/1"
DEFAULT_OBJECTIVES = ("fm", "lsd", "esd", "psd_m", "meanflow")
DEFAULT_BATCHES = (1024, 4096, 16384)
VARIANTS = ("flowcore", "reference", "torch_compile")


@dataclass(frozen=True)
class NetSpec:
    name: str
    depth: int
    width: int
    activation: str = "gelu"

    @property
    def label(self) -> str:
        return f"{self.depth}x{self.width}"


# The paper's 2-D MLP and a smaller one (MATH.md §4, §6); --quick swaps in tiny ones of the same names.
NETS = {"paper": NetSpec("paper", 5, 512), "small": NetSpec("small", 4, 256)}
QUICK_NETS = {"paper": NetSpec("paper", 2, 32), "small": NetSpec("small", 1, 16)}


@dataclass
class BenchConfig:
    """What to run. ``resolved()`` fills the defaults (``quick`` changes them) and validates."""

    objectives: list[str] | None = None
    nets: list[str] | None = None
    batches: list[int] | None = None
    devices: list[str] | None = None
    repeats: int | None = None
    warmup: int | None = None
    quick: bool = False
    torch_compile: bool | None = None  # None: on, except in quick mode
    torch_compile_backend: str = "inductor"
    profile: bool | None = None  # None: only in quick mode (so that it exercises every path)
    compile_times: bool = True  # cold / warm compile of a new objective
    threads: int | None = None
    retain_memory: bool = True  # glibc keeps freed memory (flowcore.runtime.allocator), for every variant alike
    back_to_back: int = 1  # steps per variant and round, the last timed (1: each step follows another variant's)
    seed: int = 0
    dtype: str = "float32"

    def resolved(self) -> BenchConfig:
        from ..catalog import builtin_names

        c = copy.copy(self)
        c.objectives = list(c.objectives or DEFAULT_OBJECTIVES)
        known = builtin_names()
        for spec in c.objectives:
            name, options = parse_objective(spec)
            key = name.lower().replace("-", "_")
            if key not in known and not name.endswith(".py"):
                raise ValueError(f"unknown objective {name!r}; the built-ins are {', '.join(known)} "
                                 "(or give a .py file declaring one)")
            if name.endswith(".py") and not os.path.isfile(name):
                raise FileNotFoundError(f"no objective file at {name}")
            if options:
                try:
                    _objective(spec)
                except TypeError as error:
                    raise ValueError(f"objective {spec!r}: {error}") from None
        c.nets = list(c.nets or ["paper", "small"])
        for name in c.nets:
            if name not in NETS:
                raise ValueError(f"unknown net {name!r}; choose from {', '.join(NETS)}")
        c.batches = list(c.batches or ([64] if c.quick else DEFAULT_BATCHES))
        if any(not isinstance(b, int) or b < 1 for b in c.batches):
            raise ValueError(f"batch sizes must be positive integers, got {c.batches}")
        c.devices = list(c.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])))
        for device in c.devices:
            if device not in ("cpu", "cuda"):
                raise ValueError(f"unknown device {device!r}; choose cpu or cuda")
            if device == "cuda" and not torch.cuda.is_available():
                raise ValueError("device cuda requested but CUDA is not available here "
                                 "(torch.cuda.is_available() is False); use --device cpu")
        c.repeats = c.repeats if c.repeats is not None else (1 if c.quick else 10)
        c.warmup = c.warmup if c.warmup is not None else (1 if c.quick else 3)
        if c.repeats < 1 or c.warmup < 0:
            raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {c.repeats} and {c.warmup}")
        if c.threads is not None and c.threads < 1:
            raise ValueError(f"threads must be >= 1, got {c.threads}")
        if c.back_to_back < 1:
            raise ValueError(f"back_to_back must be >= 1, got {c.back_to_back}")
        if c.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {c.dtype!r}")
        c.torch_compile = (not c.quick) if c.torch_compile is None else c.torch_compile
        c.profile = c.quick if c.profile is None else c.profile
        return c

    def net(self, name: str) -> NetSpec:
        return (QUICK_NETS if self.quick else NETS)[name]


# ---------------------------------------------------------------------------------------------
# One row


def parse_objective(spec: str) -> tuple[str, dict]:
    """``"lsd"`` → ("lsd", {}); ``"lsd:eta=0"`` → ("lsd", {"eta": 0.0}): a built-in with builder options."""
    name, _, rest = spec.partition(":")
    options: dict = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"objective {spec!r}: options are written name:key=value[,key=value], got {item!r}")
        try:
            options[key.strip()] = float(value)
        except ValueError:
            options[key.strip()] = value.strip()
    return name.strip(), options


def _objective(spec: str):
    from ..catalog import load
    from ..data import CHECKERBOARD_STD

    name, options = parse_objective(spec)
    return load(name, **options).with_options(sigma=CHECKERBOARD_STD)


def _draw(objective, batch: int, generator: torch.Generator, like: torch.Tensor):
    """x0 = σ·N(0, I), z (stochastic interpolants) and every term's times, as the compiled objective
    and the interpreter would draw them.

    Drawn outside the timed loss functions so that the three variants (torch.compile included,
    which cannot trace a Generator) see identical inputs; the draw is part of each timed step.
    """
    x0, z = complete_batch(objective, objective.interpolant, like, None, None, generator)
    times = {}
    for term, count in zip(objective.terms, objective.split(batch)):
        drawn = term.sampler.sample(count, generator, like.dtype, like.device)
        times[term.name] = {str(symbol): value for symbol, value in drawn.items()}
    return x0, z, times


def _error(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text if len(text) < 600 else text[:600] + " …"


class _Models:
    """The net (a fresh copy of one initialization per variant), its optimizer, teacher and weight head."""

    def __init__(self, objective, spec: NetSpec, device: torch.device, dtype: torch.dtype, seed: int, dim: int = 2):
        from ..data import CHECKERBOARD_STD
        from ..nn import FlowMapMLP, LogVarHead

        torch.manual_seed(seed)
        self.net = FlowMapMLP(dim, spec.width, spec.depth, spec.activation, sigma=CHECKERBOARD_STD).to(device, dtype)
        self.teacher_net = None
        if objective.needs_teacher:
            self.teacher_net = FlowMapMLP(dim, spec.width, spec.depth, spec.activation, sigma=CHECKERBOARD_STD)
            self.teacher_net = self.teacher_net.to(device, dtype).requires_grad_(False)
        self.weight_net = LogVarHead().to(device, dtype) if objective.needs_weight_net else None

    def fresh(self):
        """(net, weight_net, teacher, optimizer): identical initial weights for every variant."""
        net = copy.deepcopy(self.net)
        weight_net = copy.deepcopy(self.weight_net) if self.weight_net is not None else None
        params = list(net.parameters()) + (list(weight_net.parameters()) if weight_net is not None else [])
        teacher = None
        if self.teacher_net is not None:
            teacher_net = self.teacher_net
            teacher = lambda tau, x: teacher_net(tau, tau, x)
        # foreach: one multi-tensor update instead of a Python loop per tensor (2.5x faster on CPU)
        return net, weight_net, teacher, torch.optim.RAdam(params, foreach=True)


@dataclass
class _Builds:
    """flowcore.compile results per (objective, device), reused across nets and batches."""

    compiled: dict = field(default_factory=dict)

    def get(self, name: str, objective, device: torch.device):
        key = (name, device.type)
        if key not in self.compiled:
            from .. import compile as fc_compile

            backend = "cuda" if device.type == "cuda" else "cpu"
            note = None
            start = time.perf_counter()
            try:
                compiled = fc_compile(objective, backend=backend)
            except Exception as error:  # noqa: BLE001 - a missing compiler or extension: fall back, say so
                note = f"backend {backend} unavailable ({_error(error)}); fell back to the torch backend"
                compiled = fc_compile(objective, backend="torch")
            self.compiled[key] = (compiled, note, time.perf_counter() - start)
        return self.compiled[key]

    def fall_back(self, name: str, objective, device: torch.device, error: BaseException):
        from .. import compile as fc_compile

        start = time.perf_counter()
        compiled = fc_compile(objective, backend="torch")
        note = f"backend {self.compiled[(name, device.type)][0].backend} failed at run time ({_error(error)}); " \
               "fell back to the torch backend"
        self.compiled[(name, device.type)] = (compiled, note, time.perf_counter() - start)
        return self.compiled[(name, device.type)]


class TrainingStep:
    """One variant's training step on fresh copies of a row's models: draw, forward, backward, RAdam.

    `make_loss(net, weight_net, teacher)` returns ``loss(x1, x0, z, times) -> scalar``. Every
    TrainingStep of a row starts from the same weights and the same generator seed, so their first
    losses agree (the row records the fc/reference difference as a check).
    """

    def __init__(self, make_loss: Callable, models: _Models, objective, x1: torch.Tensor, seed: int):
        self.net, self.weight_net, teacher, self.optimizer = models.fresh()
        self.loss_fn = make_loss(self.net, self.weight_net, teacher)
        self.objective, self.x1 = objective, x1
        self.generator = torch.Generator(device=x1.device).manual_seed(seed + 1)
        self.last_loss: torch.Tensor | None = None

    def __call__(self) -> None:
        x0, z, times = _draw(self.objective, self.x1.shape[0], self.generator, self.x1)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.x1, x0, z, times)
        loss.backward()
        self.optimizer.step()
        self.last_loss = loss.detach()


def _guard(fn: Callable, result: dict, key: str):
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - a measurement that fails is reported, not fatal
        result[key] = _error(error)
        return None


def _fail(result: dict, error: BaseException) -> None:
    result["error"] = _error(error)
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


def bench_row(name: str, spec: NetSpec, batch: int, device_name: str, config: BenchConfig, builds: _Builds,
              variants: tuple[str, ...] = VARIANTS) -> dict:
    """Measure one objective × net × batch × device (see the module doc).

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
    from ..data import checkerboard

    device = torch.device(device_name)
    dtype = getattr(torch, config.dtype)
    objective = _objective(name)
    models = _Models(objective, spec, device, dtype, config.seed)
    x1 = checkerboard(batch, torch.Generator().manual_seed(config.seed), dtype).to(device)
    row: dict = {"objective": name, "net": spec.name, "depth": spec.depth, "width": spec.width,
                 "activation": spec.activation, "batch": batch, "device": device_name, "dtype": config.dtype,
                 "native_jvp": callable(getattr(models.net, "jvp", None)), "notes": []}

    compiled, note, build_seconds = builds.get(name, objective, device)
    layers = net_layers(models.net)
    teacher_layers = net_layers(models.teacher_net) if models.teacher_net is not None else None
    gemms = plan_gemms(compiled.program.plan, list(objective.split(batch)), layers, teacher_layers)
    row["gemm_flops"] = sum(g.flops for g in gemms)
    row["gemm_count"] = len(gemms)
    fm_objective = objective if name == "fm" else _objective("fm")
    fm_compiled = compiled if name == "fm" else builds.get("fm", fm_objective, device)[0]
    row["fm_gemm_flops"] = sum(g.flops for g in plan_gemms(fm_compiled.program.plan, list(fm_objective.split(batch)),
                                                           layers))

    # What to time: label -> factory. "fm" (flowcore's fm) and "bound" (the GEMMs alone) are helpers.
    factories: dict[str, Callable[[], Callable]] = {}
    if "flowcore" in variants:
        factories["flowcore"] = lambda: TrainingStep(_flowcore_loss(compiled), models, objective, x1, config.seed)
    if "reference" in variants:
        factories["reference"] = lambda: TrainingStep(_reference_loss(objective), models, objective, x1, config.seed)
    if "torch_compile" in variants and config.torch_compile:
        make = _compiled_loss(objective, config.torch_compile_backend)
        factories["torch_compile"] = lambda: TrainingStep(make, models, objective, x1, config.seed)
    if name != "fm" and "flowcore" in variants:
        fm_models = _Models(fm_objective, spec, device, dtype, config.seed)
        factories["fm"] = lambda: TrainingStep(_flowcore_loss(fm_compiled), fm_models, fm_objective, x1, config.seed)
    factories["bound"] = lambda: GemmStep(gemms, device, dtype)

    results: dict[str, dict] = {label: {"variant": label} for label in factories}
    steps: dict[str, Callable] = {}
    times: dict[str, list] = {label: [] for label in factories}  # per round; None where a step failed
    if "torch_compile" in factories:
        import torch._dynamo as dynamo
        from torch._dynamo.utils import counters

        dynamo.reset()  # a fresh cache per row: no recompilation limits, no shapes marked dynamic
        counters.clear()

    def quiet(label: str):
        return _dynamo_quiet() if label == "torch_compile" else contextlib.nullcontext()

    def first_step(label: str) -> None:
        result = results[label]
        try:
            with quiet(label):
                step = factories[label]()
                result["first_step_ms"] = 1e3 * time_calls(step, device, 1)[0]
            if getattr(step, "last_loss", None) is not None:
                result["first_loss"] = float(step.last_loss)
            steps[label] = step
        except Exception as error:  # noqa: BLE001 - record it; the others go on
            _fail(result, error)

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
    if "torch_compile" in results:
        tc = results["torch_compile"]
        tc["backend"] = config.torch_compile_backend
        tc["graph_breaks"] = sum(counters["graph_break"].values())
        if "median_ms" in tc:  # the first step traced and compiled forward and backward, then ran them once
            tc["compile_s"] = max(tc["first_step_ms"] - tc["median_ms"], 0.0) / 1e3
        steps.pop("torch_compile", None)
        dynamo.reset()
    elif "torch_compile" in variants:
        results["torch_compile"] = {"variant": "torch_compile", "skipped": "torch.compile not requested"}
    fm_result = results.pop("fm", None)
    row["variants"] = {label: results[label] for label in VARIANTS if label in results}

    fc_times = times.get("flowcore", [])
    fm_times = fc_times if name == "fm" else times.get("fm", [])
    row["fm_flowcore_ms"] = ((results.get("flowcore") if name == "fm" else fm_result) or {}).get("median_ms")
    if fm_result and "error" in fm_result:
        row["notes"].append(f"flowcore fm (for obj/fm): {fm_result['error'][:200]}")
    row["ratios"] = {"reference/flowcore": _paired(times.get("reference", []), fc_times),
                     "torch_compile/flowcore": _paired(times.get("torch_compile", []), fc_times),
                     "objective/fm": _paired(fc_times, fm_times),
                     "objective/fm flops": row["gemm_flops"] / row["fm_gemm_flops"]}
    first = {v: r.get("first_loss") for v, r in results.items() if r.get("first_loss") is not None}
    if "flowcore" in first and "reference" in first:
        scale = max(abs(first["reference"]), 1e-12)
        row["first_loss_rel_diff"] = abs(first["flowcore"] - first["reference"]) / scale
    return row


def _reference_loss(objective) -> Callable:
    from .. import evaluate

    def make(net, weight_net, teacher):
        def loss(x1, x0, z, times):
            return evaluate(objective, net, x1, x0, z=z, times=times, teacher=teacher, weight_net=weight_net).loss
        return loss
    return make


def _flowcore_loss(compiled) -> Callable:
    def make(net, weight_net, teacher):
        def loss(x1, x0, z, times):
            return compiled(net, x1, x0, z=z, times=times, teacher=teacher, weight_net=weight_net).loss
        return loss
    return make


def _compiled_loss(objective, backend: str) -> Callable:
    reference = _reference_loss(objective)

    def make(net, weight_net, teacher):
        return torch.compile(reference(net, weight_net, teacher), backend=backend)
    return make


def training_step(name: str, variant: str = "flowcore", net: str = "small", batch: int = 1024, device: str = "cpu",
                  quick: bool = False, backend: str | None = None, seed: int = 0) -> TrainingStep:
    """One variant's `TrainingStep` for a row, to profile or time by hand (benchmarks/profile_step.py).

    `backend`: flowcore's (default: cpu / cuda by device) or torch.compile's (default inductor).
    """
    from .. import compile as fc_compile
    from ..data import checkerboard

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    config = BenchConfig(quick=quick, seed=seed)
    spec = config.net(net) if net in NETS else None
    if spec is None:
        raise ValueError(f"unknown net {net!r}; choose from {', '.join(NETS)}")
    objective = _objective(name)
    where = torch.device(device)
    models = _Models(objective, spec, where, torch.float32, seed)
    x1 = checkerboard(batch, torch.Generator().manual_seed(seed)).to(where)
    if variant == "flowcore":
        make = _flowcore_loss(fc_compile(objective, backend=backend or ("cuda" if where.type == "cuda" else "cpu")))
    elif variant == "reference":
        make = _reference_loss(objective)
    else:
        make = _compiled_loss(objective, backend or "inductor")
    return TrainingStep(make, models, objective, x1, seed)


# ---------------------------------------------------------------------------------------------
# Compile times of a new objective


def fresh_objective(tag: str | None = None):
    """An LSD variant nobody has compiled: the teacher is scaled by ``1 + 1/c`` with c unique to this call.

    Declared here with flowcore's language, so its kernels (hence its cache key) are new.
    """
    import sympy

    from ..data import CHECKERBOARD_STD
    from ..lang import Dt, I, Objective, Term, Uniform, UpperTriangle, V, Var, X, s, sg, sqnorm, t

    tag = tag or secrets.token_hex(4)
    c = sympy.Integer(10**9 + int(tag, 16))
    x = Var("x")
    scale = 1 + 1 / c
    loss = sqnorm(Dt(X(s, t, x)) - scale * sg(V(t, t, sg(X(s, t, x))))).bind(x=I(s))
    return Objective(f"bench_lsd_{tag}", (Term("fm", sqnorm(V(t, t, I(t)) - Dt(I(t))), Uniform(t), 0.75),
                                          Term("lsd_variant", loss, UpperTriangle(s, t), 0.25)),
                     description="LSD with a unique constant (the benchmark's new objective)",
                     sigma=CHECKERBOARD_STD)


@contextlib.contextmanager
def _cache_dir(path: str):
    old = os.environ.get("FLOWCORE_CACHE_DIR")
    os.environ["FLOWCORE_CACHE_DIR"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FLOWCORE_CACHE_DIR", None)
        else:
            os.environ["FLOWCORE_CACHE_DIR"] = old


def _compile_once(objective, backend: str, device: torch.device, config: BenchConfig) -> dict:
    """fc.compile wall time (symbolic passes vs build), cache hit, and a first forward+backward."""
    from .. import compile as fc_compile
    from ..data import checkerboard

    start = time.perf_counter()
    compiled = fc_compile(objective, backend=backend)
    total = time.perf_counter() - start
    out = {"compile_s": total, "symbolic_s": total - compiled.compile_seconds, "build_s": compiled.compile_seconds,
           "cache_hit": bool(compiled.cache_hit)}
    models = _Models(objective, config.net("small"), device, getattr(torch, config.dtype), config.seed)
    net = models.net
    x1 = checkerboard(64, torch.Generator().manual_seed(0), getattr(torch, config.dtype)).to(device)
    x0, z, times = _draw(objective, 64, torch.Generator(device=device).manual_seed(0), x1)
    synchronize(device)
    start = time.perf_counter()
    compiled(net, x1, x0, z=z, times=times).loss.backward()
    synchronize(device)
    out["first_call_s"] = time.perf_counter() - start
    return out


def compile_times(device_name: str, config: BenchConfig) -> list[dict]:
    """Cold (empty FLOWCORE_CACHE_DIR) and warm (same cache, same process) compiles of a new objective.

    Per backend: the device's native one and ``torch``. The extension is loaded first (and timed
    on its own): a cold cache must not make the cold figure include building the extension.
    """
    device = torch.device(device_name)
    native = "cuda" if device.type == "cuda" else "cpu"
    rows = []
    for backend in (native, "torch"):
        row: dict = {"backend": backend, "device": device_name}
        try:
            if backend != "torch":
                from ..runtime.extension import extension_info, load_extension

                start = time.perf_counter()
                load_extension()
                row["extension_load_s"] = time.perf_counter() - start
                row["extension"] = extension_info().get("how")
            objective = fresh_objective()
            row["objective"] = objective.name
            with tempfile.TemporaryDirectory(prefix="flowcore-bench-cache-") as tmp, _cache_dir(tmp):
                row["cold"] = _compile_once(objective, backend, device, config)
                row["warm"] = _compile_once(objective, backend, device, config)
        except Exception as error:  # noqa: BLE001 - report it and go on
            row["error"] = _error(error)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# The suite


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
    builds = _Builds()
    cases = [(name, net, batch, device) for device in config.devices for net in config.nets
             for batch in config.batches for name in config.objectives]
    start = time.perf_counter()
    for index, (name, net, batch, device) in enumerate(cases, 1):
        spec = config.net(net)
        say(f"[{index}/{len(cases)}] {name} {spec.name} ({spec.label}) batch {batch} on {device}")
        try:
            row = bench_row(name, spec, batch, device, config, builds)
        except Exception as error:  # noqa: BLE001 - a row that cannot even start is reported
            row = {"objective": name, "net": spec.name, "depth": spec.depth, "width": spec.width, "batch": batch,
                   "device": device, "dtype": config.dtype, "error": _error(error),
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
    if result["machine"]["load_average"] and max(result["machine"]["load_average"]) > 0.5 * (os.cpu_count() or 1):
        result["notes"].append(f"the machine was busy (load average {result['machine']['load_average']} on "
                               f"{os.cpu_count()} cores): timings are noisy")
    return result


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
