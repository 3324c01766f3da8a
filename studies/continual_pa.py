"""Study: preferential attachment during continual learning on permuted MNIST.

    topoprune study run continual-pa [--quick]
    topoprune figures --study continual-pa

Task A is MNIST: a dense network is trained, pruned and retrained (DNS or magnitude pruning, from
one dense model per seed). Task B is MNIST with the pixels of a central square permuted (sides 8,
14 and 20), or MNIST itself (the control: retraining noise without a new task). For task B the
pruned connections are given back with zero weights (``regrow``; small random values are an
option), the network is trained on B with every weight learning, pruned and retrained on B. One
task-A model per seed and method serves every square size and the control.

Between the task-A and task-B masks: connections created and removed per layer, the attachment
rate against d_i(0) d_j(0) (exponent beta, 95% bootstrap interval, cumulative form), degree growth
per node layer, the degree distributions before and after (fits and a two-sample test), and the
test error of every model on both tasks.

The runs are specs (docs/running.md), each in its own folder ``runs/<key>-<hash>/``:

- ``<model>-dense-seed<k>``: the dense model on task A;
- ``<model>-<method>-A-seed<k>``: needs the dense run (starts from its checkpoint);
- ``<model>-<method>-B-<task>-seed<k>``: needs the task-A run (its network, connections given
  back);
- ``<model>-<method>-<task>-seed<k>-attach``: the measurements, needing the A and B runs.

A finished run is never rerun, so an interrupted study resumes where it stopped, and the runs
can go to local processes or a Ray cluster.

Layout of ``results/continual_pa/``: ``runs/`` (the runs' summaries; checkpoints beside them,
not in git), ``attach/<model>-<method>-<task>-seed<k>.json`` (every measurement and the degrees,
copied from the measuring runs' records; what the figures read), ``rates.csv``, ``growth.csv``,
``accuracy.csv``, ``table.md`` and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from topoprune.attachment import compare_snapshots
from topoprune.data import load_dataset
from topoprune.data.images import ImageDataset
from topoprune.data.permuted import permuted_mnist
from topoprune.errors import TopopruneError
from topoprune.io import load_network
from topoprune.models import build_model
from topoprune.provenance import provenance
from topoprune.prune.masks import add_masks
from topoprune.prune.methods import METHODS
from topoprune.runner import RunSpec, run_specs
from topoprune.train.engine import TrainSettings, error_rate, resolve_device
from topoprune.train.run import load_trained_state, prune_run

from ._data import subset
from ._runs import config_from_settings, config_settings, describe, without_spec, write_if_changed
from ._summary import write_study_summary
from ._tables import mean_sd, rows_to_csv

# Task A: "dense" then the method from it. Task B: the method again from task A's model with its
# connections given back; its dense epochs train every weight on B before pruning. Epoch counts
# fit the 2-hour budget on 2 cores (each study on one core when two share the machine).
SETTINGS = {
    ("lenet300", "dense"): {"epochs": 20, "lr": 0.05, "schedule": "cosine"},
    ("lenet300", "dns", "A"): {"dense_epochs": 0, "epochs": 20, "lr": 0.01,
                               "c": (5.5, 4.5, 2.5), "schedule": "cosine"},
    ("lenet300", "magnitude", "A"): {"dense_epochs": 0, "lr": 0.05, "retrain_lr_factor": 0.4,
                                     "weight_decay": 1e-4, "iterations": 3, "retrain_epochs": 5,
                                     "sparsity": (0.92, 0.91, 0.74), "schedule": "cosine"},
    ("mlp1024", "dense"): {"epochs": 10, "lr": 0.05, "schedule": "cosine"},
    ("mlp1024", "dns", "A"): {"dense_epochs": 0, "epochs": 12, "lr": 0.01,
                              "c": (4.0, 4.0, 2.0), "schedule": "cosine"},
    ("mlp1024", "magnitude", "A"): {"dense_epochs": 0, "lr": 0.05, "retrain_lr_factor": 0.4,
                                    "weight_decay": 1e-4, "iterations": 3, "retrain_epochs": 3,
                                    "sparsity": (0.95, 0.95, 0.75), "schedule": "cosine"},
}  # fmt: skip
# Task B repeats task A's settings with dense epochs on B first (every weight learns B) and,
# where the budget asks, shorter surgery or retraining.
B_CHANGES = {
    ("lenet300", "dns"): {"dense_epochs": 3, "epochs": 15},
    ("lenet300", "magnitude"): {"dense_epochs": 3, "retrain_epochs": 4},
    ("mlp1024", "dns"): {"dense_epochs": 2, "epochs": 10},
    ("mlp1024", "magnitude"): {"dense_epochs": 2, "retrain_epochs": 2},
}
SETTINGS |= {
    (key[0], key[1], "B"): values | B_CHANGES[key[:2]]
    for key, values in SETTINGS.items()
    if key[2:] == ("A",)
}

CONTROL = "control"  # task B = MNIST itself


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = ("mlp1024", "lenet300")
    methods: tuple[str, ...] = ("dns", "magnitude")
    squares: tuple[int, ...] = (8, 14, 20)
    control: bool = True
    seeds: tuple[int, ...] = (0, 1, 2)
    regrow: str = "zero"
    n_boot: int = 1000
    fit_boot: int = 200  # bootstrap replicates of the degree-distribution fits
    epoch_scale: float = 1.0
    train_size: int | None = None
    device: str = "auto"
    overrides: dict = field(default_factory=dict)


# Quick: barely trained weights have light tails, so DNS needs smaller c to keep anything.
QUICK = Config(models=("lenet300",), methods=("dns",), squares=(14,), seeds=(0,), n_boot=100,
               fit_boot=20, epoch_scale=0.1, train_size=5000,
               overrides={"lenet300-dns-A": {"c": (1.0, 1.0, 0.5)},
                          "lenet300-dns-B": {"c": (1.0, 1.0, 0.5)}})  # fmt: skip


def method_config(model: str, method: str, phase: str | None, config: Config, **extra):
    key = (model, method) if phase is None else (model, method, phase)
    values = dict(SETTINGS[key])
    values.update(config.overrides.get("-".join(key), {}))
    values.update(extra)
    for name in ("epochs", "dense_epochs", "retrain_epochs"):
        if values.get(name):
            values[name] = max(1, round(values[name] * config.epoch_scale))
    return METHODS[method].Config(**values)


def tasks(config: Config) -> list[str]:
    names = [f"square{s}" for s in config.squares]
    return [*names, CONTROL] if config.control else names


def task_data(task: str, mnist: ImageDataset, seed: int, size: int | None) -> ImageDataset:
    if task == CONTROL:
        return subset(mnist, size)
    square = int(task.removeprefix("square"))
    return subset(permuted_mnist(square, seed, base=mnist), size)


def model_from_checkpoint(path: str | Path, model_name: str, device: str) -> torch.nn.Module:
    model = add_masks(build_model(model_name, 10))
    load_trained_state(model, path)
    return model.to(device)


TRAIN_TASK = "topoprune_studies.continual_pa:train"
MEASURE_TASK = "topoprune_studies.continual_pa:measure"


def plan(config: Config, device: str) -> list[RunSpec]:
    """Per model and seed: the dense run on task A; per method the task-A run from it; per task
    B the run from the task-A one, and the measurement between the two."""
    specs = []
    for model in config.models:
        for seed in config.seeds:
            common = {"model": model, "seed": seed, "device": device,
                      "train_size": config.train_size}  # fmt: skip
            dense = f"{model}-dense-seed{seed}"
            specs.append(RunSpec(dense, TRAIN_TASK, {
                **common, "method": "dense", "task": None,
                "config": config_settings(method_config(model, "dense", None, config)),
            }))  # fmt: skip
            for method in config.methods:
                a = f"{model}-{method}-A-seed{seed}"
                specs.append(RunSpec(a, TRAIN_TASK, {
                    **common, "method": method, "task": None, "init": dense,
                    "config": config_settings(method_config(model, method, "A", config)),
                }, needs=(dense,)))  # fmt: skip
                for task in tasks(config):
                    b = f"{model}-{method}-B-{task}-seed{seed}"
                    specs.append(RunSpec(b, TRAIN_TASK, {
                        **common, "method": method, "task": task, "init": a,
                        "regrow": config.regrow,
                        "config": config_settings(method_config(model, method, "B", config)),
                    }, needs=(a,)))  # fmt: skip
                    specs.append(RunSpec(f"{model}-{method}-{task}-seed{seed}-attach",
                                         MEASURE_TASK, {
                        "a": a, "b": b, "task": task, "seed": seed, "n_boot": config.n_boot,
                        "fit_boot": config.fit_boot, "device": device,
                    }, needs=(a, b)))  # fmt: skip
    return specs


def run(config: Config, out: str | Path, *, progress: bool = False, executor=None) -> dict:
    out = Path(out)
    start = time.perf_counter()
    origin = provenance(("topoprune", "torch", "numpy", "scipy"))
    device = resolve_device(config.device)
    specs = plan(config, device)
    runs = run_specs(specs, out / "runs", executor, progress=progress)
    records = []
    for spec in specs:
        if spec.task == MEASURE_TASK:
            record = without_spec(runs[spec.key])
            k = record["key"]
            path = out / "attach" / f"{k['model']}-{k['method']}-{k['task']}-seed{k['seed']}.json"
            write_if_changed(path, record)
            records.append(record)
    wall = time.perf_counter() - start
    rates, growth, accuracy = tidy(records)
    (out / "rates.csv").write_text(rows_to_csv(rates))
    (out / "growth.csv").write_text(rows_to_csv(growth))
    (out / "accuracy.csv").write_text(rows_to_csv(accuracy))
    (out / "table.md").write_text(to_markdown(rates, growth))
    (out / "digest.md").write_text(to_digest(rates, growth, accuracy))
    write_study_summary(out / "summary.json", {
        "config": asdict(config), "device": device, "wall_seconds": wall,
        "executor": describe(executor), "provenance": origin, "regrow": config.regrow,
    })  # fmt: skip
    return {"rows": rates, "wall_seconds": wall, "submitted": runs.submitted}


def train(folder: Path, inputs: dict, *, model: str, method: str, seed: int, device: str,
          config: dict, task: str | None, train_size: int | None = None,
          init: str | None = None, regrow: str | None = None) -> dict:  # fmt: skip
    """One training run in ``folder`` (resuming a killed attempt) on task A (``task`` None:
    MNIST) or task B ``task``, each cut to ``train_size`` training images; ``init`` is the key
    of the run whose checkpoint it starts from, with its pruned connections given back by
    ``regrow``."""
    mnist = load_dataset("mnist")
    if task is None:
        data = subset(mnist, train_size)
    else:
        data = task_data(task, mnist, seed, train_size)
    dataset = "mnist" if task in (None, CONTROL) else "permuted-mnist"
    settings = TrainSettings(seed=seed, device=device)
    start = inputs[init]["checkpoint"] if init is not None else None
    return prune_run(model, dataset, method, config_from_settings(method, config), settings,
                     folder, resume=True, data=data, init=start, regrow=regrow)  # fmt: skip


def measure(folder: Path, inputs: dict, *, a: str, b: str, task: str, seed: int, n_boot: int,
            fit_boot: int, device: str) -> dict:  # fmt: skip
    """Attachment, growth and distributions between the masks of run ``a`` (task A) and run
    ``b`` (task ``task``), and both models' test errors on both tasks: the record
    ``attach/<model>-<method>-<task>-seed<k>.json`` holds."""
    run_a, run_b = inputs[a], inputs[b]
    key = {"model": run_a["model"], "method": run_a["method"], "task": task, "seed": seed,
           "n_boot": n_boot, "fit_boot": fit_boot}  # fmt: skip
    before, after = load_network(run_a["checkpoint"]), load_network(run_b["checkpoint"])
    result = compare_snapshots(
        before, after, n_boot=n_boot, seed=seed,
        fit_options={"mode": "clauset", "n_boot": fit_boot, "seed": seed},
    )  # fmt: skip
    mnist = load_dataset("mnist")
    data = task_data(task, mnist, seed, None)  # its test split: the same for every train size
    model_a = model_from_checkpoint(run_a["checkpoint"], run_a["model"], device)
    model_b = model_from_checkpoint(run_b["checkpoint"], run_b["model"], device)
    errors = {
        "A_on_A": error_rate(model_a, mnist.test, device),
        "A_on_B": error_rate(model_a, data.test, device),
        "B_on_B": error_rate(model_b, data.test, device),
        "B_on_A": error_rate(model_b, mnist.test, device),
    }
    pairs = zip(before.node_layers(), after.node_layers(), strict=True)
    return {
        "key": key,
        "result": result,
        "errors": errors,
        "compression": {"A": run_a["compression"], "B": run_b["compression"]},
        "regrown": run_b.get("regrown"),
        "degrees": [
            {
                "node_layer": n0.name,
                "before": n0.total_degree.tolist(),
                "after": n1.total_degree.tolist(),
            }
            for n0, n1 in pairs
        ],
    }


def tidy(records: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    rates, growth, accuracy = [], [], []
    for rec in records:
        base = {k: rec["key"][k] for k in ("model", "method", "task", "seed")}
        for row in rec["result"]["layers"]:
            a = row.get("attachment", {})
            rates.append({**base, "layer": row["layer"], "created": row["created"],
                          "removed": row["removed"], "kept_before": row["kept_before"],
                          "kept_after": row["kept_after"], "beta": a.get("beta"),
                          "beta_low": a.get("beta_ci95", [None, None])[0],
                          "beta_high": a.get("beta_ci95", [None, None])[1],
                          "beta_cumulative": a.get("beta_cumulative"),
                          "note": row.get("attachment_error", "")})  # fmt: skip
        for entry in rec["result"]["node_layers"]:
            g = entry.get("growth", {})
            change = entry.get("distribution_change", {})
            fits = entry.get("fits", {})
            growth.append({**base, "node_layer": entry["node_layer"],
                           "slope": g.get("slope"), "intercept": g.get("intercept"),
                           "pearson_r": g.get("pearson_r"), "r_squared": g.get("r_squared"),
                           "ks": change.get("ks"), "p_same": change.get("p"),
                           "alpha_before": fits.get("before", {}).get("alpha"),
                           "alpha_after": fits.get("after", {}).get("alpha"),
                           "p_fit_before": fits.get("before", {}).get("p_value"),
                           "p_fit_after": fits.get("after", {}).get("p_value")})  # fmt: skip
        accuracy.append({**base, **{k: v for k, v in rec["errors"].items()},
                         "compression_A": rec["compression"]["A"],
                         "compression_B": rec["compression"]["B"]})  # fmt: skip
    return rates, growth, accuracy


def to_markdown(rates: list[dict], growth: list[dict]) -> str:
    """Per model, method, task and layer over seeds: created and removed connections, beta
    (mean +- std of the seeds' estimates) and how many seeds' 95% intervals contain 1 and 0;
    then degree growth slopes and R^2 per node layer."""
    lines = ["| model | method | task | layer | created | removed | beta | CI has 1 | CI has 0 "
             "| beta (cumulative) |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for r in rates:
        groups.setdefault((r["model"], r["method"], r["task"], r["layer"]), []).append(r)
    for key, rows in groups.items():
        fitted = [r for r in rows if r["beta"] is not None]
        has1 = sum(r["beta_low"] <= 1 <= r["beta_high"] for r in fitted)
        has0 = sum(r["beta_low"] <= 0 <= r["beta_high"] for r in fitted)
        lines.append("| " + " | ".join(key) + f" | {np.mean([r['created'] for r in rows]):.0f} | "
                     f"{np.mean([r['removed'] for r in rows]):.0f} | "
                     f"{mean_sd([r['beta'] for r in rows])} | {has1}/{len(fitted)} | "
                     f"{has0}/{len(fitted)} | "
                     f"{mean_sd([r['beta_cumulative'] for r in rows])} |")  # fmt: skip
    lines += ["", "| model | method | task | node layer | growth slope | R^2 | same distribution "
              "(p > 0.05) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    groups = {}
    for r in growth:
        groups.setdefault((r["model"], r["method"], r["task"], r["node_layer"]), []).append(r)
    for key, rows in groups.items():
        same = sum(r["p_same"] is not None and r["p_same"] > 0.05 for r in rows)
        tested = sum(r["p_same"] is not None for r in rows)
        lines.append("| " + " | ".join(key) + f" | {mean_sd([r['slope'] for r in rows])} | "
                     f"{mean_sd([r['r_squared'] for r in rows])} | {same}/{tested} |")  # fmt: skip
    return "\n".join(lines) + "\n"


# Both MLPs are (Flatten, Linear, ReLU, Linear, ReLU, Linear): module indices name the layers.
LAYER_NAMES = {"1": "input-fc1", "3": "fc1-fc2", "5": "fc2-output"}
NODE_NAMES = {"input": "input", "1": "fc1", "3": "fc2", "5": "output"}


def _pivot(rows: list[dict], row_key: str, cell, names: dict, title: str, tasks_: list[str]):
    """A markdown table: one line per model, method and ``row_key``, one column per task."""
    lines = [f"| model | method | {title} | " + " | ".join(tasks_) + " |",
             "|---|---|---|" + "---|" * len(tasks_)]  # fmt: skip
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"], r[row_key]), {}).setdefault(
            r["task"], []
        ).append(r)
    for (model, method, name), by_task in groups.items():
        cells = [cell(by_task[t]) if t in by_task else "-" for t in tasks_]
        label = names.get(name, name)
        lines.append(f"| {model} | {method} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _beta_cell(rows: list[dict]) -> str:
    fitted = [r for r in rows if r["beta"] is not None]
    if not fitted:
        return f"not fitted ({np.mean([r['created'] for r in rows]):.0f} created)"
    has1 = sum(r["beta_low"] <= 1 <= r["beta_high"] for r in fitted)
    return (f"{mean_sd([r['beta'] for r in fitted])} [1 in CI {has1}/{len(fitted)}; "
            f"{np.mean([r['created'] for r in rows]):.0f} created]")  # fmt: skip


def _growth_cell(rows: list[dict]) -> str:
    return (f"{mean_sd([r['slope'] for r in rows], digits=3)} "
            f"(R^2 {np.mean([r['r_squared'] or 0 for r in rows]):.2f})")  # fmt: skip


def _alpha_cell(rows: list[dict]) -> str:
    same = sum(r["p_same"] is not None and r["p_same"] > 0.05 for r in rows)
    kept = sum(all(r[k] is not None and r[k] >= 0.1 for k in ("p_fit_before", "p_fit_after"))
               for r in rows)  # fmt: skip
    return (f"{mean_sd([r['alpha_before'] for r in rows])} -> "
            f"{mean_sd([r['alpha_after'] for r in rows])} [same {same}/{len(rows)}; "
            f"fit kept {kept}/{len(rows)}]")  # fmt: skip


def _error_cell(rows: list[dict]) -> str:
    def pct(key: str) -> str:
        return mean_sd([100 * r[key] for r in rows])

    return f"{pct('A_on_B')} -> {pct('B_on_B')} (A: {pct('A_on_A')} -> {pct('B_on_A')})"


def _task_order(task: str) -> tuple[bool, int]:
    """Squares by size, the control last."""
    return task == CONTROL, 0 if task == CONTROL else int(task.removeprefix("square"))


def to_digest(rates: list[dict], growth: list[dict], accuracy: list[dict]) -> str:
    """The tables of docs/studies/continual-pa.md, one per claim, seeds together (mean +- std),
    one column per task."""
    order = sorted({r["task"] for r in accuracy}, key=_task_order)
    return "\n".join(
        [
            "## Claim 1: attachment exponent beta per weight layer (rate ~ (d_i d_j)^beta)\n",
            _pivot(rates, "layer", _beta_cell, LAYER_NAMES, "layer", order),
            "## Claim 2: degree increase against initial degree, least-squares slope\n",
            _pivot(growth, "node_layer", _growth_cell, NODE_NAMES, "node layer", order),
            "## Claim 3: bounded power-law exponent (clauset mode) before -> after; same: "
            "permutation test p > 0.05; fit kept: bootstrap p >= 0.1 at both times\n",
            _pivot(growth, "node_layer", _alpha_cell, NODE_NAMES, "node layer", order),
            "## Test error (%): task B before -> after learning it (task A before -> after)\n",
            _pivot([{**r, "on": "B (A)"} for r in accuracy], "on", _error_cell, {}, "error", order),
        ]
    )


def figures(results: str | Path, out: str | Path) -> list[Path]:
    """Per model, method and task (first seed): created connections against d1 d2, degree
    increase against initial degree, degree distributions before and after with their fits;
    drawn from ``attach/*.json`` alone."""
    from topoprune.plot.attachment import (
        plot_attachment_rates,
        plot_degree_distributions,
        plot_degree_growth,
    )

    results, out = Path(results), Path(out)
    files = sorted((results / "attach").glob("*.json"))
    if not files:
        raise TopopruneError(
            f"{results / 'attach'} holds no measurements: run `topoprune study run "
            "continual-pa` first"
        )
    out.mkdir(parents=True, exist_ok=True)
    written = []
    firsts: dict[tuple, dict] = {}
    for path in files:
        rec = json.loads(path.read_text())
        k = rec["key"]
        group = (k["model"], k["method"], k["task"])
        if group not in firsts or k["seed"] < firsts[group]["key"]["seed"]:
            firsts[group] = rec
    for (model, method, task), rec in sorted(firsts.items()):
        title = f"{model}, {method}, task B = {task}, seed {rec['key']['seed']}"
        written.append(
            plot_attachment_rates(
                rec["result"], out / f"{model}-{method}-{task}-attachment.png", title=title
            )
        )
        degrees = [(np.array(d["before"]), np.array(d["after"])) for d in rec["degrees"]]
        written.append(
            plot_degree_growth(
                rec["result"], degrees, out / f"{model}-{method}-{task}-growth.png", title=title
            )
        )
        written.append(
            plot_degree_distributions(
                rec["result"], degrees, out / f"{model}-{method}-{task}-degrees.png", title=title
            )
        )
    return written
