"""Built-in configurations that must work without the repository's configs/ folder.

``QUICK`` is what ``flowcore train`` runs with no config file: a short LSD run on the checkerboard
that fits in a few minutes on two CPU cores (configs/checkerboard-quick.toml is the same text).
``BUDGETS`` are the settings of ``flowcore reproduce checkerboard --budget small|paper``, applied
to each objective (configs/checkerboard-small.toml holds the small one).
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
