"""What a benchmark run measures: the nets (each a registered network kind with its options), the
objectives (built-ins with builder options or ``.py`` files) and `BenchConfig`, validated before
anything runs."""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..nn.registry import build_network, network_kind
from ..train.config import NetworkConfig

SCHEMA = "flowcore-bench/1"
DEFAULT_OBJECTIVES = ("fm", "lsd", "esd", "psd_m", "meanflow")
DEFAULT_BATCHES = (1024, 4096, 16384)
DEFAULT_NETS = ("paper", "small")
# flowcore: the compiled objective on the device's native backend (cpu / cuda); flowcore_torch: on the
# portable torch backend; reference: the interpreter; torch_compile: torch.compile of the reference;
# handwritten: the same loss written by hand in eager PyTorch (flowcore.bench.handwritten);
# handwritten_compile: torch.compile of that.
VARIANTS = ("flowcore", "flowcore_torch", "reference", "torch_compile", "handwritten", "handwritten_compile")
COMPILED_VARIANTS = ("torch_compile", "handwritten_compile")  # what --no-torch-compile (and --quick) leaves out


@dataclass(frozen=True)
class NetSpec:
    """A benchmarked net: `kind` (flowcore.nn.registry) built as ``[network]`` of a training config
    would, with `depth`, `width`, `activation` and any other NetworkConfig fields in `options`,
    trained on batches of the data set `data` (flowcore.data) with σ = `sigma` (None: the data's std).
    `batches` are its default batch sizes; `label` says what it is in a table (default depth x width).
    `stand_in`: for a data set read from files (cifar10), the sample shape of the random images in
    [−1, 1] that stand in for it when no path is given (a step's time does not depend on the pixels)."""

    name: str
    kind: str
    depth: int = 0
    width: int = 0
    activation: str = "gelu"
    options: tuple[tuple[str, Any], ...] = ()
    data: str = "checkerboard"
    sigma: float | None = None
    batches: tuple[int, ...] = DEFAULT_BATCHES
    description: str = ""
    stand_in: tuple[int, ...] | None = None


    @property
    def label(self) -> str:
        return self.description or f"{self.depth}x{self.width}"

    @property
    def title(self) -> str:
        """Name and label as a table shows them, the size said once ("paper 5x512", "mlp-2x32")."""
        return net_title(self.name, self.label)

    def network_config(self) -> NetworkConfig:
        fields = {"kind": self.kind, "activation": self.activation, **dict(self.options)}
        if self.depth:
            fields["depth"] = self.depth
        if self.width:
            fields["width"] = self.width
        return NetworkConfig(**fields)

    def data_source(self, batch: int, seed: int, dtype: torch.dtype = torch.float32, path: str | None = None):
        """The spec's data stream; with `stand_in` and no `path`, seeded random images of that shape."""
        from ..data import make_source
        from ..data.source import DataSource

        if self.stand_in is not None and not path:
            images = torch.rand(batch, *self.stand_in, generator=torch.Generator().manual_seed(seed)) * 2 - 1
            return DataSource(self.data_label(path), batch, seed, array=images, dtype=dtype)
        return make_source(self.data, batch, seed, dtype=dtype, options={"path": path} if path else None)

    def data_label(self, path: str | None = None) -> str:
        """What the rows say they trained on: the data set's name, or the stand-in's shape."""
        if self.stand_in is not None and not path:
            return f"random {'x'.join(map(str, self.stand_in))} in [-1, 1] (no {self.data} path given)"
        return self.data

    def resolved_sigma(self) -> float:
        from ..data import dataset_std

        return float(self.sigma) if self.sigma is not None else float(dataset_std(self.data))

    def build(self, data_shape: tuple[int, ...], sigma: float) -> nn.Module:
        """A fresh network of this spec for samples shaped `data_shape` (its kind's builder)."""
        return build_network(self.kind, self.network_config(), data_shape, sigma)


# The paper's 2-D MLP and a smaller one (docs/math.md §4, §6), the digits UNet preset (docs/math.md §4,
# the image UNet; σ_d = 0.5 and batch 128 as configs/digits-*.toml) and the paper's CIFAR-10 UNet (the
# cifar10 preset, dropout 0.13 on the diagonal calls as configs/cifar10-*.toml; batch 32 on a CPU, --batch
# 128 512 on a GPU; random images of its shape unless --data-path names the CIFAR-10 files). --quick swaps
# in tiny ones, selected by the same --net names but named by what they are: a 2x32 MLP is not "paper".
CIFAR10_SHAPE = (3, 32, 32)
NETS = {"paper": NetSpec("paper", "mlp", 5, 512), "small": NetSpec("small", "mlp", 4, 256),
        "unet-digits": NetSpec("unet-digits", "unet", options=(("preset", "digits"),), data="digits", sigma=0.5,
                               batches=(128,), description="UNet digits 8x8"),
        "unet-cifar": NetSpec("unet-cifar", "unet", options=(("preset", "cifar10"),), data="cifar10", sigma=0.5,
                              batches=(32,), description="UNet CIFAR-10 32x32", stand_in=CIFAR10_SHAPE)}
QUICK_NETS = {"paper": NetSpec("mlp-2x32", "mlp", 2, 32), "small": NetSpec("mlp-1x16", "mlp", 1, 16),
              "unet-digits": NetSpec("unet-digits", "unet", options=(
                  ("model_channels", 8), ("channel_mult", (1, 2)), ("num_blocks", 1), ("attn_resolutions", (4,)),
                  ("channels_per_head", 8)), data="digits", sigma=0.5, batches=(16,), description="UNet 8x8 tiny"),
              "unet-cifar": NetSpec("unet-cifar", "unet", options=(
                  ("model_channels", 8), ("channel_mult", (1, 2)), ("num_blocks", 1), ("attn_resolutions", (16,)),
                  ("channels_per_head", 8), ("dropout", 0.13)), data="cifar10", sigma=0.5, batches=(4,),
                  description="UNet 32x32x3 tiny", stand_in=CIFAR10_SHAPE)}


@dataclass
class BenchConfig:
    """What to run. ``resolved()`` fills the defaults (``quick`` changes them) and validates."""

    objectives: list[str] | None = None
    nets: list[str] | None = None
    batches: list[int] | None = None  # None: each net's own default batches (NetSpec.batches)
    variants: list[str] | None = None  # None: every one of VARIANTS
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
    dtype: str = "float32"  # float16 / bfloat16 only for an op on CUDA (`op`)
    op: str | None = None  # an op timed alone (flowcore bench --op), not training steps
    data_path: str | None = None  # the files of a net's data read from disk (unet-cifar: CIFAR-10); None: stand-in

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
                    load_objective(spec)
                except TypeError as error:
                    raise ValueError(f"objective {spec!r}: {error}") from None
        c.nets = list(c.nets or DEFAULT_NETS)
        for name in c.nets:
            if name not in NETS:
                raise ValueError(f"unknown net {name!r}; choose from {', '.join(NETS)}")
            network_kind(c.net(name).kind)  # a kind that is not registered: a ValueError naming it
        if c.data_path and not os.path.exists(c.data_path):
            raise FileNotFoundError(f"--data-path {c.data_path}: no such file or folder")
        c.batches = list(c.batches) if c.batches else ([64] if c.quick else None)
        if c.batches is not None and any(not isinstance(b, int) or b < 1 for b in c.batches):
            raise ValueError(f"batch sizes must be positive integers, got {c.batches}")
        c.variants = list(c.variants or VARIANTS)
        for variant in c.variants:
            if variant not in VARIANTS:
                raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
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
        half = ("float16", "bfloat16")
        if c.dtype in half and not (c.op and c.devices == ["cuda"]):
            raise ValueError(f"dtype {c.dtype} is for an op on CUDA alone (--op ... --device cuda): the training-step "
                             "rows and the CPU kernels run float32 or float64")
        if c.dtype not in ("float32", "float64", *half):
            raise ValueError(f"dtype must be float32 or float64 (or, for --op on CUDA, float16 / bfloat16), "
                             f"got {c.dtype!r}")
        c.torch_compile = (not c.quick) if c.torch_compile is None else c.torch_compile
        c.profile = c.quick if c.profile is None else c.profile
        return c

    def net(self, name: str) -> NetSpec:
        return (QUICK_NETS if self.quick else NETS)[name]

    def batches_for(self, name: str) -> list[int]:
        """The batch sizes of net `name`: the ones asked for, else the net's defaults."""
        return list(self.batches) if self.batches else list(self.net(name).batches)


def net_title(name: str, label: str) -> str:
    """``"paper", "5x512"`` → "paper 5x512"; ``"mlp-2x32", "2x32"`` → "mlp-2x32" (the label is in the name)."""
    return name if label in name else f"{name} {label}"


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


def load_objective(spec: str, sigma: float | None = None):
    """The objective of `spec` with the net's σ (default: the checkerboard's, the MLP nets' data)."""
    from ..catalog import load
    from ..data import CHECKERBOARD_STD

    name, options = parse_objective(spec)
    return load(name, **options).with_options(sigma=CHECKERBOARD_STD if sigma is None else sigma)
