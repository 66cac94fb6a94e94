"""The batch of one optimizer step, drawn GLOBALLY and then split into shards.

Every rank draws the same global batch from the same seeded streams — data `x1` from the data
source, noise `x0` (and `z`) and every term's times from one generator — and keeps its shard. Shard
``j`` of ``S = world × accumulate`` takes, within each term's rows, rows ``j, j + S, j + 2S, …``;
micro-batch ``m`` of rank ``r`` is shard ``m·world + r``. The shards partition the global batch and
each holds exactly 1/S of every term, so with either batch reduction (docs/math.md §3) the mean of the
shards' losses IS the global batch's loss, and averaging their gradients gives the gradient of one
process training on the whole batch: results do not depend on how many ranks or micro-batches run.
Drawing the global batch on every rank is cheap next to a training step for 2-D data.

The one exception is dropout (a network with ``dropout_rate`` > 0): each shard's dropout terms get
their own seed (flowcore.terms.shard_seeds), and the masks depend on the shard's shape, so with
dropout the result is a statistically equivalent run, not the bitwise same one.

Before the first batch is drawn, :func:`check_batch_memory` compares a lower bound of what a step
holds at once — the global batch's data (x1, x0 and z) and, for each micro-batch, the largest tensor
one network call makes (:func:`largest_activation`, measured) — with the memory available, so that
``data.batch = 1e9`` is refused in one line instead of being killed by the kernel without a word.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from ..lang.objective import Objective
from ..terms import draw_dropout_seeds, draw_noise_and_times, shard_seeds, term_slices


@dataclass
class Batch:
    """One step's global batch: term k owns rows ``slices[k]`` of x1, x0, z and the times ``times[k]``."""

    x1: torch.Tensor
    x0: torch.Tensor
    z: torch.Tensor | None
    times: list[dict]
    slices: list[slice]
    dropout_seeds: dict[str, int]


@dataclass
class Shard:
    x1: torch.Tensor
    x0: torch.Tensor
    z: torch.Tensor | None
    times: dict[str, dict]
    dropout_seeds: dict[str, int]


def check_split(objective: Objective, batch: int, shards: int) -> None:
    """Each of `shards` shards must get exactly 1/shards of every term (see the module docstring)."""
    if _splits_evenly(objective, batch, shards):
        return
    counts = objective.split(batch)
    detail = ", ".join(f"{term.name} {count}" for term, count in zip(objective.terms, counts))
    better = next(b for b in range(max(batch, shards), batch + 1000 * shards + 1)
                  if _splits_evenly(objective, b, shards))
    raise ValueError(f"data.batch = {batch} cannot be split into {shards} equal shards (world size × accumulate): "
                     f"the terms get {detail} samples, and each must be a multiple of {shards} whose split "
                     f"matches the objective's shares; try data.batch = {better}")


def _splits_evenly(objective: Objective, batch: int, shards: int) -> bool:
    if batch % shards:
        return False
    counts = objective.split(batch)
    return (all(c % shards == 0 for c in counts)
            and objective.split(batch // shards) == tuple(c // shards for c in counts))


def check_batch_memory(objective: Objective, source, device: torch.device, network=None, micro_batch: int = 0) -> None:
    """Refuse a step that cannot fit: the global batch's data tensors (x1, x0, and z for a stochastic
    interpolant) plus, when `network` is given, `micro_batch` samples of its largest activation must
    fit in the memory available on `device` — on a GPU x1 also in host memory, where it is drawn.
    Both are lower bounds (the step keeps more), so nothing that fits is refused."""
    per_tensor = math.prod(source.dims) * torch.empty((), dtype=source.dtype).element_size()
    names = ["x1", "x0"] + (["z"] if objective.interpolant.stochastic else [])
    activation = largest_activation(network, source.dims, source.dtype, device) if network is not None else 0
    micro_batch = micro_batch or source.batch_size
    parts = f"{', '.join(names)}: {per_tensor * len(names)} bytes a sample"
    if activation:
        parts += (f"; the network's largest activation: {activation} bytes a sample, {micro_batch} samples a "
                  "micro-batch")
    places = [(device, source.batch_size * per_tensor * len(names) + micro_batch * activation, parts)]
    if device.type != "cpu":
        on_host = f"x1, drawn on the CPU: {per_tensor} bytes a sample"
        places.append((torch.device("cpu"), source.batch_size * per_tensor, on_host))
    for place, needed, what in places:
        available = available_memory(place)
        if available is not None and needed > available[0]:
            lower = "lower data.batch" + (", or split it with accumulate" if micro_batch * activation > needed / 2
                                          else "")
            raise ValueError(f"data.batch = {source.batch_size} needs at least {_size(needed)} for one step ({what}; "
                             f"what else the step keeps comes on top), more than the {_size(available[0])} of "
                             f"{available[1]}; {lower}")


def largest_activation(network, dims: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> int:
    """Bytes one sample adds to the largest tensor a call of `network` makes (any module's output),
    measured without gradients on batches of one and two samples: every call on a micro-batch
    materialises that tensor whole, whatever the network fuses or recomputes. 0 if it cannot tell."""
    def outputs(count: int) -> list[int]:
        sizes = []
        hooks = [module.register_forward_hook(
            lambda module, inputs, output: sizes.append(output.numel() * output.element_size())
            if isinstance(output, torch.Tensor) else None) for module in network.modules()]
        try:
            with torch.no_grad():
                x = torch.zeros(count, *dims, dtype=dtype, device=device)
                times = torch.full((count,), 0.5, dtype=dtype, device=device)
                network(times, times, x)
        finally:
            for hook in hooks:
                hook.remove()
        return sizes

    try:
        one, two = outputs(1), outputs(2)
    except Exception:  # noqa: BLE001 - a network that cannot be called so leaves the check to the data
        return 0
    return max((b - a for a, b in zip(one, two)), default=0) if len(one) == len(two) else 0


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """(bytes available, what they are) on `device`: a GPU's free memory; on the CPU psutil's
    available memory, else /proc/meminfo's MemAvailable, else the free pages; None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free memory on {device}"
    try:
        import psutil
    except ImportError:
        pass
    else:
        return psutil.virtual_memory().available, "available RAM"
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available RAM"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free RAM"
    except (AttributeError, ValueError, OSError):
        return None


def _size(count: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


class BatchStream:
    """Global batches: data from `source` (a flowcore.data.DataSource); x0, z and the times from
    `generator`, drawn by flowcore.terms.draw_noise_and_times (σ and the interpolant are the objective's)."""

    def __init__(self, objective: Objective, source, generator: torch.Generator, device: torch.device,
                 shards: int = 1, network=None):
        """`network`: the model trained, asked whether it drops out (its dropout seeds are drawn after
        the other draws; a network without dropout draws none, leaving the stream as it was)."""
        check_split(objective, source.batch_size, shards)
        self.objective, self.source, self.network = objective, source, network
        self.generator, self.device, self.shards = generator, torch.device(device), shards

    def next(self) -> Batch:
        x1 = next(self.source).to(self.device)
        drawn = draw_noise_and_times(self.objective, x1, self.generator)
        slices = [part for _, part in term_slices(self.objective, x1.shape[0])]
        seeds = draw_dropout_seeds(self.objective, self.network, self.generator) if self.network is not None else {}
        return Batch(x1, drawn.x0, drawn.z, drawn.times, slices, seeds)

    def shard(self, batch: Batch, index: int) -> Shard:
        """Shard `index` of `self.shards`: rows index::shards of every term, terms in order."""
        if self.shards == 1:
            return Shard(batch.x1, batch.x0, batch.z, {term.name: drawn for term, drawn in
                                                       zip(self.objective.terms, batch.times)}, batch.dropout_seeds)
        rows = torch.cat([torch.arange(part.start + index, part.stop, self.shards) for part in batch.slices])
        rows = rows.to(self.device)
        times = {term.name: {symbol: value[index::self.shards] for symbol, value in drawn.items()}
                 for term, drawn in zip(self.objective.terms, batch.times)}
        pick = lambda x: None if x is None else x.index_select(0, rows)
        return Shard(pick(batch.x1), pick(batch.x0), pick(batch.z), times, shard_seeds(batch.dropout_seeds, index))
