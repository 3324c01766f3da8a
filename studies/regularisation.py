"""Study: sparsity through regularisation, beside the papers.

    topoprune study run regularisation [--quick]
    topoprune figures --study regularisation

Four parts, each a set of `topoprune prune` runs, specs keyed ``<model>-<method>-seed<k>``
(folder ``runs/<key>-<hash>/``), started from the seed's one dense model
(``<model>-dense-seed<k>``). A finished run is never rerun, so an interrupted study resumes
where it stopped, and the runs can go to local processes or a Ray cluster (docs/running.md).

1. **Fedorov and Rao's Table 1** (LeNet-5): ``reweighted-l1``, ``reweighted-l2``, ``focuss``
   thresholded at the paper's per-layer kept %, with ``dns`` and ``magnitude`` (LWC) as the
   comparison columns. Beside each affine-scaling run, two controls measured in the same study:
   the dense model pruned one-shot by magnitude to the same kept % and evaluated as it is
   (``<model>-oneshot-<method>-untrained-seed<k>``, needing the dense run and the
   affine-scaling run), and the same pruning retrained as long as the affine-scaling run
   retrains (``oneshot-<method>``): what re-weighting adds.
2. **Their Figure 1**: kurtosis (eq. 13) and validation error against the re-weighting iteration,
   per layer, for the noisy initialiser (the Table's ``reweighted-l1`` run of the first seed)
   and the greedy one (``reweighted-l1-greedy``: one layer's omega per iteration).
3. **The lecture's claims** (LeNet-300-100 and LeNet-5): ``l2``, ``l1-subgradient`` and
   ``l1-proximal`` at the same sparsity targets and no weight decay: zeros before the threshold,
   error after the threshold before retraining, error after retraining.
4. **GrOWL** on LeNet-300-100: rows removed, rows tied, compression from each, test error.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from topoprune.errors import TopopruneError
from topoprune.io.torch_file import load_torch_object
from topoprune.models.zoo import build_model
from topoprune.provenance import provenance
from topoprune.prune.allocation import allocate
from topoprune.prune.masks import add_masks, apply_masks, current_masks
from topoprune.prune.methods import METHODS
from topoprune.runner import RunSpec, run_specs
from topoprune.train.engine import resolve_device
from topoprune.train.optim import error_rate
from topoprune.train.run import load_trained_state

from ._data import mnist
from ._runs import TRAIN_TASK, config_settings, describe
from ._summary import write_study_summary
from ._tables import mean_sd, rows_to_csv, rows_to_markdown

AST = ("reweighted-l1", "reweighted-l2", "focuss")

# Fedorov and Rao 2018, Table 1 (LeNet-5 on MNIST): kept % per layer (conv1, conv2, fc1, fc2),
# total kept % and test error %; the reference (dense) error is 0.86 %.
PAPER = {
    "reweighted-l1": {"kept": [27.8, 6, 0.7, 18.6], "total": 1.28, "error": 1.16},
    "reweighted-l2": {"kept": [50.4, 4.9, 0.9, 4.7], "total": 1.26, "error": 1.41},
    "focuss": {"kept": [67.6, 8.1, 1, 15], "total": 1.7, "error": 1.13},
    "dns": {"kept": [14.2, 3.1, 0.7, 4.3], "total": 0.9, "error": 0.91},
    "magnitude": {"kept": [66, 12, 8, 19], "total": 8, "error": 0.77},
}
PAPER_DENSE_ERROR = 0.86


def _sparsity(kept: list[float]) -> tuple[float, ...]:
    return tuple(round(1 - k / 100, 6) for k in kept)


# Our settings per (model, method); every epoch count is measured against the 90-minute budget
# (docs/studies/regularisation.md). The affine-scaling runs use the noisy initialiser with every
# layer re-weighted per iteration and one epoch per iteration (the paper's Figure 1a-b setting;
# greedy with one epoch per iteration lost accuracy at every iteration in exploratory runs), then
# one threshold of all layers and 4 epochs of retraining at lr 0.01 (the paper retrains layer by
# layer, `--layerwise`; all at once gives the error right after the threshold and the same
# retraining as the one-shot control). Weight decay on q and tau were chosen in exploratory runs
# on seed 0 (not kept under results/).
_AST_LENET5 = {"dense_epochs": 0, "iterations": 5, "iteration_epochs": 1, "update": "all",
               "q_init": "noisy", "lr": 0.01, "weight_decay": 2e-4, "retrain_epochs": 4,
               "layerwise": False, "retrain_lr_factor": 1.0, "schedule": "cosine"}  # fmt: skip
_AST_EXTRA = {"focuss": {"weight_decay": 1e-4, "tau": 1e-2}}
# The control beside each affine-scaling run: one-shot magnitude pruning of the same dense model
# to the same per-layer kept %, retrained as long as the affine-scaling run retrains.
_ONESHOT = {"dense_epochs": 0, "iterations": 1, "lr": 0.05, "retrain_lr_factor": 0.2,
            "schedule": "cosine"}  # fmt: skip
_CLAIMS = {"dense_epochs": 0, "weight_decay": 0.0, "lr": 0.05, "lam": 1e-3,
           "retrain_lr_factor": 0.2, "schedule": "cosine"}  # fmt: skip
_HAN_LENET5, _HAN_LENET300 = (0.34, 0.88, 0.92, 0.81), (0.92, 0.91, 0.74)
SETTINGS = {
    ("lenet5", "dense"): {"epochs": 5, "lr": 0.05, "schedule": "cosine"},
    **{("lenet5", m): {**_AST_LENET5, **_AST_EXTRA.get(m, {}),
                       "sparsity": _sparsity(PAPER[m]["kept"])} for m in AST},
    **{("lenet5", f"oneshot-{m}"): {**_ONESHOT, "retrain_epochs": 4,
                                    "sparsity": _sparsity(PAPER[m]["kept"])} for m in AST},
    ("lenet5", "reweighted-l1-greedy"): {**_AST_LENET5, "q_init": "greedy", "update": "one",
                                         "retrain_epochs": 0,
                                         "sparsity": _sparsity(PAPER["reweighted-l1"]["kept"])},
    ("lenet5", "dns"): {"dense_epochs": 0, "epochs": 6, "lr": 0.01, "c": (1.6, 3.8, 6.5, 3.0),
                        "schedule": "cosine"},
    ("lenet5", "magnitude"): {"dense_epochs": 0, "lr": 0.05, "retrain_lr_factor": 0.2,
                              "iterations": 2, "retrain_epochs": 1, "sparsity": _HAN_LENET5,
                              "schedule": "cosine"},
    **{("lenet5", m): {**_CLAIMS, "epochs": 1, "retrain_epochs": 1, "sparsity": _HAN_LENET5}
       for m in ("l2", "l1-subgradient", "l1-proximal")},
    ("lenet300", "dense"): {"epochs": 10, "lr": 0.05, "schedule": "cosine"},
    **{("lenet300", m): {**_CLAIMS, "epochs": 3, "retrain_epochs": 2, "sparsity": _HAN_LENET300}
       for m in ("l2", "l1-subgradient", "l1-proximal")},
    # the output layer's rows are the classes: left dense (GrOWL groups hidden units)
    ("lenet300", "growl"): {"dense_epochs": 0, "epochs": 4, "retrain_epochs": 2, "lam1": (0.04,),
                            "lam2": (1e-3,), "preference": 0.7, "schedule": "cosine",
                            "dense_layers": ("5",)},
    # quick mode only: the Table's methods on LeNet-300-100 (the paper has no numbers for it)
    **{("lenet300", m): {**_AST_LENET5, "sparsity": (0.9,)} for m in AST},
    **{("lenet300", f"oneshot-{m}"): {**_ONESHOT, "retrain_epochs": 4, "sparsity": (0.9,)}
       for m in AST},
    ("lenet300", "reweighted-l1-greedy"): {**_AST_LENET5, "q_init": "greedy", "update": "one",
                                           "retrain_epochs": 0, "sparsity": (0.9,)},
    ("lenet300", "dns"): {"dense_epochs": 0, "epochs": 6, "lr": 0.01, "c": (5.5, 4.5, 2.5),
                          "schedule": "cosine"},
    ("lenet300", "magnitude"): {"dense_epochs": 0, "lr": 0.05, "retrain_lr_factor": 0.2,
                                "iterations": 2, "retrain_epochs": 1, "sparsity": _HAN_LENET300,
                                "schedule": "cosine"},
}  # fmt: skip

CLAIM_METHODS = ("l2", "l1-subgradient", "l1-proximal")


@dataclass(frozen=True)
class Config:
    table_model: str = "lenet5"
    table_methods: tuple[str, ...] = (*AST, "dns", "magnitude")
    claim_models: tuple[str, ...] = ("lenet300", "lenet5")
    growl_model: str = "lenet300"
    seeds: tuple[int, ...] = (0, 1, 2)
    epoch_scale: float = 1.0  # multiplies every epoch count (at least 1 stays 1)
    train_subset: int = 0  # quick mode: the first this many training images (0: all)
    device: str = "auto"
    overrides: dict = field(default_factory=dict)


QUICK = Config(
    epoch_scale=0.5,
    table_model="lenet300",
    claim_models=("lenet300",),
    seeds=(0,),
    train_subset=2000,
    overrides={f"lenet300-{m}": {"iterations": 2} for m in (*AST, "reweighted-l1-greedy")},
)


def method_config(model: str, method: str, scale: float, overrides: dict):
    values = dict(SETTINGS[(model, method)])
    values.update(overrides.get(f"{model}-{method}", {}))
    for key in ("dense_epochs", "epochs", "retrain_epochs", "iteration_epochs"):
        if values.get(key):
            values[key] = max(1, round(values[key] * scale))
    return METHODS[_registered(method)].Config(**values)


def _registered(method: str) -> str:
    """The registered method behind a study's run name (``oneshot-focuss`` is magnitude)."""
    return "magnitude" if method.startswith("oneshot-") else method.removesuffix("-greedy")


CONTROL = "topoprune_studies.regularisation:oneshot_control"


def run_key(model: str, method: str, seed: int) -> str:
    """The spec key of a study run (``method`` as the study names it: ``oneshot-focuss``)."""
    return f"{model}-{method}-seed{seed}"


def control_key(model: str, method: str, seed: int) -> str:
    """The spec key of an affine-scaling run's untrained one-shot control."""
    return f"{model}-oneshot-{method}-untrained-seed{seed}"


def study_runs(config: Config) -> list[tuple[str, str, int]]:
    """Every (model, method, seed) the four parts train, dense models first, each once."""
    runs: list[tuple[str, str, int]] = []

    def add(model: str, method: str, seed: int) -> None:
        for item in ((model, "dense", seed), (model, method, seed)):
            if item not in runs:
                runs.append(item)

    for seed in config.seeds:  # part 1: the table, and the one-shot controls
        for method in config.table_methods:
            add(config.table_model, method, seed)
            if method in AST:
                add(config.table_model, f"oneshot-{method}", seed)
    add(config.table_model, "reweighted-l1-greedy", config.seeds[0])  # part 2: the greedy curve
    for model in config.claim_models:  # part 3
        for seed in config.seeds:
            for method in CLAIM_METHODS:
                add(model, method, seed)
    for seed in config.seeds:  # part 4
        add(config.growl_model, "growl", seed)
    return runs


def plan(config: Config, device: str) -> list[RunSpec]:
    """Per run of :func:`study_runs` a training spec (each but the dense ones needing its seed's
    dense run), then per affine-scaling run its untrained control (needing both)."""
    specs = []
    runs = study_runs(config)
    for model, method, seed in runs:
        dense = run_key(model, "dense", seed)
        init = None if method == "dense" else dense
        cfg = method_config(model, method, config.epoch_scale, config.overrides)
        specs.append(RunSpec(
            run_key(model, method, seed), TRAIN_TASK,
            {"model": model, "method": _registered(method), "seed": seed, "device": device,
             "train_subset": config.train_subset, "init": init,
             "config": config_settings(cfg)},
            needs=(init,) if init else (),
        ))  # fmt: skip
    for model, method, seed in runs:
        if method in AST:
            dense, pruned = run_key(model, "dense", seed), run_key(model, method, seed)
            specs.append(RunSpec(
                control_key(model, method, seed), CONTROL,
                {"model": model, "device": device, "dense": dense, "pruned": pruned},
                needs=(dense, pruned),
            ))  # fmt: skip
    return specs


def oneshot_control(folder: Path, inputs: dict, *, model: str, device: str, dense: str,
                    pruned: str) -> dict:  # fmt: skip
    """The dense run ``dense`` pruned one-shot by magnitude to the per-layer kept fractions of
    the run ``pruned``, evaluated without any training (what re-weighting adds)."""
    data = mnist()  # only the test split is used: the same whatever the training subset
    net = add_masks(build_model(model, data.num_classes))
    load_trained_state(net, inputs[dense]["checkpoint"])
    weights = {n: m.weight_orig.detach().abs() for n, m in net.named_modules()
               if hasattr(m, "weight_mask")}  # fmt: skip
    goal = {n: 1 - inputs[pruned]["kept_percent"][n] / 100 for n in weights}
    apply_masks(net, allocate(weights, current_masks(net), goal))
    return {"test_error": error_rate(net.to(device), data.test, device)}


def run(config: Config, out: str | Path, *, progress: bool = False, executor=None) -> dict:
    """Every run of the four parts, then ``table.csv`` (every model and method), ``table1.csv``
    (Table 1 beside the paper, with the controls), ``claims.csv``, ``growl.csv`` (the last three
    in ``tables.md``) and the figure data ``figure1.json``; returns Table 1's rows."""
    out = Path(out)
    start = time.perf_counter()
    origin = provenance(("topoprune", "torch", "numpy"))
    device = resolve_device(config.device)
    records = run_specs(plan(config, device), out / "runs", executor, progress=progress)
    runs = {item: records[run_key(*item)] for item in study_runs(config)}
    controls = {(model, method, seed): records[control_key(model, method, seed)]["test_error"]
                for model, method, seed in runs if method in AST}  # fmt: skip
    table = table_rows(runs, config, controls)
    claims = claim_rows(runs, config)
    growl = growl_rows(runs, config)
    figure = figure_data(runs, config)
    (out / "table.csv").write_text(rows_to_csv(all_rows(runs)))
    (out / "table1.csv").write_text(rows_to_csv(table))
    (out / "claims.csv").write_text(rows_to_csv(claims))
    (out / "growl.csv").write_text(rows_to_csv(growl))
    (out / "figure1.json").write_text(json.dumps(figure, indent=1) + "\n")
    (out / "tables.md").write_text(
        "## Table 1 (Fedorov and Rao) and its comparison columns\n\n" + rows_to_markdown(table)
        + "\n## The lecture's l1 / l2 claims\n\n" + rows_to_markdown(claims)
        + "\n## GrOWL\n\n" + rows_to_markdown(growl)
    )  # fmt: skip
    wall = time.perf_counter() - start
    write_study_summary(out / "summary.json", {
        "table": table, "claims": claims, "growl": growl, "config": asdict(config),
        "settings": {f"{m}-{k}": v for (m, k), v in SETTINGS.items()},
        "paper": PAPER, "wall_seconds": wall, "device": device,
        "executor": describe(executor), "provenance": origin,
    })  # fmt: skip
    return {"rows": table, "wall_seconds": wall, "submitted": records.submitted}


def _total_kept(summary: dict) -> float:
    return 100 / summary["compression"]


def table_rows(runs: dict, config: Config, controls: dict) -> list[dict]:
    """One row per table method: mean +- std over seeds beside the paper's Table 1."""
    rows = []
    for method in config.table_methods:
        group = [(s, runs[(config.table_model, method, s)]) for s in config.seeds]
        summaries = [r for _, r in group]
        error = [100 * r["test_error"] for r in summaries]
        kept = [_total_kept(r) for r in summaries]
        per_layer = np.mean([list(r["kept_percent"].values()) for r in summaries], axis=0)
        before = [100 * r["stage_test_errors"].get("threshold", np.nan) for r in summaries]
        control = [100 * controls[(config.table_model, method, s)] for s, _ in group
                   if (config.table_model, method, s) in controls]  # fmt: skip
        paper = PAPER.get(method, {}) if config.table_model == "lenet5" else {}
        rows.append({
            "model": config.table_model, "method": method, "seeds": len(summaries),
            "kept_percent": round(float(np.mean(kept)), 3),
            "test_error_mean": round(float(np.mean(error)), 3),
            "test_error_std": round(float(np.std(error)), 3),
            "dense_error": mean_sd([100 * r["dense_test_error"] for r in summaries]),
            "error_before_retraining": mean_sd(before),
            "oneshot_error_before_retraining": mean_sd(control),
            "oneshot_retrained_error": mean_sd(
                [100 * runs[(config.table_model, f"oneshot-{method}", s)]["test_error"]
                 for s, _ in group if (config.table_model, f"oneshot-{method}", s) in runs]),
            "kept_percent_per_layer": "/".join(f"{v:.1f}" for v in per_layer),
            "paper_kept_percent": paper.get("total", ""),
            "paper_kept_percent_per_layer": "/".join(str(v) for v in paper.get("kept", [])),
            "paper_test_error": paper.get("error", ""),
            "paper_dense_error": PAPER_DENSE_ERROR if paper else "",
            "kept_within_1.5x": _within(np.mean(kept), paper.get("total"), 1.5),
            "error_within_0.2": _within_points(np.mean(error), paper.get("error"), 0.2),
        })  # fmt: skip
    return rows


def all_rows(runs: dict) -> list[dict]:
    """``table.csv``: one row per (model, method) of every part (mean +- std over seeds), with
    the per-layer kept % and, for LeNet-5, Fedorov and Rao's values."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for (model, method, _), summary in sorted(runs.items(), key=lambda item: item[0]):
        if method != "dense":
            groups.setdefault((model, method), []).append(summary)
    rows = []
    for (model, method), summaries in groups.items():
        error = [100 * r["test_error"] for r in summaries]
        per_layer = np.mean([list(r["kept_percent"].values()) for r in summaries], axis=0)
        paper = PAPER.get(method, {}) if model == "lenet5" else {}
        rows.append({
            "model": model, "method": method, "part": _part(method), "seeds": len(summaries),
            "kept_percent": round(float(np.mean([_total_kept(r) for r in summaries])), 3),
            "test_error_mean": round(float(np.mean(error)), 3),
            "test_error_std": round(float(np.std(error)), 3),
            "kept_percent_per_layer": "/".join(f"{v:.1f}" for v in per_layer),
            "paper_kept_percent": paper.get("total", ""),
            "paper_kept_percent_per_layer": "/".join(str(v) for v in paper.get("kept", [])),
            "paper_test_error": paper.get("error", ""),
        })  # fmt: skip
    return rows


def _part(method: str) -> str:
    if method.startswith("oneshot-"):
        return "control"
    if method in CLAIM_METHODS:
        return "claims"
    if method == "growl":
        return "growl"
    if method.endswith("-greedy"):
        return "figure1"
    return "table1"


def _within(value: float, reference: float | None, factor: float):
    if not reference:
        return ""
    return bool(reference / factor <= value <= reference * factor)


def _within_points(value: float, reference: float | None, points: float):
    if reference is None:
        return ""
    return bool(abs(value - reference) <= points)


def claim_rows(runs: dict, config: Config) -> list[dict]:
    """Per (model, method) of part 3: zeros before the threshold, errors before and after
    retraining."""
    rows = []
    for model in config.claim_models:
        for method in CLAIM_METHODS:
            summaries = [runs[(model, method, s)] for s in config.seeds]
            census = [r["report"]["before_threshold"] for r in summaries]
            total = [sum(c["weights"] for c in layers.values()) for layers in census]

            def share(key: str, census=census, total=total) -> str:
                values = [100 * sum(c[key] for c in layers.values()) / n
                          for layers, n in zip(census, total)]  # fmt: skip
                return mean_sd(values, 4)

            rows.append({
                "model": model, "method": method, "seeds": len(summaries),
                "lam": summaries[0]["config"]["lam"],
                "kept_percent": round(float(np.mean([_total_kept(r) for r in summaries])), 3),
                "exact_zero_percent": share("exact_zeros"),
                "below_1e-4_percent": share("near_zeros"),
                "below_1e-3_percent": share("small"),
                "dense_error": mean_sd([100 * r["dense_test_error"] for r in summaries]),
                "error_before_retraining": mean_sd(
                    [100 * r["stage_test_errors"]["threshold"] for r in summaries]),
                "test_error_mean": round(float(np.mean(
                    [100 * r["test_error"] for r in summaries])), 3),
                "test_error_std": round(float(np.std(
                    [100 * r["test_error"] for r in summaries])), 3),
            })  # fmt: skip
    return rows


def growl_rows(runs: dict, config: Config) -> list[dict]:
    rows = []
    for seed in config.seeds:
        r = runs[(config.growl_model, "growl", seed)]
        report = r["report"]
        layers = report.get("layers", {})
        rows.append({
            "model": config.growl_model, "method": "growl", "seed": seed,
            "rows_removed": sum(v["removed"] for v in layers.values()),
            "rows_tied": sum(v["tied_rows"] for v in layers.values()),
            "rows": sum(v["rows"] for v in layers.values()),
            "compression_removed": round(report.get("compression_removed", np.nan), 3),
            "compression_tied": round(report.get("compression_tied", np.nan), 3),
            "dense_error": round(100 * r["dense_test_error"], 3),
            "error_after_growl": round(100 * r["stage_test_errors"].get("growl", np.nan), 3),
            "test_error": round(100 * r["test_error"], 3),
        })  # fmt: skip
    return rows


def _validation_by_stage(checkpoint: str) -> dict[str, float]:
    """The validation error at the end of every stage of a run, from its checkpoint's history."""
    history = load_torch_object(Path(checkpoint))["extra"]["history"]
    out = {}
    for record in history:
        if "val_error" in record:
            out[record["stage"]] = record["val_error"]
    return out


def figure_data(runs: dict, config: Config) -> dict:
    """Figure 1: per initialiser, kurtosis per layer and validation error per iteration."""
    seed, model = config.seeds[0], config.table_model
    dense_val = _validation_by_stage(runs[(model, "dense", seed)]["checkpoint"]).get("dense")
    curves = {}
    for label, method in (("noisy", "reweighted-l1"), ("greedy", "reweighted-l1-greedy")):
        summary = runs.get((model, method, seed))
        if summary is None:
            continue
        val = _validation_by_stage(summary["checkpoint"])
        kurt = summary["report"]["kurtosis"]
        curves[label] = {
            "method": method, "seed": seed, "update": summary["config"]["update"],
            "iterations": [k["iteration"] for k in kurt],
            "kurtosis": {n: [k[n] for k in kurt] for n in summary["pruned_layers"]},
            "val_error": [dense_val if k["iteration"] == 0 else val.get(f"reweight{k['iteration']}")
                          for k in kurt],
        }  # fmt: skip
    return {"model": model, "curves": curves}


def figures(results: str | Path, out: str | Path) -> list[Path]:
    """Figure 1 of Fedorov and Rao: validation error and kurtosis per re-weighting iteration, for
    the noisy and the greedy initialiser, drawn from ``figure1.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(results) / "figure1.json"
    if not path.exists():
        raise TopopruneError(f"{path} does not exist: run `topoprune study run regularisation`")
    data = json.loads(path.read_text())
    curves = data["curves"]
    fig, axes = plt.subplots(2, len(curves), figsize=(4.2 * len(curves), 6), squeeze=False)
    for column, (label, curve) in enumerate(curves.items()):
        t = curve["iterations"]
        error = [100 * v if v is not None else np.nan for v in curve["val_error"]]
        axes[0][column].plot(t, error, marker="o")
        axes[0][column].set(
            title=f"{label} q, omega of {'every' if curve['update'] == 'all' else 'one'} layer"
            " per iteration",
            xlabel="re-weighting iteration t",
            ylabel="validation error %",
        )
        for layer, values in curve["kurtosis"].items():
            axes[1][column].plot(t, values, marker="o", label=f"layer {layer}")
        axes[1][column].set(xlabel="re-weighting iteration t", ylabel="kurtosis (eq. 13)",
                            yscale="log")  # fmt: skip
        axes[1][column].legend(fontsize=7)
    fig.suptitle(f"{data['model']}: reweighted-l1, seed {next(iter(curves.values()))['seed']}")
    fig.tight_layout()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "figure1-kurtosis-error.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return [target]
