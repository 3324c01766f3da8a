"""Benchmark: what the topology atlas's larger grid (``--preset large``) costs per worker.

    python -m benchmarks.atlas_grid_cost [--results results/topology_atlas]
        [--out results/benchmarks/atlas_grid_cost.json]

Times one epoch of dense training of each of the preset's models on MNIST at 1 torch thread (as
the study's runs use), each in this process after a warm-up epoch of LeNet-300-100, and scales
the default grid's measured worker seconds (``task_seconds`` in the study's ``summary.json``:
the methods' runs, their measurements and the controls) to the preset: the methods' runs and
measurements by the number of sparsities, everything by each model's epoch time relative to
LeNet-300-100's. An estimate from two measurements, not a run of the larger grid: scoring costs
(OBD's, WoodFisher's) and the fits grow differently with model size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from topoprune.data import load_dataset
from topoprune.provenance import provenance
from topoprune.prune.methods import METHODS
from topoprune.train.engine import TrainSettings
from topoprune.train.run import prune_run
from topoprune_studies.topology_atlas import PRESETS, Config


def epoch_seconds(model: str) -> float:
    """Wall seconds of one dense epoch of ``model`` on MNIST (evaluation included)."""
    config = METHODS["dense"].Config(epochs=1, lr=0.05)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        prune_run(model, "mnist", "dense", config, TrainSettings(seed=0, device="cpu"),
                  Path(folder), data=load_dataset("mnist"))  # fmt: skip
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/topology_atlas")
    parser.add_argument("--out", default="results/benchmarks/atlas_grid_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    summary = json.loads((Path(args.results) / "summary.json").read_text())
    measured = summary["task_seconds"]
    default, large = Config(), PRESETS["large"]
    epoch_seconds("lenet300")  # warm-up: data loading and first-call costs
    epochs = {model: epoch_seconds(model) for model in large.models}
    scale = len(large.sparsities) / len(default.sparsities)
    per_model = {
        model: (scale * (measured["train"] + measured["measure"]) + measured["control"])
        * epochs[model]
        / epochs["lenet300"]
        for model in large.models
    }
    total = sum(per_model.values())
    record = {
        "default_grid_task_seconds": measured,
        "default_grid_wall_seconds": summary.get("total_wall_seconds"),
        "epoch_seconds_1_thread": epochs,
        "large_grid_estimated_worker_seconds": per_model,
        "large_grid_estimated_worker_hours": total / 3600,
        "large_grid_hours_on": {f"{n} workers": total / 3600 / n for n in (2, 16, 64)},
        "provenance": provenance(("topoprune", "torch", "numpy")),
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for model in large.models:
        print(f"{model}: {epochs[model]:.2f} s per epoch, about {per_model[model] / 3600:.1f} "
              "worker-hours in the large grid")  # fmt: skip
    print(
        f"large grid: about {total / 3600:.1f} worker-hours "
        f"({total / 3600 / 64:.2f} h on 64 workers, {total / 3600 / 2:.1f} h on 2)"
    )


if __name__ == "__main__":
    main()
