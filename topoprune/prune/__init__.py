"""Pruning: masks on live models, the method interface, shared allocation rules, the registry.

- :mod:`~topoprune.prune.masks`: ``weight_orig``/``weight_mask`` on Linear and Conv layers;
- :mod:`~topoprune.prune.method`: stages, hooks, the context they receive, shared settings;
- :mod:`~topoprune.prune.allocation` and :mod:`~topoprune.prune.scoring`: scores to masks;
- :mod:`~topoprune.prune.methods`: the registry (``METHODS``) and the first methods;
- :mod:`~topoprune.prune.threshold`: train, threshold, retrain (the regularisation methods' tail);
- :mod:`~topoprune.prune.regularisation` (l1, l2, proximal, l0),
  :mod:`~topoprune.prune.reweighting` (affine scaling), :mod:`~topoprune.prune.growl`,
  :mod:`~topoprune.prune.saliency` (OBD, OBS, Taylor), :mod:`~topoprune.prune.woodfisher`,
  :mod:`~topoprune.prune.units` (APoZ, skeletonization, NISP), :mod:`~topoprune.prune.at_init`
  (SNIP, GraSP, SynFlow), :mod:`~topoprune.prune.lottery` (lottery tickets),
  :mod:`~topoprune.prune.quantization` (trained quantisation, Deep Compression),
  :mod:`~topoprune.prune.sparse_evolution` (SET), :mod:`~topoprune.prune.rigl`,
  :mod:`~topoprune.prune.structured` (filters, channels), :mod:`~topoprune.prune.iss` (LSTM
  hidden units): more methods, registered on import;
- :mod:`~topoprune.prune.curvature`: per-example gradients, Hessian diagonals, Fisher.
"""

from topoprune.prune.masks import add_masks, apply_masks, compression, current_masks
from topoprune.prune.method import Context, Method, Stage, TrainConfig
from topoprune.prune.methods import METHODS
from topoprune.prune.scoring import ScoreConfig, ScoreMethod

# importing these registers their methods in METHODS
from topoprune.prune import growl, regularisation, reweighting  # noqa: F401  isort: skip
from topoprune.prune import saliency, units, woodfisher  # noqa: F401  isort: skip
from topoprune.prune import at_init, lottery, rigl, sparse_evolution  # noqa: F401  isort: skip
from topoprune.prune import quantization, structured  # noqa: F401  isort: skip
from topoprune.prune import iss  # noqa: F401  isort: skip
from topoprune.prune import generated  # noqa: F401  isort: skip
from topoprune.prune import epsilon_resnet  # noqa: F401  isort: skip

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
