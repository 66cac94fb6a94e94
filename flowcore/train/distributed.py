"""Data-parallel training on torch.distributed, launched by ``torchrun``.

``torch.func.jvp`` does not run through the DDP wrapper (pytorch#102197), so the trainer calls the
plain module and this file all-reduces the gradients itself: after backward, every gradient and a
few step statistics are flattened into ONE buffer, summed over the ranks and divided by the world
size. Every rank then holds the same averaged gradient, takes the same optimizer step and keeps
the same weights; :func:`check_agreement` verifies that cheaply (a parameter checksum) at every
evaluation. Ranks draw the same global batch and keep their shard (see ``batch_stream.py``); only rank 0
logs, evaluates and writes checkpoints.

Run with ``torchrun --standalone --nproc_per_node=N -m flowcore.cli train CONFIG.toml``
(gloo on the CPU, NCCL on GPUs).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


class RanksDisagree(RuntimeError):
    """The ranks' parameters differ: data-parallel training lost its lock-step."""


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device = 'cuda', but torch sees no CUDA device (use device = 'cpu' or 'auto')")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        index = local_rank % max(torch.cuda.device_count(), 1)
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def setup(device: str = "auto") -> Context:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE > 1), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    where = _device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if where.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    if dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), local_rank, where)
    return Context(0, 1, 0, where)


def teardown() -> None:
    """Leave the process group; call it on every rank, after a last barrier, once training ends
    normally (a rank that raised must not: its peers may be blocked in a collective)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def reduce_gradients(parameters: list[torch.nn.Parameter], stats: torch.Tensor, context: Context) -> torch.Tensor:
    """Average every parameter's gradient and `stats` (a 1-D tensor) over the ranks, in one all-reduce.

    A parameter without a gradient counts as zero (and receives the average). Returns the averaged
    `stats`; alone, returns `stats` and leaves the gradients untouched.
    """
    if not context.distributed:
        return stats
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    dtype = grads[0].dtype if grads else stats.dtype
    flat = torch.cat([g.reshape(-1) for g in grads] + [stats.to(dtype)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= context.world
    offset = 0
    for p, g in zip(parameters, grads):
        count = g.numel()
        if p.grad is None:
            p.grad = g
        p.grad.copy_(flat[offset:offset + count].view_as(g))
        offset += count
    return flat[offset:].to(stats.dtype)


def checksum(parameters) -> torch.Tensor:
    """Two float64 numbers that change with any parameter: Σ p and Σ p·(position weights)."""
    total = torch.zeros(2, dtype=torch.float64, device=next(iter(parameters)).device)
    for index, p in enumerate(parameters):
        values = p.detach().reshape(-1).to(torch.float64)
        weights = torch.arange(1, values.numel() + 1, dtype=torch.float64, device=values.device) * (index + 1)
        total[0] += values.sum()
        total[1] += (values * weights.remainder(97)).sum()
    return total


def check_agreement(parameters, context: Context, step: int) -> None:
    """Raise `RanksDisagree` unless every rank holds bitwise the same checksum."""
    if not context.distributed:
        return
    mine = checksum(list(parameters))
    both = torch.cat([mine, -mine]).cpu() if dist.get_backend() == "gloo" else torch.cat([mine, -mine])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    high, low = both[:2], -both[2:]
    if not torch.equal(high, low):
        raise RanksDisagree(f"step {step}: the ranks' parameters differ (checksums from {low.tolist()} to "
                            f"{high.tolist()}); data-parallel training is no longer in lock-step")


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()
