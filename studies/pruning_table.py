"""Study: the classic MNIST pruning tables (Han et al. 2015; Guo et al. 2016), reproduced.

    topoprune study run pruning-table [--quick]

LeNet-300-100 and LeNet-5, each pruned by magnitude (train, prune, retrain, iterated) and by
Dynamic Network Surgery, over several seeds; mean +- std beside the papers' numbers. Each run is
a `topoprune prune` run, a spec keyed ``<model>-<method>-seed<k>`` (folder
``runs/<key>-<hash>/``), started from the seed's one dense model (``<model>-dense-seed<k>``,
shared by both methods); a finished run is never rerun, so an interrupted study resumes where it
stopped, and the runs can go to local processes or a Ray cluster (docs/running.md).
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from topoprune.provenance import provenance
from topoprune.prune.methods import METHODS
from topoprune.runner import RunSpec, run_specs
from topoprune.train.engine import resolve_device

from ._runs import TRAIN_TASK, config_settings, describe
from ._summary import write_study_summary

# The papers' numbers: test error dense -> pruned, compression, kept % per weight layer.
PAPER = {
    ("lenet300", "magnitude"): {"source": "Han et al. 2015", "dense_error": 1.64, "error": 1.59,
                                "compression": 12, "kept": [8, 9, 26]},
    ("lenet5", "magnitude"): {"source": "Han et al. 2015", "dense_error": 0.80, "error": 0.77,
                              "compression": 12, "kept": [66, 12, 8, 19]},
    ("lenet300", "dns"): {"source": "Guo et al. 2016", "dense_error": 2.28, "error": 1.99,
                          "compression": 56, "kept": [1.8, 1.8, 5.5]},
    ("lenet5", "dns"): {"source": "Guo et al. 2016", "dense_error": 0.91, "error": 0.91,
                        "compression": 108, "kept": [14.2, 3.1, 0.7, 4.3]},
}  # fmt: skip

# Hyper-parameters per (model, method). "dense" is each seed's shared model (cosine schedule); both
# methods start from it. Magnitude uses the papers' per-layer kept fractions as targets, reached in
# `iterations` prune-retrain steps; DNS's c per layer was searched on seed 0
# (docs/studies/pruning-table.md says how).
SETTINGS = {
    ("lenet300", "dense"): {"epochs": 30, "lr": 0.05, "schedule": "cosine"},
    ("lenet300", "magnitude"): {"dense_epochs": 0, "lr": 0.05, "retrain_lr_factor": 0.4,
                                "weight_decay": 1e-4, "iterations": 5, "retrain_epochs": 8,
                                "sparsity": (0.92, 0.91, 0.74), "schedule": "cosine"},
    ("lenet300", "dns"): {"dense_epochs": 0, "epochs": 30, "lr": 0.01, "c": (5.5, 4.5, 2.5),
                          "schedule": "cosine"},
    ("lenet5", "dense"): {"epochs": 15, "lr": 0.05, "schedule": "cosine"},
    ("lenet5", "magnitude"): {"dense_epochs": 0, "lr": 0.05, "retrain_lr_factor": 0.2,
                              "iterations": 4, "retrain_epochs": 3,
                              "sparsity": (0.34, 0.88, 0.92, 0.81), "schedule": "cosine"},
    ("lenet5", "dns"): {"dense_epochs": 0, "epochs": 18, "lr": 0.01, "c": (1.6, 3.8, 6.5, 3.0),
                        "schedule": "cosine"},
}  # fmt: skip


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = ("lenet300", "lenet5")
    methods: tuple[str, ...] = ("magnitude", "dns")
    seeds: tuple[int, ...] = (0, 1, 2)
    epoch_scale: float = 1.0  # multiplies every epoch count (the quick mode shrinks them)
    device: str = "auto"
    overrides: dict = field(default_factory=dict)


QUICK = Config(models=("lenet300",), seeds=(0,), epoch_scale=0.05)


def method_config(model: str, method: str, scale: float, overrides: dict):
    """The method's config: the settings above, the overrides, every epoch count scaled."""
    values = dict(SETTINGS[(model, method)])
    values.update(overrides.get(f"{model}-{method}", {}))
    for key in ("dense_epochs", "epochs", "retrain_epochs"):
        if values.get(key):  # 0 (start from the shared dense model) stays 0
            values[key] = max(1, round(values[key] * scale))
    return METHODS[method].Config(**values)


def plan(config: Config, device: str) -> list[RunSpec]:
    """Per model and seed: the dense run, then each method's run starting from it."""
    specs = []
    for model in config.models:
        for seed in config.seeds:
            dense = f"{model}-dense-seed{seed}"
            for method in ("dense", *config.methods):
                specs.append(RunSpec(
                    f"{model}-{method}-seed{seed}", TRAIN_TASK,
                    {"model": model, "dataset": "mnist", "method": method, "seed": seed,
                     "device": device,
                     "init": None if method == "dense" else dense,
                     "config": config_settings(method_config(model, method, config.epoch_scale,
                                                             config.overrides))},
                    needs=() if method == "dense" else (dense,),
                ))  # fmt: skip
    return specs


def run(config: Config, out: str | Path, *, progress: bool = False, executor=None) -> dict:
    """Every (model, method, seed) run, then the table; returns the table rows."""
    out = Path(out)
    start = time.perf_counter()
    origin = provenance(("topoprune", "torch", "numpy"))  # the code that produced the runs
    device = resolve_device(config.device)
    specs = plan(config, device)
    records = run_specs(specs, out / "runs", executor, progress=progress)
    summaries = [records[s.key] for s in specs if s.settings["method"] != "dense"]
    rows = table(summaries)
    write_study_summary(out / "table.json", {
        "rows": rows, "config": asdict(config),
        "wall_seconds": time.perf_counter() - start, "device": device,
        "executor": describe(executor),
        "provenance": origin,
    })  # fmt: skip
    (out / "table.csv").write_text(to_csv(rows))
    (out / "table.md").write_text(to_markdown(rows))
    return {"rows": rows, "wall_seconds": time.perf_counter() - start,
            "submitted": records.submitted}  # fmt: skip


def table(summaries: list[dict]) -> list[dict]:
    """Mean +- std over seeds per (model, method), beside the paper's numbers."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for s in summaries:
        groups.setdefault((s["model"], s["method"]), []).append(s)
    rows = []
    for (model, method), runs in groups.items():
        dense = np.array([100 * r["dense_test_error"] for r in runs])
        error = np.array([100 * r["test_error"] for r in runs])
        ratio = np.array([r["compression"] for r in runs])
        kept = np.array([list(r["kept_percent"].values()) for r in runs])
        paper = PAPER.get((model, method), {})
        rows.append({
            "model": model, "method": method, "seeds": len(runs),
            "dense_error_mean": float(dense.mean()), "dense_error_std": float(dense.std()),
            "error_mean": float(error.mean()), "error_std": float(error.std()),
            "compression_mean": float(ratio.mean()), "compression_std": float(ratio.std()),
            "kept_percent_mean": [float(v) for v in kept.mean(axis=0)],
            "paper": paper,
        })  # fmt: skip
    return rows


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "method", "seeds", "dense_error_pct", "error_pct", "compression",
                     "kept_pct_per_layer", "paper_error_pct", "paper_compression",
                     "paper_kept_pct"])  # fmt: skip
    for r in rows:
        writer.writerow([
            r["model"], r["method"], r["seeds"],
            f"{r['dense_error_mean']:.2f}+-{r['dense_error_std']:.2f}",
            f"{r['error_mean']:.2f}+-{r['error_std']:.2f}",
            f"{r['compression_mean']:.1f}+-{r['compression_std']:.1f}",
            "/".join(f"{v:.1f}" for v in r["kept_percent_mean"]),
            r["paper"].get("error"), r["paper"].get("compression"),
            "/".join(str(v) for v in r["paper"].get("kept", [])),
        ])  # fmt: skip
    return buffer.getvalue()


def to_markdown(rows: list[dict]) -> str:
    """The table of docs/studies/pruning-table.md: ours (mean +- std over seeds) beside the
    paper's."""
    lines = [
        "| model | method | seeds | dense error % | pruned error % | compression | kept % per "
        "layer | paper: dense -> pruned error %, compression, kept % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["paper"]
        paper = (
            (
                f"{p['dense_error']:.2f} -> {p['error']:.2f}, {p['compression']}x, "
                f"{'/'.join(str(v) for v in p['kept'])} ({p['source']})"
            )
            if p
            else "-"
        )
        lines.append(
            f"| {r['model']} | {r['method']} | {r['seeds']} | {r['dense_error_mean']:.2f} +- "
            f"{r['dense_error_std']:.2f} | {r['error_mean']:.2f} +- {r['error_std']:.2f} | "
            f"{r['compression_mean']:.1f}x | "
            f"{'/'.join(f'{v:.1f}' for v in r['kept_percent_mean'])} | {paper} |"
        )
    return "\n".join(lines) + "\n"
