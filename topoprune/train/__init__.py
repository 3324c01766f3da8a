"""Training engine: a method's stages with their hooks, any optimizer, loss and data, checkpoints
and exact resume; :func:`prune_model` prunes any ``nn.Module``."""

from topoprune.train.engine import Stage, TrainingState, TrainSettings, error_rate, run_stages
from topoprune.train.run import PruneResult, prune_model, prune_run

__all__ = [
    "PruneResult",
    "Stage",
    "TrainSettings",
    "TrainingState",
    "error_rate",
    "prune_model",
    "prune_run",
    "run_stages",
]
