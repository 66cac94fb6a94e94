"""Data-parallel training: two gloo processes on the CPU train the same weights as one process on
the same global batch, and ranks that drift apart are caught."""
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from flowcore.nn.unet.layers import MPConv
from flowcore.train import Trainer, distributed, load_config
from flowcore.train import checkpoint as ckpt

TINY = ["steps=4", "network.width=16", "network.depth=2", "data.batch=64", "eval.samples=512", "eval.steps=1",
        "eval.ema=0.999", "log.every=1", "log.tensorboard=false", "log.figures=false", "log.progress=off",
        "checkpoint.every=0"]


def _train_on_two_gloo_ranks(tmp_path, overrides: list[str], steps: int) -> tuple[Path, dict]:
    """`flowcore train` of `overrides` under torchrun with 2 CPU processes: the config file and the
    checkpoint the ranks wrote (rank 0 reports once)."""
    config = tmp_path / "run.toml"
    config.write_text(load_config(None, overrides + [f"out={tmp_path / 'unused'}"]).to_toml())
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "flowcore.cli",
         "train", str(config), "--out", str(tmp_path / "ddp")],
        capture_output=True, text=True, env=env, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(2 processes, " in result.stdout and result.stdout.count(f"trained {steps} steps") == 1
    two = ckpt.read(ckpt.resolve(tmp_path / "ddp"))
    assert two["world"] == 2 and two["step"] == steps
    return config, two


def test_two_gloo_ranks_match_one_process(tmp_path):
    config, two = _train_on_two_gloo_ranks(tmp_path, TINY, steps=4)

    single = Trainer(load_config(config, [f"out={tmp_path / 'single'}"]))
    single.train()
    one = single.state_dict()
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    for decay, shadows in one["ema"]["shadows"].items():
        for a, b in zip(two["ema"]["shadows"][decay], shadows):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# A tiny FlowMapUNet (8×8 digits, 4 channels, two levels, one block, attention at 4×4) on the digits data:
# a few LSD steps, the evaluation cut down to 32 samples of one step and the energy distance.
TINY_UNET = ["steps=3", "network.kind=unet", "network.sigma=0.5", "network.model_channels=4",
             "network.channel_mult=1,2", "network.num_blocks=1", "network.attn_resolutions=4",
             "network.channels_per_head=4", "data.name=digits", "data.batch=16", "optim.lr=1e-2", "optim.clip=1",
             "eval.samples=32", "eval.steps=1", "eval.ema=0.999", "eval.metrics=energy", "log.every=1",
             "log.tensorboard=false", "log.figures=false", "log.progress=off", "checkpoint.every=0", "backend=torch"]


def test_two_gloo_ranks_train_a_unet_like_one_process(tmp_path):
    """The UNet through torchrun: the JVP's gradients all-reduced by hand and the sphere projection
    after each step (every rank projects its own copy of the same averaged update) leave two ranks
    with the weights one process trains on the whole global batch."""
    config, two = _train_on_two_gloo_ranks(tmp_path, TINY_UNET, steps=3)

    single = Trainer(load_config(config, [f"out={tmp_path / 'single'}"]))
    initial = {name: value.detach().clone() for name, value in single.net.state_dict().items()}
    single.train()
    one = single.state_dict()
    # float32: the two ranks sum their half-batch gradients in another order than one process does
    # (a few ulps, ~1e-7 relative), and RAdam's first steps move each weight by ~lr = 1e-2, so the
    # weights agree to ~1e-7 relative plus lr · 1e-7 absolute; the bounds leave a factor 10 over that.
    moved = [name for name, value in one["model"].items() if not torch.equal(value, initial[name])]
    assert moved, "three optimiser steps moved no weight"
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    for decay, shadows in one["ema"]["shadows"].items():
        for a, b in zip(two["ema"]["shadows"][decay], shadows):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the ranks projected too: every MP weight row is back on the unit sphere (to float32 rounding)
    mp_weights = [f"{name}.weight" for name, module in single.net.named_modules() if isinstance(module, MPConv)]
    assert mp_weights
    for name in mp_weights:
        norms = two["model"][name].flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-6, msg=name)


def test_two_ranks_start_the_quick_run_over_together(tmp_path):
    """No CONFIG: the built-in quick run starts over in its folder. Under torchrun every rank runs
    the command; only rank 0 may remove the old checkpoints, after every rank has looked (two ranks
    removing one folder at once can make one of them fail)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "flowcore.cli", "train", "--out", str(tmp_path / "quick"), *[f"--set={o}" for o in TINY]]
    for attempt in range(2):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("started the quick run over") == attempt  # rank 0 says it, once
    assert ckpt.read(ckpt.resolve(tmp_path / "quick"))["world"] == 2


def _worker(rank: int, world: int, init: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    context = distributed.Context(rank, world, 0, torch.device("cpu"))
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.full((3,), float(rank + 1))            # ranks hold gradients 1 and 2
    stats = distributed.reduce_gradients([p], torch.tensor([10.0 * (rank + 1)]), context)
    distributed.check_agreement([p], context, step=0)     # equal parameters: no error
    with torch.no_grad():
        p.add_(rank)                                      # now they differ
    try:
        distributed.check_agreement([p], context, step=7)
        caught = ""
    except distributed.RanksDisagree as error:
        caught = str(error)
    torch.save({"grad": p.grad, "stats": stats, "caught": caught}, f"{results}/{rank}.pt")
    dist.destroy_process_group()


def test_gradient_average_and_disagreement_check(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    # fork: the children need no fresh interpreter (and the workers run no OpenMP region)
    mp.start_processes(_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    for rank in range(2):
        out = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert torch.equal(out["grad"], torch.full((3,), 1.5)) and out["stats"].tolist() == [15.0]
        assert "step 7: the ranks' parameters differ" in out["caught"]
