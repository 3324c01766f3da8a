"""The task most studies' run specs name: one `topoprune prune` run of a zoo model on a
registered data set (or the start of its training split), optionally started from another run's
checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from topoprune.data import load_dataset
from topoprune.data.cache import write_json_atomic
from topoprune.prune.method import TrainConfig
from topoprune.prune.methods import METHODS
from topoprune.train.engine import TrainSettings
from topoprune.train.run import prune_run

from ._data import subset

TRAIN_TASK = "topoprune_studies._runs:train"


def config_settings(config: TrainConfig) -> dict:
    """A method's config as JSON values (tuples become lists), for a run spec's settings."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_settings(method: str, values: dict) -> TrainConfig:
    """The method's config back from :func:`config_settings` (lists become tuples again)."""
    return METHODS[method].Config(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    )


def train(folder: Path, inputs: dict, *, model: str, method: str, seed: int, device: str,
          config: dict, dataset: str = "mnist", train_subset: int = 0, init: str | None = None,
          regrow: str | None = None, batch_size: int = 128,
          from_runs: dict[str, str] | None = None) -> dict:  # fmt: skip
    """Run ``method`` on ``model`` in ``folder`` (resuming a killed attempt) on ``dataset``, its
    training split cut to the first ``train_subset`` images (0: all); ``init`` is the key of the
    needed run whose final checkpoint this one starts from; ``from_runs`` maps config fields
    (e.g. ``like``, ``masks``) to the needed runs whose checkpoint paths they take."""
    config = {**config, **{name: inputs[key]["checkpoint"] for name, key in
                           (from_runs or {}).items()}}  # fmt: skip
    settings = TrainSettings(seed=seed, device=device, batch_size=batch_size)
    start = inputs[init]["checkpoint"] if init is not None else None
    data = subset(load_dataset(dataset), train_subset)
    return prune_run(model, dataset, method, config_from_settings(method, config), settings,
                     folder, resume=True, data=data, init=start, regrow=regrow)  # fmt: skip


def describe(executor) -> str:
    """What ran the runs, for a study's summary (``None``: the driver, one run at a time)."""
    return executor.describe() if executor is not None else "local, 1 jobs, in the driver"


def without_spec(record: dict) -> dict:
    """A run's record without the runner's ``run_spec``: what the study's own files hold."""
    return {k: v for k, v in record.items() if k != "run_spec"}


def write_if_changed(path: Path, record: dict) -> None:
    """Write ``record`` as JSON unless ``path`` holds it already (a rerun leaves files alone)."""
    text = json.dumps(record, sort_keys=True)  # compared as text: NaN equals NaN
    try:
        if json.dumps(json.loads(path.read_text()), sort_keys=True) == text:
            return
    except (OSError, ValueError):
        pass
    write_json_atomic(path, record)
