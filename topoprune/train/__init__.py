"""Training engine: stages of masked SGD with checkpoints and exact resume."""

from topoprune.train.engine import Stage, TrainingState, TrainSettings, error_rate, run_stages

__all__ = ["Stage", "TrainSettings", "TrainingState", "error_rate", "run_stages"]
