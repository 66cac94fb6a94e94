"""From a config to the things a run trains: the objective, its compiled form, the networks.

* The objective is a built-in (or a user's .py file) built with the diagonal share η, then given
  the configured interpolant, σ and batch reduction; with ``learned_weight`` every term's loss ℓ
  becomes ``exp(−w)·ℓ + w`` (EDM2's learned log-variance, docs/math.md §3), w from the network kind's
  weight head (flowcore.nn.registry: the images' ImageLogVarHead, else LogVarHead) at the term's own
  times (``w(s, t)``; ``w(t, t)`` for a term that only draws t).
* The network is the registered kind ``network.kind`` (flowcore.nn.registry; by default the paper's
  MLP ``v̂ = σ·net(x/σ; s, t)``, docs/math.md §4) for samples of the shape the data source yields.
* Distillation objectives get their frozen teacher velocity from a flowcore checkpoint.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from .. import objectives as builtins
from ..catalog import load
from ..codegen import backends
from ..lang import DeclarationError, Term, learned_logvar, s, t
from ..lang.interpolants import linear, trig
from ..lang.objective import Objective
from ..nn.registry import build_network, build_weight_head
from ..runtime.compiled import CompiledObjective, compile
from .config import ObjectiveConfig, TrainConfig

INTERPOLANTS = {"linear": linear, "trig": trig}


def _accepts_eta(name: str) -> bool:
    key = name.strip().lower().replace("-", "_")
    builder = builtins.BUILTINS.get(key)
    if builder is None:
        return False
    return "eta" in inspect.signature(builder).parameters


def _load_file(path: str, eta: float) -> Objective:
    """A user's objective file: its ``build(eta=...)`` if it takes η, else the declaration as it is."""
    try:
        return load(path, eta=eta)
    except (TypeError, DeclarationError):
        if eta != ObjectiveConfig.eta:
            raise ValueError(f"objective.eta = {eta}: the objective in {path} takes no eta option "
                             "(declare a build(eta=...) function, or leave objective.eta at its default)") from None
        return load(path)


def build_objective(config: ObjectiveConfig, sigma: float) -> Objective:
    if config.name.endswith(".py"):
        objective = _load_file(config.name, config.eta)
    elif _accepts_eta(config.name):
        objective = load(config.name, eta=config.eta)
    elif config.eta != ObjectiveConfig.eta:
        raise ValueError(f"objective.eta = {config.eta}: the built-in {config.name!r} has no diagonal share "
                         "(leave objective.eta at its default)")
    else:
        objective = load(config.name)
    objective = objective.with_options(interpolant=INTERPOLANTS[config.interpolant](), sigma=float(sigma),
                                       reduction=config.reduction)
    if config.learned_weight:
        objective = with_learned_weight(objective)
    return objective


def with_learned_weight(objective: Objective) -> Objective:
    terms = []
    for term in objective.terms:
        produced = set(term.sampler.produces)
        a, b = (s, t) if {s, t} <= produced else (t, t) if t in produced else (term.sampler.produces[0],) * 2
        terms.append(Term(term.name, learned_logvar(term.loss, a, b), term.sampler, term.share, term.dropout))
    return objective.with_options(terms=tuple(terms), name=f"{objective.name}_logvar")


def pick_backend(choice: str, device: torch.device) -> str:
    """A registered backend (flowcore.codegen.backends) that runs on `device`; "auto": the device's
    default (`backends.default_for`: the CUDA kernels on a GPU, the emitted-torch backend on the CPU)."""
    if choice == "auto":
        return backends.default_for(device.type).name
    backend = backends.get(choice)
    if device.type not in backend.devices:
        raise ValueError(f"backend = {choice!r} needs device = {' or '.join(map(repr, backend.devices))}")
    return choice


def compile_objective(objective: Objective, backend: str) -> CompiledObjective:
    return compile(objective, backend=backend)


def make_weight_head(config: TrainConfig) -> nn.Module:
    """The learned loss weight's head of a run (``objective.learned_weight``): the network kind's."""
    return build_weight_head(config.network.kind)


def make_network(config: TrainConfig, dims: tuple[int, ...], sigma: float) -> nn.Module:
    """A fresh network of the run's ``network.kind`` for samples shaped `dims` (the data source's)."""
    try:
        return build_network(config.network.kind, config.network, dims, sigma)
    except ValueError as error:
        raise ValueError(f"data {config.data.name!r}: {error}") from None


def network_from_checkpoint(state: dict, weights: float | str = "eval") -> tuple[nn.Module, TrainConfig, float]:
    """The network of a checkpoint with the EMA weights of decay `weights` ("eval": the config's
    eval.ema; 0: the raw weights), frozen, in eval mode, on the CPU; also its config and σ. Weights
    that do not fit the network the checkpoint's config builds are a CheckpointError naming the file
    (``state.path`` of a checkpoint.read) and the keys."""
    from .checkpoint import CheckpointError, shadows_mismatch, weights_mismatch
    from .config import ConfigError, from_dict

    where = str(getattr(state, "path", "the checkpoint"))
    try:
        config = from_dict(state["config"])
    except ConfigError as error:
        raise CheckpointError(f"{where}: its config is not one this flowcore runs: {error}") from None
    sigma = float(state["sigma"])
    net = make_network(config, tuple(state["dims"]), sigma)
    decay = config.eval.ema if weights == "eval" else float(weights)
    if decay:
        shadows = state["ema"].get("shadows", {}) if isinstance(state["ema"], dict) else {}
        if repr(float(decay)) not in shadows:
            raise ValueError(f"{where}: the checkpoint has no EMA with decay {decay}; it has "
                             f"{', '.join(shadows) or 'none'} (or 0 for the raw weights)")
        saved = shadows[repr(float(decay))]
        problem = shadows_mismatch(list(net.parameters()), saved)
        if problem:
            raise CheckpointError(f"{where}: its EMA {decay} weights do not fit its network "
                                  f"({config.network.kind}): {problem}")
        with torch.no_grad():
            for p, value in zip(net.parameters(), saved):
                p.copy_(value)
    else:
        problem = weights_mismatch(net.state_dict(), state["model"])
        if problem:
            raise CheckpointError(f"{where}: its model weights do not fit its network ({config.network.kind}): "
                                  f"{problem}")
        net.load_state_dict(state["model"])
    return net.requires_grad_(False).eval(), config, sigma


def load_teacher(path: str, device: torch.device) -> tuple[nn.Module, callable]:
    """The frozen velocity ``b̂_τ(x) = v̂_{τ,τ}(x)`` of a trained flowcore checkpoint."""
    from .checkpoint import read, resolve

    net, _, _ = network_from_checkpoint(read(resolve(path)))
    net = net.to(device)
    return net, (lambda tau, x: net(tau, tau, x))
