"""Study: progressive networks whose lateral connections are sampled by node degree.

    topoprune study run progressive [--quick]
    topoprune figures --study progressive

Column 1 (784-300-100-10) learns task A (MNIST): one dense model per seed, pruned by DNS, then
frozen. Column 2 learns task B (MNIST with a central 14x14 square permuted, or with every pixel
permuted) from a few thousand examples, with sparse lateral connections from column 1's hidden
units into its layers 2 and 3, drawn by each sampler (preferential, random, anti-preferential) at
each fraction, against the separate network (no laterals) and the dense progressive network.
Per task and fraction: mean +- std of column 2's test error over seeds, and paired t-tests
(the same seed shares column 1, column 2's initialisation and the data order).

Layout of ``results/progressive/``: ``runs/<key>-<hash>/`` (one folder per run, not in git:
column 1's ``column1-dense-seed<k>`` and ``column1-dns-seed<k>``, and one column-2 training each,
``task<side>-<sampler>-<fraction>-seed<k>``, whose ``summary.json`` is its row), ``runs.csv``,
``table.md``, ``tests.csv`` and ``summary.json``. The runs can go to local processes or a Ray
cluster (docs/running.md).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from topoprune.data import load_dataset
from topoprune.data.images import ImageDataset, Split
from topoprune.data.permuted import permuted_mnist
from topoprune.errors import TopopruneError
from topoprune.io import load_network
from topoprune.models.progressive import (
    ProgressiveMLP,
    lateral_masks,
    mlp_column,
    source_degrees,
)
from topoprune.provenance import provenance
from topoprune.prune.masks import add_masks
from topoprune.prune.methods import METHODS
from topoprune.runner import RunSpec, run_specs
from topoprune.train.engine import Stage, TrainSettings, error_rate, resolve_device, run_stages
from topoprune.train.run import load_trained_state

from ._runs import TRAIN_TASK, config_settings, describe, without_spec
from ._summary import write_study_summary
from ._tables import rows_to_csv

COLUMN1 = [784, 300, 100, 10]
COLUMN1_SETTINGS = {
    "dense": {"epochs": 20, "lr": 0.05, "schedule": "cosine"},
    "dns": {"dense_epochs": 0, "epochs": 20, "lr": 0.01, "c": (5.5, 4.5, 2.5),
            "schedule": "cosine"},
}  # fmt: skip


@dataclass(frozen=True)
class Config:
    tasks: tuple[int, ...] = (14, 28)  # side of the permuted central square (28: every pixel)
    samplers: tuple[str, ...] = ("preferential", "random", "anti-preferential")
    fractions: tuple[float, ...] = (0.01, 0.05, 0.2)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    width: tuple[int, ...] = (64, 32)  # column 2's hidden layers: narrow, so transfer matters
    train_examples: int = 2000  # task-B training examples: few, so transfer matters
    epochs: int = 40
    lr: float = 0.05
    weight_decay: float = 5e-4
    degree: str = "total"  # the degree of a source node in column 1 (in, out or total)
    column1_epoch_scale: float = 1.0
    device: str = "auto"
    overrides: dict = field(default_factory=dict)


QUICK = Config(tasks=(14,), samplers=("preferential", "random"), fractions=(0.05,), seeds=(0, 1),
               epochs=10, train_examples=1000, column1_epoch_scale=0.1)  # fmt: skip


def _column1_specs(seed: int, config: Config, device: str) -> list[RunSpec]:
    """Column 1 of a seed: the dense LeNet-300-100, then DNS from it."""
    specs = []
    for method in ("dense", "dns"):
        values = dict(COLUMN1_SETTINGS[method]) | config.overrides.get(f"column1-{method}", {})
        for key in ("epochs", "dense_epochs"):
            if values.get(key):
                values[key] = max(1, round(values[key] * config.column1_epoch_scale))
        init = f"column1-dense-seed{seed}" if method == "dns" else None
        specs.append(RunSpec(
            f"column1-{method}-seed{seed}", TRAIN_TASK,
            {"model": "lenet300", "dataset": "mnist", "method": method, "seed": seed,
             "device": device, "init": init,
             "config": config_settings(METHODS[method].Config(**values))},
            needs=(init,) if init else (),
        ))  # fmt: skip
    return specs


def task_b(side: int, seed: int, mnist: ImageDataset, examples: int) -> ImageDataset:
    data = permuted_mnist(side, 1000 + seed, base=mnist)
    return dataclasses.replace(
        data, train=Split(data.train.images[:examples], data.train.labels[:examples])
    )


def conditions(config: Config) -> list[tuple[str, float]]:
    """(sampler, fraction) pairs: every sampler at every fraction, plus the two baselines."""
    pairs = [(s, f) for f in config.fractions for s in config.samplers]
    return [("none", 0.0), *pairs, ("dense", 1.0)]


def plan(config: Config, device: str) -> list[RunSpec]:
    """Column 1 per seed, then column 2 per seed, task and condition (each needs its column 1)."""
    specs = []
    for seed in config.seeds:
        specs += _column1_specs(seed, config, device)
        for side in config.tasks:
            for sampler, fraction in conditions(config):
                specs.append(RunSpec(
                    f"task{side}-{sampler}-{fraction:g}-seed{seed}", COLUMN2_TASK,
                    {"side": side, "sampler": sampler, "fraction": fraction, "seed": seed,
                     "width": list(config.width), "train_examples": config.train_examples,
                     "epochs": config.epochs, "lr": config.lr,
                     "weight_decay": config.weight_decay, "degree": config.degree,
                     "device": device, "column1": f"column1-dns-seed{seed}"},
                    needs=(f"column1-dns-seed{seed}",),
                ))  # fmt: skip
    return specs


def run(config: Config, out: str | Path, *, progress: bool = False, executor=None) -> dict:
    out = Path(out)
    start = time.perf_counter()
    origin = provenance(("topoprune", "torch", "numpy", "scipy"))
    device = resolve_device(config.device)
    specs = plan(config, device)
    records = run_specs(specs, out / "runs", executor, progress=progress)
    rows = [without_spec(records[s.key]) for s in specs if s.task == COLUMN2_TASK]
    wall = time.perf_counter() - start
    (out / "runs.csv").write_text(rows_to_csv(rows))
    tests = paired_tests(rows)
    (out / "tests.csv").write_text(rows_to_csv(tests))
    (out / "table.md").write_text(to_markdown(rows, tests))
    write_study_summary(out / "summary.json", {
        "config": asdict(config), "device": device, "wall_seconds": wall,
        "executor": describe(executor), "provenance": origin,
    })  # fmt: skip
    return {"rows": rows, "wall_seconds": wall, "submitted": records.submitted}


COLUMN2_TASK = "topoprune_studies.progressive:train_column2"


def train_column2(folder: Path, inputs: dict, *, side: int, sampler: str, fraction: float,
                  seed: int, width: list[int], train_examples: int, epochs: int, lr: float,
                  weight_decay: float, degree: str, device: str, column1: str) -> dict:  # fmt: skip
    """Train column 2 on task B beside the frozen column 1 (the run ``column1`` names); its row."""
    start = time.perf_counter()
    first_run = inputs[column1]
    degrees = source_degrees(load_network(first_run["checkpoint"]), degree)
    data = task_b(side, seed, load_dataset("mnist"), train_examples)
    first = add_masks(mlp_column(COLUMN1))
    load_trained_state(first, first_run["checkpoint"])
    widths = [COLUMN1[0], *width, COLUMN1[-1]]
    masks = lateral_masks(degrees, widths, sampler, fraction, seed)
    torch.manual_seed(seed)  # column 2's initialisation: the same for every condition of a seed
    second = mlp_column(widths)
    model = ProgressiveMLP([first, second], masks)
    stage = Stage("task-B", epochs, lr, weight_decay, lr_end=0.0, snapshot=False)
    run_stages(model, [stage], data, TrainSettings(seed=seed, device=device))
    return {
        "task": side,
        "sampler": sampler,
        "fraction": fraction,
        "seed": seed,
        "lateral_connections": int(sum(int(m.sum()) for m in masks.values())),
        "test_error": error_rate(model, data.test, device),
        "val_error": error_rate(model, data.val, device),
        "column1_test_error_A": first_run["test_error"],
        "seconds": time.perf_counter() - start,
    }


def paired_tests(rows: list[dict]) -> list[dict]:
    """Per task and fraction: preferential against random, separate (none) and dense, paired
    by seed (t-test on the error differences; mean difference in points)."""
    table: dict[tuple, dict[int, float]] = {}
    for r in rows:
        table.setdefault((r["task"], r["sampler"], r["fraction"]), {})[r["seed"]] = r["test_error"]
    tests = []
    for (task, sampler, fraction), errors in sorted(table.items()):
        if sampler != "preferential":
            continue
        for other in (("random", fraction), ("anti-preferential", fraction), ("none", 0.0),
                      ("dense", 1.0)):  # fmt: skip
            theirs = table.get((task, *other))
            if not theirs:
                continue
            seeds = sorted(set(errors) & set(theirs))
            diff = np.array([errors[s] - theirs[s] for s in seeds]) * 100
            p = (float(stats.ttest_rel([errors[s] for s in seeds], [theirs[s] for s in seeds])
                       .pvalue) if len(seeds) > 1 and diff.std() > 0 else math.nan)  # fmt: skip
            tests.append({
                "task": task, "fraction": fraction, "against": other[0], "seeds": len(seeds),
                "mean_difference_points": float(diff.mean()),
                "preferential_better_in": int((diff < 0).sum()), "p_paired_t": p,
            })  # fmt: skip
    return tests


def summary_by_condition(rows: list[dict]) -> dict[tuple, tuple[float, float, int]]:
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["sampler"], r["fraction"]), []).append(r["test_error"])
    return {k: (100 * float(np.mean(v)), 100 * float(np.std(v)), len(v))
            for k, v in groups.items()}  # fmt: skip


def to_markdown(rows: list[dict], tests: list[dict]) -> str:
    lines = ["| task (permuted square) | sampler | lateral fraction | column-2 test error % "
             "(mean +- std) | seeds |", "|---|---|---|---|---|"]  # fmt: skip
    for (task, sampler, fraction), (mean, sd, n) in sorted(summary_by_condition(rows).items()):
        lines.append(f"| {task} | {sampler} | {fraction:g} | {mean:.2f} +- {sd:.2f} | {n} |")
    lines += ["", "| task | fraction | preferential against | mean difference (points) | "
              "preferential better in | paired t p |", "|---|---|---|---|---|---|"]  # fmt: skip
    for t in tests:
        lines.append(f"| {t['task']} | {t['fraction']:g} | {t['against']} | "
                     f"{t['mean_difference_points']:+.2f} | {t['preferential_better_in']}/"
                     f"{t['seeds']} | {t['p_paired_t']:.3g} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def figures(results: str | Path, out: str | Path) -> list[Path]:
    """Task-B test accuracy against the lateral fraction, one line per sampler with error bars
    (std over seeds), the separate and dense networks as horizontal bands; one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, out = Path(results), Path(out)
    table = results / "runs.csv"
    if not table.exists():
        raise TopopruneError(f"{table} does not exist: run `topoprune study run progressive` "
                             "first")  # fmt: skip
    rows = [{"task": int(r["task"]), "sampler": r["sampler"], "fraction": float(r["fraction"]),
             "test_error": float(r["test_error"])}
            for r in csv.DictReader(table.open())]  # fmt: skip
    stats_ = summary_by_condition(rows)
    tasks = sorted({t for t, _, _ in stats_})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        samplers = sorted({s for t, s, _ in stats_ if t == task} - {"none", "dense"})
        for sampler in samplers:
            points = sorted((f, m, sd) for (t, s, f), (m, sd, _) in stats_.items()
                            if t == task and s == sampler)  # fmt: skip
            f, m, sd = map(np.array, zip(*points, strict=True))
            ax.errorbar(100 * f, 100 - m, yerr=sd, fmt="o-", capsize=3, label=sampler)
        for baseline, style in (("none", "C7"), ("dense", "k")):
            if (task, baseline, 0.0 if baseline == "none" else 1.0) in stats_:
                m, sd, _ = stats_[(task, baseline, 0.0 if baseline == "none" else 1.0)]
                ax.axhline(
                    100 - m,
                    color=style,
                    ls="--",
                    label="separate" if baseline == "none" else "dense progressive",
                )
                ax.axhspan(100 - m - sd, 100 - m + sd, color=style, alpha=0.1)
        ax.set_xscale("log")
        ax.set_xlabel("lateral connections (%)")
        ax.set_ylabel("task-B test accuracy (%)")
        what = "every pixel" if task >= 28 else f"central {task}x{task} square"
        ax.set_title(f"task B: MNIST, {what} permuted", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "accuracy_vs_fraction.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
