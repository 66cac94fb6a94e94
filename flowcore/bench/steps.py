"""A row's training steps: identical nets, optimizers and draws for every variant, and the loss
functions of flowcore's compiled objective, the reference interpreter, the hand-written loss
(flowcore.bench.handwritten) and torch.compile of either."""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..codegen import backends
from ..terms import draw_noise_and_times
from ..train.config import OptimConfig
from ..train.optim import make_optimizer
from .config import NETS, VARIANTS, BenchConfig, NetSpec, load_objective
from .handwritten import handwritten_for, handwritten_loss


def draw_inputs(objective, batch: int, generator: torch.Generator, like: torch.Tensor):
    """x0 = σ·N(0, I), z (stochastic interpolants) and every term's times, drawn by
    flowcore.terms.draw_noise_and_times as the compiled objective and the interpreter would draw
    them; the times keyed ``{term name: {time name: (count,) tensor}}``. `batch` is x1's row count.

    Drawn outside the timed loss functions so that the three variants (torch.compile included,
    which cannot trace a Generator) see identical inputs; the draw is part of each timed step.
    """
    if batch != like.shape[0]:
        raise ValueError(f"batch = {batch} but the data holds {like.shape[0]} rows")
    drawn = draw_noise_and_times(objective, like, generator)
    times = {term.name: {symbol.name: value for symbol, value in term_times.items()}
             for term, term_times in zip(objective.terms, drawn.times)}
    return drawn.x0, drawn.z, times


def error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text if len(text) < 600 else text[:600] + " …"


class Models:
    """The net (a fresh copy of one initialization per variant), its optimizer, teacher and weight head,
    for samples shaped `data_shape` (default: the 2-D points of the MLP nets) with the spec's σ."""

    def __init__(self, objective, spec: NetSpec, device: torch.device, dtype: torch.dtype, seed: int,
                 data_shape: tuple[int, ...] = (2,)):
        from ..nn import LogVarHead

        sigma = spec.resolved_sigma()
        torch.manual_seed(seed)
        self.net = spec.build(data_shape, sigma).to(device, dtype)
        self.teacher_net = None
        if objective.needs_teacher:
            self.teacher_net = spec.build(data_shape, sigma).to(device, dtype).requires_grad_(False)
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
        return net, weight_net, teacher, make_optimizer(params, OptimConfig())  # the recipe's RAdam


def data_batch(spec: NetSpec, batch: int, seed: int, device: torch.device, dtype: torch.dtype,
               path: str | None = None) -> torch.Tensor:
    """x1: the first `batch` samples of the spec's data set (flowcore.data.make_source; the files at
    `path` for a set read from disk, else its stand-in), seeded."""
    return next(iter(spec.data_source(batch, seed, dtype, path))).to(device)


@dataclass
class Builds:
    """flowcore.compile results per (objective, device, backend, σ), reused across nets and batches."""

    compiled: dict = field(default_factory=dict)

    def get(self, name: str, objective, device: torch.device, backend: str | None = None):
        """(compiled, note, build seconds) on `backend` (default: the device's native one, falling back
        to the portable backend with a note when that cannot be built)."""
        native = backend is None
        backend = backend or backends.native_for(device.type).name
        key = (name, device.type, backend, objective.sigma)
        if key not in self.compiled:
            from .. import compile as fc_compile

            fallback = backends.portable().name
            note = None
            start = time.perf_counter()
            try:
                compiled = fc_compile(objective, backend=backend)
            except Exception as error:  # noqa: BLE001 - a missing compiler or extension: fall back, say so
                if not native:
                    raise
                note = f"backend {backend} unavailable ({error_text(error)}); fell back to the {fallback} backend"
                compiled = fc_compile(objective, backend=fallback)
            self.compiled[key] = (compiled, note, time.perf_counter() - start)
        return self.compiled[key]

    def fall_back(self, name: str, objective, device: torch.device, error: BaseException):
        from .. import compile as fc_compile

        start = time.perf_counter()
        fallback = backends.portable().name
        key = (name, device.type, backends.native_for(device.type).name, objective.sigma)
        compiled = fc_compile(objective, backend=fallback)
        note = f"backend {self.compiled[key][0].backend} failed at run time ({error_text(error)}); " \
               f"fell back to the {fallback} backend"
        self.compiled[key] = (compiled, note, time.perf_counter() - start)
        return self.compiled[key]


class TrainingStep:
    """One variant's training step on fresh copies of a row's models: draw, forward, backward, RAdam.

    `make_loss(net, weight_net, teacher)` returns ``loss(x1, x0, z, times) -> scalar``. Every
    TrainingStep of a row starts from the same weights and the same generator seed, so their first
    losses agree (the row records the fc/reference difference as a check).
    """

    def __init__(self, make_loss: Callable, models: Models, objective, x1: torch.Tensor, seed: int):
        self.net, self.weight_net, teacher, self.optimizer = models.fresh()
        self.loss_fn = make_loss(self.net, self.weight_net, teacher)
        self.objective, self.x1 = objective, x1
        self.generator = torch.Generator(device=x1.device).manual_seed(seed + 1)
        self.last_loss: torch.Tensor | None = None

    def __call__(self) -> None:
        x0, z, times = draw_inputs(self.objective, self.x1.shape[0], self.generator, self.x1)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.x1, x0, z, times)
        loss.backward()
        self.optimizer.step()
        self.last_loss = loss.detach()


def reference_loss(objective) -> Callable:
    from .. import evaluate

    def make(net, weight_net, teacher):
        def loss(x1, x0, z, times):
            return evaluate(objective, net, x1, x0, z=z, times=times, teacher=teacher, weight_net=weight_net).loss
        return loss
    return make


def flowcore_loss(compiled) -> Callable:
    def make(net, weight_net, teacher):
        def loss(x1, x0, z, times):
            return compiled(net, x1, x0, z=z, times=times, teacher=teacher, weight_net=weight_net).loss
        return loss
    return make


def compiled_loss(objective, backend: str, eager: Callable | None = None) -> Callable:
    """torch.compile of `eager` (a loss factory; default: the reference interpreter's)."""
    eager = eager or reference_loss(objective)

    def make(net, weight_net, teacher):
        return torch.compile(eager(net, weight_net, teacher), backend=backend)
    return make


def handwritten_make(name: str, objective, compile_backend: str | None = None) -> Callable:
    """The hand-written eager loss of `name` (flowcore.bench.handwritten), torch.compile'd with
    `compile_backend` when given; a ValueError saying why when there is none for this objective."""
    terms, why = handwritten_for(name, objective)
    if terms is None:
        raise ValueError(why)
    make = handwritten_loss(objective, terms)
    return compiled_loss(objective, compile_backend, eager=make) if compile_backend else make


def training_step(name: str, variant: str = "flowcore", net: str = "small", batch: int | None = None,
                  device: str = "cpu", quick: bool = False, backend: str | None = None, seed: int = 0,
                  data_path: str | None = None) -> TrainingStep:
    """One variant's `TrainingStep` for a row, to profile or time by hand (benchmarks/profile_step.py).

    `backend`: flowcore's (default: cpu / cuda by device for ``flowcore``, torch for ``flowcore_torch``)
    or torch.compile's (default inductor). `batch`: default the net's first default batch.
    """
    from .. import compile as fc_compile

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    config = BenchConfig(quick=quick, seed=seed)
    spec = config.net(net) if net in NETS else None
    if spec is None:
        raise ValueError(f"unknown net {net!r}; choose from {', '.join(NETS)}")
    objective = load_objective(name, spec.resolved_sigma())
    where = torch.device(device)
    x1 = data_batch(spec, batch or spec.batches[0], seed, where, torch.float32, data_path)
    models = Models(objective, spec, where, torch.float32, seed, tuple(x1.shape[1:]))
    if variant in ("flowcore", "flowcore_torch"):
        default = backends.native_for(where.type).name if variant == "flowcore" else backends.portable().name
        make = flowcore_loss(fc_compile(objective, backend=backend or default))
    elif variant == "reference":
        make = reference_loss(objective)
    elif variant == "torch_compile":
        make = compiled_loss(objective, backend or "inductor")
    else:
        make = handwritten_make(name, objective, (backend or "inductor") if variant == "handwritten_compile" else None)
    return TrainingStep(make, models, objective, x1, seed)
