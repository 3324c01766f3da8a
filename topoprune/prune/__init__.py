"""Pruning: masks on live models, the method interface, shared allocation rules, the registry.

- :mod:`~topoprune.prune.masks`: ``weight_orig``/``weight_mask`` on Linear and Conv layers;
- :mod:`~topoprune.prune.method`: stages, hooks, the context they receive, shared settings;
- :mod:`~topoprune.prune.allocation` and :mod:`~topoprune.prune.scoring`: scores to masks;
- :mod:`~topoprune.prune.methods`: the registered methods (``METHODS``).
"""

from topoprune.prune.masks import add_masks, apply_masks, compression, current_masks
from topoprune.prune.method import Context, Method, Stage, TrainConfig
from topoprune.prune.methods import METHODS
from topoprune.prune.scoring import ScoreConfig, ScoreMethod

__all__ = [
    "METHODS",
    "Context",
    "Method",
    "ScoreConfig",
    "ScoreMethod",
    "Stage",
    "TrainConfig",
    "add_masks",
    "apply_masks",
    "compression",
    "current_masks",
]
