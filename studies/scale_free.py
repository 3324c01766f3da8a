"""Study: scale-free degree distributions in sparsified MLPs and CNNs (Lu and Kwok 2018).

    topoprune study run scale-free [--quick]
    topoprune figures --study scale-free

Per model, data set and seed: one dense model, pruned by each method (Dynamic Network Surgery,
magnitude pruning with retraining), and for each pruned model the random-mask baseline with the
same per-layer sparsity, applied to the same dense model and not retrained (its degrees do not
depend on training; see docs/studies/scale-free.md). Every node layer of every pruned
and random network is fitted with the bounded power law (``clauset`` and ``window`` modes), its
bootstrap p, the alternatives and the random null, and a verdict.

The runs are specs (docs/running.md), each in its own folder ``runs/<key>-<hash>/``:

- ``<model>-<dataset>-dense-seed<k>``: the dense model;
- ``<model>-<dataset>-<method>-seed<k>``: needs the dense run (starts from its checkpoint);
- ``<model>-<dataset>-random-<method>-seed<k>``: needs the dense run (its weights) and the
  method's run (its per-layer kept fractions);
- ``<training key>-fit``: the bootstrap fits of one pruned or random run's network, needing it.

A finished run is never rerun, so an interrupted study resumes where it stopped, and the runs
can go to local processes or a Ray cluster.

Layout of ``results/scale_free/``:

- ``runs/<key>-<hash>/summary.json`` (checkpoints beside them, not in git)
- ``fits/<model>-<dataset>-<role>-seed<k>.json``: per view and node layer, the degree histogram
  and every fit (copied from the fit runs' records; what the figures read)
- ``fits.csv``: the tidy table, one row per run, view, node layer and mode
- ``table.md``: the table of docs/studies/scale-free.md (mean over seeds); ``summary.json``:
  config, provenance, wall time, executor, every training run, skipped parts and why.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from topoprune.data import load_dataset, status
from topoprune.errors import TopopruneError
from topoprune.io import load_network
from topoprune.provenance import provenance
from topoprune.prune.methods import METHODS
from topoprune.runner import RunSpec, run_specs
from topoprune.stats.node_layers import fit_node_layers
from topoprune.train.engine import TrainSettings, resolve_device
from topoprune.train.run import prune_run

from ._data import subset
from ._runs import config_from_settings, config_settings, describe, without_spec, write_if_changed
from ._summary import write_study_summary
from ._tables import degree_histogram, mean_sd, rows_to_csv

TRAIN_TASK = "topoprune_studies.scale_free:train"
FIT_TASK = "topoprune_studies.scale_free:fit"

# Hyper-parameters per (model, method). "dense" is the shared model; the pruning methods and the
# random baselines start from it (dense_epochs 0).
SETTINGS = {
    ("mlp1024", "dense"): {"epochs": 10, "lr": 0.05, "schedule": "cosine"},
    ("mlp1024", "dns"): {"dense_epochs": 0, "epochs": 10, "lr": 0.01, "c": (4.0, 4.0, 2.0),
                         "schedule": "cosine"},
    ("mlp1024", "magnitude"): {"dense_epochs": 0, "lr": 0.05, "iterations": 3,
                               "retrain_epochs": 2, "sparsity": (0.95, 0.95, 0.75),
                               "schedule": "cosine"},
    ("mlp1024", "random"): {"dense_epochs": 0, "epochs": 0, "lr": 0.005, "schedule": "cosine"},
    ("cnn_mnist", "dense"): {"epochs": 3, "lr": 0.05, "schedule": "cosine"},
    ("cnn_mnist", "dns"): {"dense_epochs": 0, "epochs": 4, "lr": 0.01,
                           "c": (1.0, 2.5, 3.0, 2.0), "schedule": "cosine"},
    ("cnn_mnist", "magnitude"): {"dense_epochs": 0, "lr": 0.05, "iterations": 2,
                                 "retrain_epochs": 1, "sparsity": (0.5, 0.9, 0.95, 0.8),
                                 "schedule": "cosine"},
    # The baseline's degrees come from its random mask alone, so it is not retrained: its error
    # is the dense model's under that mask (one epoch at lr 0.005 or 0.05 left mlp1024 at chance).
    ("cnn_mnist", "random"): {"dense_epochs": 0, "epochs": 0, "lr": 0.005, "schedule": "cosine"},
    ("cnn_cifar", "dense"): {"epochs": 30, "lr": 0.02, "schedule": "cosine"},
    ("cnn_cifar", "dns"): {"dense_epochs": 0, "epochs": 20, "lr": 0.005,
                           "c": (0.5, 1.0, 1.0, 1.0, 3.0, 1.0), "schedule": "cosine"},
    ("cnn_cifar", "magnitude"): {"dense_epochs": 0, "lr": 0.02, "iterations": 3,
                                 "retrain_epochs": 4,
                                 "sparsity": (0.3, 0.6, 0.7, 0.7, 0.95, 0.8),
                                 "schedule": "cosine"},
    ("cnn_cifar", "random"): {"dense_epochs": 0, "epochs": 0, "lr": 0.002, "schedule": "cosine"},
}  # fmt: skip

# Node layers are read in the channel view (docs/design.md, Definitions); CNNs also in the im2col
# view, where a convolution is the C_out x (C_in kh kw) matrix and node layers have hundreds of
# nodes.
VIEWS = {"mlp1024": ("channel",), "cnn_mnist": ("channel", "im2col"),
         "cnn_cifar": ("channel", "im2col")}  # fmt: skip


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = ("mlp1024", "cnn_mnist")
    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
    methods: tuple[str, ...] = ("dns", "magnitude")
    seeds: tuple[int, ...] = (0, 1, 2)
    modes: tuple[str, ...] = ("clauset", "window")
    n_boot: int = 1000
    cifar: bool = True  # cnn_cifar on cifar10 when the data set is in the cache
    epoch_scale: float = 1.0  # multiplies every epoch count (the quick mode shrinks them)
    train_size: int | None = None  # first N training images (the quick mode); None: all
    device: str = "auto"
    overrides: dict = field(default_factory=dict)


# Quick: barely trained weights have light tails, so DNS needs smaller c to keep anything.
QUICK = Config(seeds=(0,), datasets=("mnist",), n_boot=20, epoch_scale=0.1, train_size=3000,
               cifar=False, overrides={"mlp1024-dns": {"c": (1.0, 1.0, 0.5)},
                                       "cnn_mnist-dns": {"c": (0.5, 1.0, 1.0, 0.5)}})  # fmt: skip


def method_config(model: str, method: str, config: Config, **extra: object):
    values = dict(SETTINGS[(model, method)])
    values.update(config.overrides.get(f"{model}-{method}", {}))
    values.update(extra)
    for key in ("epochs", "dense_epochs", "retrain_epochs"):
        if values.get(key):  # 0 (start from the shared dense model) stays 0
            values[key] = max(1, round(values[key] * config.epoch_scale))
    return METHODS[method].Config(**values)


def _cases(config: Config) -> tuple[list[tuple[str, str]], list[dict]]:
    """(model, dataset) pairs to run, and what was skipped with the reason."""
    cases = [(m, d) for m in config.models for d in config.datasets]
    skipped = []
    if config.cifar:
        found = status("cifar10")
        if found["present"]:
            cases.append(("cnn_cifar", "cifar10"))
        else:
            skipped.append({
                "model": "cnn_cifar", "dataset": "cifar10",
                "reason": f"CIFAR-10 is not in the cache ({found['path']}); it cannot be "
                          "downloaded here: `topoprune data fetch cifar10 --data-dir DIR` copies "
                          "the python-pickle batches in",
            })  # fmt: skip
    return cases, skipped


def _training_key(model: str, dataset: str, role: str, seed: int) -> str:
    return f"{model}-{dataset}-{role}-seed{seed}"


def plan(config: Config, cases: list[tuple[str, str]], device: str) -> list[RunSpec]:
    """Per model, data set and seed: the dense run; per method the pruned run from it, its
    random-mask baseline, and one fit spec for each of the two."""
    specs = []
    for model, dataset in cases:
        for seed in config.seeds:
            common = {"model": model, "dataset": dataset, "seed": seed, "device": device,
                      "train_size": config.train_size}  # fmt: skip
            dense = _training_key(model, dataset, "dense", seed)
            specs.append(RunSpec(dense, TRAIN_TASK, {
                **common, "role": "dense", "method": "dense",
                "config": config_settings(method_config(model, "dense", config)),
            }))  # fmt: skip
            for method in config.methods:
                pruned = _training_key(model, dataset, method, seed)
                baseline = _training_key(model, dataset, f"random-{method}", seed)
                specs.append(RunSpec(pruned, TRAIN_TASK, {
                    **common, "role": method, "method": method, "init": dense,
                    "config": config_settings(method_config(model, method, config)),
                }, needs=(dense,)))  # fmt: skip
                specs.append(RunSpec(baseline, TRAIN_TASK, {
                    **common, "role": f"random-{method}", "method": "random", "init": dense,
                    "like": pruned,
                    "config": config_settings(method_config(model, "random", config)),
                }, needs=(dense, pruned)))  # fmt: skip
                for key, role in ((pruned, method), (baseline, f"random-{method}")):
                    specs.append(RunSpec(f"{key}-fit", FIT_TASK, {
                        "run": key, "role": role, "modes": list(config.modes),
                        "n_boot": config.n_boot, "seed": seed,
                    }, needs=(key,)))  # fmt: skip
    return specs


def run(config: Config, out: str | Path, *, progress: bool = False, executor=None) -> dict:
    """Train, prune, fit; returns the tidy rows (one per run, view, node layer and mode)."""
    out = Path(out)
    start = time.perf_counter()
    origin = provenance(("topoprune", "torch", "numpy", "scipy"))
    device = resolve_device(config.device)
    cases, skipped = _cases(config)
    specs = plan(config, cases, device)
    records = run_specs(specs, out / "runs", executor, progress=progress)
    rows: list[dict] = []
    for spec in specs:
        if spec.task == FIT_TASK:
            fits = without_spec(records[spec.key])
            write_if_changed(out / "fits" / f"{spec.settings['run']}.json", fits)
            rows.extend(tidy_rows(fits))
    runs = run_summaries([records[s.key] for s in specs if s.task == TRAIN_TASK])
    wall = time.perf_counter() - start
    (out / "fits.csv").write_text(to_csv(rows))
    (out / "table.md").write_text(to_markdown(rows))
    (out / "digest.md").write_text(f"## Networks\n\n{networks_table(runs)}\n" + "".join(
        f"## {mode} mode\n\n{verdict_counts(rows, mode)}\n{to_digest(rows, mode)}\n"
        for mode in config.modes
    ))  # fmt: skip
    write_study_summary(out / "summary.json", {
        "config": asdict(config), "device": device, "wall_seconds": wall,
        "executor": describe(executor), "skipped": skipped, "provenance": origin,
        "runs": runs,
    })  # fmt: skip
    return {"rows": rows, "wall_seconds": wall, "skipped": skipped,
            "submitted": records.submitted}  # fmt: skip


def train(folder: Path, inputs: dict, *, model: str, dataset: str, role: str, method: str,
          seed: int, device: str, config: dict, train_size: int | None = None,
          init: str | None = None, like: str | None = None) -> dict:  # fmt: skip
    """One training run of the study in ``folder`` (resuming a killed attempt): ``init`` is the
    key of the run whose checkpoint it starts from, ``like`` that of the run whose per-layer
    kept fractions a random baseline copies; the data set is cut to ``train_size`` images.
    ``role`` (the method, or ``random-<method>``) names the run in the tables only."""
    values = dict(config)
    if like is not None:
        values["like"] = inputs[like]["checkpoint"]
    settings = TrainSettings(seed=seed, device=device)
    start = inputs[init]["checkpoint"] if init is not None else None
    data = subset(load_dataset(dataset), train_size)
    return prune_run(model, dataset, method, config_from_settings(method, values), settings,
                     folder, resume=True, data=data, init=start)  # fmt: skip


def fit(folder: Path, inputs: dict, *, run: str, role: str, modes: list[str], n_boot: int,
        seed: int) -> dict:  # fmt: skip
    """Fit every node layer of the network of run ``run`` (a needed run's key; ``role``: its
    method, or ``random-<method>`` for a baseline): the record ``fits/<run>.json`` holds."""
    summary = inputs[run]
    network = load_network(summary["checkpoint"])
    views = {}
    for view in VIEWS[summary["model"]]:
        layers = network.node_layers(view)
        per_mode = {
            mode: fit_node_layers(network, view=view, mode=mode, n_boot=n_boot, seed=seed)
            for mode in modes
        }
        views[view] = [
            {
                "node_layer": layer.name,
                "n_nodes": int(layer.degrees().size),
                "histogram": degree_histogram(layer.degrees()),
                "fits": {mode: _fit_record(per_mode[mode][i]) for mode in modes},
            }
            for i, layer in enumerate(layers)
        ]
    return {
        "run": {k: summary[k] for k in ("model", "dataset", "seed")} | {"method": role},
        "fit_settings": {"modes": list(modes), "n_boot": n_boot, "seed": seed},
        "test_error": summary["test_error"],
        "compression": summary["compression"],
        "kept_percent": summary["kept_percent"],
        "views": views,
    }


def _fit_record(fit) -> dict:
    record = fit.to_dict()
    record["scale_free"] = bool(getattr(fit, "scale_free", False))
    return record


def tidy_rows(fits: dict) -> list[dict]:
    rows = []
    for view, layers in fits["views"].items():
        for layer in layers:
            for mode, fit in layer["fits"].items():
                null = next(
                    (c for c in fit["comparisons"] if c["alternative"] == "random_null"), None
                )
                better = [c["alternative"] for c in fit["comparisons"]
                          if c["p"] < 0.05 and c["loglik_ratio"] < 0]  # fmt: skip
                rows.append({
                    **fits["run"], "view": view, "node_layer": layer["node_layer"],
                    "n_nodes": layer["n_nodes"], "n_dead": fit["n_zero"], "mode": mode,
                    "fittable": fit["fittable"], "alpha": fit["alpha"],
                    "alpha_se": fit["alpha_se"], "xmin": fit["xmin"], "xmax": fit["xmax"],
                    "n_in_range": fit["n_tail"], "ks": fit["ks"], "p": fit["p_value"],
                    "beats_null": bool(null and null["p"] < 0.05 and null["loglik_ratio"] > 0),
                    "better_alternatives": " ".join(better),
                    "scale_free": fit["scale_free"], "verdict": fit["verdict"],
                    "test_error": fits["test_error"], "compression": fits["compression"],
                })  # fmt: skip
    return rows


COLUMNS = ("model", "dataset", "method", "seed", "view", "node_layer", "n_nodes", "n_dead", "mode",
           "fittable", "alpha", "alpha_se", "xmin", "xmax", "n_in_range", "ks", "p",
           "beats_null", "better_alternatives", "scale_free", "verdict", "test_error",
           "compression")  # fmt: skip


def to_csv(rows: list[dict]) -> str:
    return rows_to_csv(rows, COLUMNS)


def grouped(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows grouped by (model, dataset, method, view, node layer, mode), seeds together."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["model"], r["dataset"], r["method"], r["view"], r["node_layer"], r["mode"])
        groups.setdefault(key, []).append(r)
    return groups


def to_markdown(rows: list[dict]) -> str:
    """Per node layer and mode, over seeds: alpha (mean +- std of the seeds' estimates, and the
    mean standard error), the median range and n in range, the p range, and how many seeds'
    fits support a scale-free reading (fit not rejected, >= 1 decade, beats the null and every
    alternative)."""
    lines = [
        "| model | data | method | view | node layer | mode | alpha (seeds) | SE | range | "
        "n in range | p | scale-free | typical verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, group in grouped(rows).items():
        fitted = [r for r in group if r["fittable"]]
        seeds = len(group)
        if not fitted:
            reason = group[0]["verdict"]
            lines.append("| " + " | ".join(key) + f" | - | - | - | - | - | 0/{seeds} | {reason} |")
            continue
        alphas = [r["alpha"] for r in fitted]
        se = np.mean([r["alpha_se"] for r in fitted])
        lo = np.median([r["xmin"] for r in fitted])
        hi = [r["xmax"] for r in fitted]
        hi_text = "inf" if any(h in ("inf", None) or math.isinf(float(h)) for h in hi) else (
            f"{np.median([float(h) for h in hi]):g}")  # fmt: skip
        n_in = int(np.median([r["n_in_range"] for r in fitted]))
        ps = [r["p"] for r in fitted if r["p"] is not None]
        p_text = f"{min(ps):.2f}-{max(ps):.2f}" if ps else "-"
        supported = sum(bool(r["scale_free"]) for r in group)
        verdict = fitted[0]["verdict"]
        if len(fitted) < seeds:
            verdict += f" ({seeds - len(fitted)} seed(s) not fittable)"
        lines.append(
            "| " + " | ".join(key) + f" | {mean_sd(alphas)} | {se:.2f} | {lo:g}-{hi_text} | "
            f"{n_in} | {p_text} | {supported}/{seeds} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def verdict_counts(rows: list[dict], mode: str) -> str:
    """Counts over every (run, view, node layer) of one mode, pruned networks against their
    random-mask baselines: the totals docs/studies/scale-free.md quotes."""
    lines = ["| networks | fits | fitted | bootstrap p < 0.1 | beats the null | an alternative "
             "better | scale-free |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, random in (("pruned", False), ("random mask", True)):
        group = [r for r in rows
                 if r["mode"] == mode and r["method"].startswith("random-") == random]  # fmt: skip
        fitted = [r for r in group if r["fittable"]]
        rejected = sum(r["p"] is not None and r["p"] < 0.1 for r in fitted)
        named = [a for r in fitted for a in (r["better_alternatives"] or "").split()]
        better = sum(bool(r["better_alternatives"]) for r in fitted)
        by_name = ", ".join(f"{a} {named.count(a)}" for a in sorted(set(named)))
        lines.append(
            f"| {label} | {len(group)} | {len(fitted)} | {rejected} | "
            f"{sum(bool(r['beats_null']) for r in fitted)} | {better}"
            + (f" ({by_name})" if by_name else "")
            + f" | {sum(bool(r['scale_free']) for r in group)} |"
        )
    return "\n".join(lines) + "\n"


def to_digest(rows: list[dict], mode: str = "window") -> str:
    """The table of docs/studies/scale-free.md: one line per model, data set, pruning method,
    view and node layer in one fit ``mode``, seeds together, with the random-mask baseline's
    exponent beside it.

    alpha is the mean +- std over seeds (SE: mean standard error); range, n in range and p as in
    :func:`to_markdown`; "null" counts the seeds whose fit beats the random-mask null, "alt" those
    where some alternative is significantly better (the most frequent named), "scale-free" those
    meeting every condition of the verdict.
    """
    groups = grouped([r for r in rows if r["mode"] == mode])
    lines = [
        "| model | data | method | view | node layer | nodes | alpha (SE) | range | n in range "
        "| p | null | alt (most often) | scale-free | random mask: alpha |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, group in groups.items():
        model, dataset, method, view, layer, _ = key
        if method.startswith("random-"):
            continue
        seeds = len(group)
        base = groups.get((model, dataset, f"random-{method}", view, layer, mode), [])
        base_alpha = mean_sd([r["alpha"] for r in base if r["fittable"]])
        fitted = [r for r in group if r["fittable"]]
        nodes = f"{group[0]['n_nodes']}"
        dead = int(np.median([r["n_dead"] or 0 for r in group]))
        if dead:
            nodes += f" ({dead} dead)"
        head = f"| {model} | {dataset} | {method} | {view} | {layer} | {nodes} | "
        if not fitted:
            reason = group[0]["verdict"].removeprefix("cannot fit: ")
            lines.append(head + f"not fitted: {reason} | - | - | - | - | - | 0/{seeds} | "
                         f"{base_alpha} |")  # fmt: skip
            continue
        se = np.mean([r["alpha_se"] for r in fitted])
        lo = np.median([r["xmin"] for r in fitted])
        highs = [float("inf") if r["xmax"] in ("inf", None) else float(r["xmax"]) for r in fitted]
        hi = "inf" if any(math.isinf(h) for h in highs) else f"{np.median(highs):g}"
        ps = [r["p"] for r in fitted if r["p"] is not None]
        p_text = f"{min(ps):.2f}-{max(ps):.2f}" if len(ps) > 1 else (f"{ps[0]:.2f}" if ps else "-")
        null = sum(bool(r["beats_null"]) for r in fitted)
        named = [a for r in fitted for a in (r["better_alternatives"] or "").split()]
        alt = sum(bool(r["better_alternatives"]) for r in fitted)
        # the most frequent alternative, ties by name (not by set order, which varies by process)
        alt_text = f"{alt}/{seeds}" + (f" ({max(sorted(set(named)), key=named.count)})"
                                       if named else "")  # fmt: skip
        supported = sum(bool(r["scale_free"]) for r in group)
        lines.append(
            head + f"{mean_sd([r['alpha'] for r in fitted])} ({se:.2f}) | {lo:g}-{hi} | "
            f"{int(np.median([r['n_in_range'] for r in fitted]))} | {p_text} | {null}/{seeds} | "
            f"{alt_text} | {supported}/{seeds} | {base_alpha} |"
        )
    return "\n".join(lines) + "\n"


def networks_table(runs: list[dict]) -> str:
    """Per model, data set and role (dense, a method, its random baseline) over seeds:
    compression and test error (%)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["dataset"], r["role"]), []).append(r)
    lines = ["| model | data | method | seeds | compression | test error (%) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for (model, dataset, method), group in sorted(groups.items()):
        lines.append(
            f"| {model} | {dataset} | {method} | {len(group)} | "
            f"{mean_sd([r['compression'] for r in group], digits=1)}x | "
            f"{mean_sd([100 * r['test_error'] for r in group])} |"
        )
    return "\n".join(lines) + "\n"


def run_summaries(records: list[dict]) -> list[dict]:
    """Test error, compression and wall time of every training run of the study (their records),
    named by run key."""
    runs = []
    for s in sorted(records, key=lambda r: r["run_spec"]["key"]):
        runs.append({
            "run": s["run_spec"]["key"], "role": s["run_spec"]["settings"]["role"],
            "model": s["model"], "dataset": s["dataset"],
            "method": s["method"], "seed": s["seed"], "test_error": s["test_error"],
            "dense_test_error": s.get("dense_test_error"), "compression": s["compression"],
            "kept_percent": s["kept_percent"], "wall_seconds": s["wall_seconds_this_run"],
        })  # fmt: skip
    return runs


def figures(results: str | Path, out: str | Path) -> list[Path]:
    """Draw ``figures/scale_free/*.png`` from the results folder alone."""
    from topoprune.plot.panels import alpha_by_layer, degree_panels

    results, out = Path(results), Path(out)
    fit_files = sorted((results / "fits").glob("*.json"))
    if not fit_files:
        raise TopopruneError(
            f"{results / 'fits'} holds no fits: run `topoprune study run scale-free` first"
        )
    fits = [json.loads(p.read_text()) for p in fit_files]
    by_key = {tuple(f["run"][k] for k in ("model", "dataset", "method", "seed")): f for f in fits}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (model, dataset, method, seed), record in sorted(by_key.items()):
        if method.startswith("random") or seed != min(
            s for (m, d, me, s) in by_key if (m, d, me) == (model, dataset, method)
        ):
            continue
        baseline = by_key.get((model, dataset, f"random-{method}", seed))
        for view, layers in record["views"].items():
            base_layers = baseline["views"][view] if baseline else None
            path = out / f"{model}-{dataset}-{method}-{view}.png"
            title = (
                f"{model} on {dataset}, {method} ({record['compression']:.0f}x, "
                f"test error {100 * record['test_error']:.2f}%), seed {seed}, {view} view"
            )
            degree_panels(layers, base_layers, path, title=title, mode="window")
            written.append(path)
    rows = [row for f in fits for row in tidy_rows(f)]
    path = out / "alpha_per_layer.png"
    alpha_by_layer(rows, path)
    written.append(path)
    return written
