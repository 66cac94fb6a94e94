"""The training configuration: typed dataclasses, read from TOML, changed by ``--set key=value``.

A file mirrors the dataclasses: top-level keys, then one table per section::

    steps = 20000
    ema = [0.999, 0.9999]
    [objective]
    name = "lsd"
    [optim]
    lr = 1e-3

``--set optim.lr=3e-4`` (a dotted key; the value is a TOML literal, or a bare word for a string, or
``1,2,4`` for a list) overrides one field. Every mistake is a `ConfigError` naming the key, the value
and what was expected. Defaults are the paper's recipe (docs/math.md §3) on the checkerboard.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ..codegen import backends
from ..data import DATASETS, LOADED_DATASETS
from ..eval.metrics import METRICS
from ..nn.registry import network_kinds
from ..nn.unet import PRESETS as UNET_PRESETS
from .optim import OPTIMIZERS

SCHEDULES = ("paper", "constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
AUTOCAST = ("auto", "bf16", "off")
PROGRESS = ("auto", "on", "off")
REDUCTIONS = ("batch", "term_mean")
INTERPOLANTS = ("linear", "trig")
ACTIVATIONS = ("gelu", "silu", "tanh")
DATA_OPTIONS = ("path", "split", "resolution", "mode", "layout", "flip")


class ConfigError(ValueError):
    """A configuration that cannot run: unknown key, wrong type, value out of range."""


@dataclass
class ObjectiveConfig:
    name: str = "lsd"              # a built-in (`flowcore objectives`) or a .py file declaring one
    eta: float = 0.75              # share of the batch on the diagonal (FM term), docs/math.md §3
    reduction: str = "batch"       # "batch": Σℓ/B (official code); "term_mean": Σ term means (Algorithm 1)
    interpolant: str = "linear"    # "linear" | "trig"
    learned_weight: bool = False   # EDM2 learned log-variance weight exp(−w)ℓ + w; the head trains jointly
    teacher: str = ""              # distillation objectives (lmd, emd, pfmm, consistency): a flowcore checkpoint


@dataclass
class NetworkConfig:
    kind: str = "mlp"              # a registered network kind (flowcore.nn.registry); the rest are its options
    width: int = 512               # the paper's 2-D network: 5 × 512 GELU (docs/math.md §4)
    depth: int = 5
    activation: str = "gelu"
    sigma: float | str = "data"    # σ of v̂ = σ·net(x/σ) and of the noise; "data": the data's std
    dim: int = 0                   # 0: the data's dimension
    # kind = "unet" (flowcore.nn.FlowMapUNet, docs/math.md §4): a preset, or (preset = "") these sizes
    preset: str = ""               # "cifar10", "imagenet64_s", "digits" (channels, resolution: the data's)
    model_channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [2, 2, 2])
    num_blocks: int = 4            # blocks per resolution
    attn_resolutions: list[int] = field(default_factory=lambda: [16])
    channels_per_head: int = 64
    dropout: float | str = "preset"  # the diagonal (FM) calls' (docs/math.md §4); "preset": the preset's, else 0


@dataclass
class DataConfig:
    name: str = "checkerboard"     # a registered data set (flowcore.data: checkerboard, digits, …) or .npy/.npz
    batch: int = 4096              # GLOBAL batch of one optimizer step (all ranks and micro-batches together)
    key: str = ""                  # the array of a .npz file
    # Options of the data (flowcore.data.make_source); each is passed only when set, and the data
    # must take it: flip (any images), layout (uint8 .npy/.npz), a loaded set's own (flowcore.data).
    path: str = ""                 # cifar10: its python folder or .tar.gz; image_folder: the folder
    split: str = "train"           # digits, cifar10: "train" or "test" (the held-out images)
    resolution: int = 0            # digits: upsample 8 → this (0: 8); image_folder: the crop-and-resize side
    mode: str = "RGB"              # image_folder: "RGB" or "L" (grey)
    layout: str = ""               # uint8 .npy/.npz images: "NHWC" or "NCHW" when the channel axis is ambiguous
    flip: bool = False             # random horizontal flips of images (off, as the paper trains)

    def source_options(self) -> dict[str, Any]:
        """The data options set to other than their defaults: the `options` of make_source."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name in DATA_OPTIONS and getattr(self, f.name) != f.default}


@dataclass
class OptimConfig:
    name: str = "radam"            # radam (docs/math.md §3), adam, adamw (flowcore.train.optim)
    lr: float = 1e-3               # 1e-3 for 2-D (docs/math.md §3)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0      # the recipe has none (decoupled from the gradient for adamw)
    clip: float = 10.0             # global gradient-norm clip (10 for 2-D, 1 for images); 0: off
    schedule: str = "paper"        # "paper": lr / sqrt(max(k / decay_start, 1)); "constant"; "cosine"
    decay_start: int = 35000       # the paper schedule's k₀
    min_lr: float = 0.0            # the cosine schedule's floor


@dataclass
class LogConfig:
    every: int = 100               # steps between rows of metrics.csv and TensorBoard points
    tensorboard: bool = True       # write <out>/tensorboard (skipped with a note if tensorboard is missing)
    progress: str = "auto"         # tqdm bar: "auto" (on a terminal, rank 0), "on", "off"
    figures: bool = True           # samples.png and losses.png at the end of the run


@dataclass
class CheckpointConfig:
    every: int = 5000              # steps between checkpoints (one is always written at the end); 0: end only
    keep_last: int = 3             # older checkpoints are deleted


@dataclass
class EvalConfig:
    every: int = 0                 # steps between evaluations; 0: only at the end
    steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])   # k of the k-step sampler
    samples: int = 65536           # docs/math.md §5: 64k samples
    ema: float = 0.9999            # which EMA samples and is evaluated (one of `ema`); 0: the raw weights
    seed: int = 0                  # noise of the evaluation (independent of training)
    metrics: list[str] = field(default_factory=list)  # flowcore.eval.metrics names; []: the data kind's defaults
    inception_weights: str = ""    # metric "fid": the TF-Inception weights file (else $FLOWCORE_INCEPTION_WEIGHTS)

    def metric_options(self) -> dict[str, dict[str, Any]]:
        """Per-metric options from this section (flowcore.eval.metrics: select_metrics, evaluate)."""
        return {"fid": {"weights": self.inception_weights}} if self.inception_weights else {}


@dataclass
class TrainConfig:
    steps: int = 150000            # optimizer steps (the paper's checkerboard budget, docs/math.md §5)
    seed: int = 0
    device: str = "auto"           # "auto": cuda when available
    threads: int = 0               # CPU threads of torch during the run; 0: torch's default (one per core)
    backend: str = "auto"          # the compiled objective's backend; "auto": cuda on a GPU, else torch
    accumulate: int = 1            # micro-batches per step (the batch is split, gradients summed)
    autocast: str = "auto"         # "auto": bf16 on a GPU that supports it, off on the CPU; "bf16"; "off"
    ema: list[float] = field(default_factory=lambda: [0.999, 0.9999])   # decays tracked together
    ema_warmup: bool = True        # decay_k = min(decay, (1 + k) / (10 + k)): short runs get a usable EMA
    nan_guard: int = 10            # stop after this many consecutive skipped (non-finite) steps
    out: str = "runs/train"
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (fit for TOML, JSON and a weights-only checkpoint)."""
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return to_toml(self.to_dict())

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> TrainConfig:
        return from_dict(self.to_dict(), overrides)


# --------------------------------------------------------------------------- types and parsing


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(kind) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _type_name(kind) -> str:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return f"a list of {_type_name(typing.get_args(kind)[0])}s"
    return {int: "int", float: "float", str: "string", bool: "bool (true/false)"}.get(kind, str(kind))


def _coerce(value: Any, kind, key: str) -> Any:
    """`value` as type `kind`, or a ConfigError naming `key`."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        for option in typing.get_args(kind):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
    elif typing.get_origin(kind) is list and isinstance(value, (list, tuple)):
        return [_coerce(item, typing.get_args(kind)[0], f"{key}[{i}]") for i, item in enumerate(value)]
    elif kind is bool and isinstance(value, bool):
        return value
    elif kind is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
            return int(value)
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key} expects {_type_name(kind)}, got {value!r}")


def _unknown(key: str, known: list[str]) -> ConfigError:
    leaf = key.rsplit(".", 1)[-1]
    prefix = key[: -len(leaf)]
    close = difflib.get_close_matches(leaf, known, n=1)
    hint = (f"; did you mean {prefix + close[0]!r}?" if close
            else f"; known keys: {', '.join(prefix + k for k in known)}")
    return ConfigError(f"unknown key {key!r}{hint}")


def _build(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where.rstrip('.') or 'the config'} must be a table of keys, got {values!r}")
    hints = _hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise _unknown(where + key, list(hints))
        kind = hints[key]
        kwargs[key] = _build(kind, value, f"{where}{key}.") if _is_section(kind) else _coerce(value, kind, where + key)
    return cls(**kwargs)


def parse_value(text: str, kind) -> Any:
    """A ``--set`` value: a TOML literal (``3e-4``, ``true``, ``[1, 2]``, ``"s"``), a bare word (a
    string) or a comma-separated list (``1,2,4``) for a list field."""
    is_list = typing.get_origin(kind) is list
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if is_list and "," in text:
            return [parse_value(item.strip(), typing.get_args(kind)[0]) for item in text.split(",") if item.strip()]
        value = text
    return [value] if is_list and not isinstance(value, list) else value


def _apply(values: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. optim.lr=3e-4")
    key, text = (part.strip() for part in assignment.split("=", 1))
    parts = key.split(".")
    cls, node = TrainConfig, values
    for depth, part in enumerate(parts):
        hints = _hints(cls)
        here = ".".join(parts[: depth + 1])
        if part not in hints:
            raise _unknown(here, list(hints))
        kind = hints[part]
        last = depth == len(parts) - 1
        if _is_section(kind):
            if last:
                raise ConfigError(f"--set {assignment!r}: {here} is a section; set one of its keys "
                                  f"({', '.join(here + '.' + k for k in _hints(kind))})")
            node = node.setdefault(part, {})
            cls = kind
        elif not last:
            raise ConfigError(f"--set {assignment!r}: {here} is a value, not a section")
        else:
            node[part] = _coerce(parse_value(text, kind), kind, key)


def from_dict(values: dict[str, Any], overrides: list[str] | dict[str, Any] = ()) -> TrainConfig:
    """A validated config from plain values (a parsed TOML file, a checkpoint's config) and overrides
    (``["optim.lr=3e-4", ...]`` or ``{"optim.lr": 3e-4}``)."""
    values = _deep_copy(values)
    if isinstance(overrides, dict):
        for key, value in overrides.items():
            _apply(values, f"{key}={to_toml_value(value)}")
    else:
        for assignment in overrides:
            _apply(values, assignment)
    config = _build(TrainConfig, values, "")
    validate(config)
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] = ()) -> TrainConfig:
    """Read a TOML file (None: the built-in quick checkerboard run) and apply `overrides`."""
    if path is None:
        from .presets import QUICK

        return from_dict(tomllib.loads(QUICK), overrides)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    try:
        return from_dict(values, overrides)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _deep_copy(values):
    if isinstance(values, dict):
        return {k: _deep_copy(v) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return [_deep_copy(v) for v in values]
    return values


# --------------------------------------------------------------------------- validation


def _check(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key} = {value!r}: {expected}")


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, value, f"choose one of {', '.join(choices)}")


def validate(c: TrainConfig) -> None:
    """Ranges and choices; raises ConfigError naming the key."""
    _check(c.steps >= 1, "steps", c.steps, "must be >= 1")
    _check(c.seed >= 0, "seed", c.seed, "must be >= 0")
    _choice("device", c.device, DEVICES)
    _check(c.threads >= 0, "threads", c.threads, "must be >= 0 (0: torch's default)")
    _choice("backend", c.backend, ("auto", *backends.names()))  # the registry as it is now
    _check(c.accumulate >= 1, "accumulate", c.accumulate, "must be >= 1")
    _choice("autocast", c.autocast, AUTOCAST)
    _check(len(c.ema) >= 1 and all(0 < d < 1 for d in c.ema), "ema", c.ema, "give decays in (0, 1), at least one")
    _check(len(set(c.ema)) == len(c.ema), "ema", c.ema, "decays must differ")
    _check(c.nan_guard >= 1, "nan_guard", c.nan_guard, "must be >= 1 (consecutive skipped steps before stopping)")
    _check(bool(c.out), "out", c.out, "give an output directory")
    o = c.objective
    _check(bool(o.name), "objective.name", o.name, "give a built-in name or a .py file")
    _check(0 <= o.eta < 1, "objective.eta", o.eta, "the diagonal share must lie in [0, 1)")
    _choice("objective.reduction", o.reduction, REDUCTIONS)
    _choice("objective.interpolant", o.interpolant, INTERPOLANTS)
    n = c.network
    _choice("network.kind", n.kind, network_kinds())
    _check(n.width >= 1, "network.width", n.width, "must be >= 1")
    _check(n.depth >= 1, "network.depth", n.depth, "must be >= 1")
    _choice("network.activation", n.activation, ACTIVATIONS)
    _check(n.sigma == "data" or (isinstance(n.sigma, float) and n.sigma > 0), "network.sigma", n.sigma,
           'must be a positive number or "data" (the data\'s std)')
    _check(n.dim >= 0, "network.dim", n.dim, "must be >= 0 (0: the data's dimension)")
    _choice("network.preset", n.preset, ("", *UNET_PRESETS))
    _check(n.model_channels >= 1, "network.model_channels", n.model_channels, "must be >= 1")
    _check(len(n.channel_mult) >= 1 and min(n.channel_mult) >= 1, "network.channel_mult", n.channel_mult,
           "give one positive multiplier per resolution level")
    _check(n.num_blocks >= 1, "network.num_blocks", n.num_blocks, "must be >= 1")
    _check(all(r >= 1 for r in n.attn_resolutions), "network.attn_resolutions", n.attn_resolutions,
           "give positive resolutions (H of the levels with attention)")
    _check(n.channels_per_head >= 1, "network.channels_per_head", n.channels_per_head, "must be >= 1")
    _check(n.dropout == "preset" or (isinstance(n.dropout, (int, float)) and 0 <= n.dropout < 1), "network.dropout",
           n.dropout, 'must lie in [0, 1), or be "preset" (the preset\'s dropout; 0 without a preset)')
    _check(c.data.batch >= 1, "data.batch", c.data.batch, "must be >= 1")
    _check_data_options(c.data)
    p = c.optim
    _choice("optim.name", p.name, tuple(OPTIMIZERS))
    _check(p.lr > 0 and math.isfinite(p.lr), "optim.lr", p.lr, "must be a positive number")
    _check(len(p.betas) == 2 and all(0 <= b < 1 for b in p.betas), "optim.betas", p.betas, "give two numbers in [0, 1)")
    _check(p.eps > 0, "optim.eps", p.eps, "must be > 0")
    _check(p.weight_decay >= 0, "optim.weight_decay", p.weight_decay, "must be >= 0 (0: none)")
    _check(p.clip >= 0, "optim.clip", p.clip, "must be >= 0 (0: no clipping)")
    _choice("optim.schedule", p.schedule, SCHEDULES)
    _check(p.decay_start >= 1, "optim.decay_start", p.decay_start, "must be >= 1")
    _check(0 <= p.min_lr <= p.lr, "optim.min_lr", p.min_lr, "must lie in [0, optim.lr]")
    _check(c.log.every >= 1, "log.every", c.log.every, "must be >= 1")
    _choice("log.progress", c.log.progress, PROGRESS)
    _check(c.checkpoint.every >= 0, "checkpoint.every", c.checkpoint.every, "must be >= 0 (0: only at the end)")
    _check(c.checkpoint.keep_last >= 1, "checkpoint.keep_last", c.checkpoint.keep_last, "must be >= 1")
    e = c.eval
    _check(e.every >= 0, "eval.every", e.every, "must be >= 0 (0: only at the end)")
    _check(all(k >= 1 for k in e.steps), "eval.steps", e.steps, "step counts must be >= 1")
    _check(e.samples >= 1, "eval.samples", e.samples, "must be >= 1")
    _check(e.ema == 0 or e.ema in c.ema, "eval.ema", e.ema, f"must be 0 (the raw weights) or one of ema = {c.ema}")
    unknown = [name for name in e.metrics if name not in METRICS]
    _check(not unknown, "eval.metrics", e.metrics, f"unknown metric(s) {', '.join(unknown)}; registered: "
           f"{', '.join(METRICS)} (empty: the data kind's defaults)")
    _check(len(set(e.metrics)) == len(e.metrics), "eval.metrics", e.metrics, "a metric is listed twice")


def _check_data_options(d: DataConfig) -> None:
    """Each data option that is set must be one the data takes (flowcore.data.make_source)."""
    loaded = LOADED_DATASETS.get(d.name)
    if loaded is not None:
        taken = ("flip", *loaded.options)
    elif d.name in DATASETS:
        taken = ("flip",)
    else:  # a .npy / .npz path (make_source names any other mistake)
        taken = ("flip", "layout")
    for name, value in d.source_options().items():
        _check(name in taken, f"data.{name}", value, f"data {d.name!r} takes no {name} "
               f"(its options: {', '.join(f'data.{t}' for t in taken)})")


# --------------------------------------------------------------------------- writing TOML


def to_toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(values: dict[str, Any]) -> str:
    """Plain values (top-level keys, then one table per section) as TOML text."""
    lines = [f"{k} = {to_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    for name, section in values.items():
        if isinstance(section, dict):
            lines += ["", f"[{name}]"] + [f"{k} = {to_toml_value(v)}" for k, v in section.items()]
    return "\n".join(lines) + "\n"
