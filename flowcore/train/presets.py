"""Built-in configurations that must work without the repository's configs/ folder.

``QUICK`` is what ``flowcore train`` runs with no config file: a short LSD run on the checkerboard
that fits in a few minutes on two CPU cores (configs/checkerboard-quick.toml is the same text).
``BUDGETS`` are the settings of ``flowcore reproduce checkerboard --budget small|paper``, applied
to each objective (configs/checkerboard-small.toml holds the small one). ``DIGITS_RECIPE`` and
``DIGITS_BUDGETS`` are those of ``flowcore reproduce digits --budget small|tiny``: the recipe of
configs/digits-{lsd,psd-m,psd-u,fm}.toml, and per budget its length, threads and checkpoints.
"""
from __future__ import annotations

QUICK = """\
# The quick checkerboard run that `flowcore train` starts with no config: LSD (docs/math.md §2) with
# the paper's recipe (docs/math.md §3) except for a smaller network, a shorter run and, to suit it, a
# higher learning rate annealed to zero. About 2-3 minutes on a CPU. The paper's numbers (docs/math.md
# §5) take 150k steps of batch 100k: expect a recognisable board here, not the paper's KL.
steps = 8000
seed = 0
threads = 1                     # a net this small is as fast on one thread, and immune to a busy CPU
ema = [0.999, 0.9999]
out = "runs/quickstart"

[objective]
name = "lsd"
eta = 0.75

[network]
width = 128
depth = 4
activation = "gelu"

[data]
name = "checkerboard"
batch = 1024

[optim]
lr = 3e-3
clip = 10.0
schedule = "cosine"

[log]
every = 100

[checkpoint]
every = 2000
keep_last = 2

[eval]
every = 0
steps = [1, 2, 4, 8, 16]
samples = 65536
ema = 0.999
"""

# Overrides of the paper recipe (TrainConfig's defaults) per reproduce budget.
BUDGETS: dict[str, dict[str, object]] = {
    # One step of each of LSD, ESD, PSD-U, PSD-M takes ≈ 42 + 45 + 35 + 34 ms on one CPU thread
    # (4×256 GELU, batch 1024): 10k steps ≈ 26 min of training, ≈ 28 min with the evaluations (32 min
    # measured while other work shared the two cores).
    "small": {"steps": 10000, "threads": 1, "network.width": 256, "network.depth": 4, "data.batch": 1024,
              "optim.lr": 3e-3, "optim.schedule": "cosine", "eval.ema": 0.999, "checkpoint.every": 2000,
              "log.every": 100},
    "paper": {"data.batch": 100000},   # docs/math.md §5: batch 100k, 150k steps (TrainConfig's defaults otherwise)
}

# The digits recipe of configs/digits-{lsd,psd-m,psd-u,fm}.toml (docs/math.md §3-§4: the `digits` UNet,
# RAdam, lr0 1e-2 with the paper's decay, clip 1, EMA 0.999/0.9999, seed 42, batch 128), as overrides of
# TrainConfig's defaults; tests/test_reproduce.py checks that it is the shipped configs' recipe. The
# budgets below set the length (the decay start a third of it, as in the configs), the threads, the checkpoints.
DIGITS_RECIPE: dict[str, object] = {
    "seed": 42, "backend": "torch", "ema": [0.999, 0.9999], "nan_guard": 10,
    "network.kind": "unet", "network.preset": "digits", "network.sigma": 0.5,
    "data.name": "digits", "data.batch": 128,
    "optim.lr": 1e-2, "optim.clip": 1.0, "optim.schedule": "paper",
    "log.every": 50, "checkpoint.keep_last": 2,
    "eval.every": 0, "eval.steps": [1, 2, 4, 8, 16], "eval.samples": 1024, "eval.ema": 0.999,
}

# Overrides of DIGITS_RECIPE per `flowcore reproduce digits` budget.
DIGITS_BUDGETS: dict[str, dict[str, object]] = {
    # Calibrated on the 2-core development machine while other jobs shared it (load 2-4; 10 steps of
    # each objective, batch 128, backend torch, one thread): a step of LSD, PSD-M, PSD-U, FM took
    # 0.70, 0.57, 0.37, 0.41 s (2.05 s for the four; quiet, on two threads, LSD took 0.59 s and PSD-M
    # 0.25 s). One k-step evaluation row (1 + 2 + 4 + 8 + 16 = 31 calls on 1,024 samples) took 32-40 s,
    # FM's 64-step Heun row (128 calls) 140 s: ≈ 5.5 min of evaluation for the table. So 1,200 steps
    # ≈ 41 min of training + 5.5 of evaluation ≈ 46 min, inside 60 with a margin for a busier CPU.
    # One thread: on a shared CPU two threads per run can be many times slower (PSD-U's step took
    # 5.1 s on two threads at load 6, 20× its quiet time), one is immune to it.
    "small": {"steps": 1200, "threads": 1, "optim.decay_start": 400, "checkpoint.every": 300},
    # For tests: seconds end to end (a tiny UNet of explicit sizes, two steps of a small batch, few
    # evaluation samples), every output of the small budget.
    "tiny": {"steps": 2, "threads": 1, "network.preset": "", "network.model_channels": 8, "network.channel_mult": [1],
             "network.num_blocks": 1, "network.attn_resolutions": [], "network.channels_per_head": 8,
             "data.batch": 16, "optim.decay_start": 1, "checkpoint.every": 1, "log.every": 1,
             "log.tensorboard": False, "log.progress": "off", "eval.samples": 64},
}
