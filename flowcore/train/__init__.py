"""Training flow maps: config, trainer, checkpoints, data-parallel runs (see trainer.py first).

    from flowcore.train import Trainer, load_config
    summary = Trainer(load_config("configs/checkerboard-lsd.toml", ["steps=1000"])).train()
"""
from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig, from_dict, load_config
from .trainer import Summary, Trainer, TrainingStopped, train

__all__ = ["CheckpointError", "ConfigError", "Summary", "TrainConfig", "Trainer", "TrainingStopped", "from_dict",
           "load_config", "train"]
