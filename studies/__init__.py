"""Studies: one module per study, using topoprune's public API only.

Each study module defines a frozen ``Config`` dataclass, a ``QUICK`` config (minutes, used by
the test suite) and ``run(config, out) -> dict``. ``topoprune study run NAME`` finds them here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from topoprune.registry import Registry

STUDIES: Registry[str] = Registry("study")
STUDIES.register("pruning-table")("topoprune_studies.pruning_table")
STUDIES.register("scale-free")("topoprune_studies.scale_free")
STUDIES.register("continual-pa")("topoprune_studies.continual_pa")
STUDIES.register("progressive")("topoprune_studies.progressive")
STUDIES.register("regularisation")("topoprune_studies.regularisation")
STUDIES.register("saliency")("topoprune_studies.saliency")
STUDIES.register("sparse-training")("topoprune_studies.sparse_training")
STUDIES.register("deep-compression")("topoprune_studies.deep_compression")
STUDIES.register("structured")("topoprune_studies.structured")
STUDIES.register("topology-atlas")("topoprune_studies.topology_atlas")


def load_study(name: str) -> ModuleType:
    return importlib.import_module(STUDIES[name])
