"""Study: which pruning methods make networks scale-free, and does the degree distribution explain
their accuracy? (the topology atlas)

    topoprune study run topology-atlas [--quick | --preset large] --jobs 2
    topoprune figures --study topology-atlas

Every unstructured method of the atlas on LeNet-300-100, MNIST and Fashion-MNIST, at 90% and 98%
sparsity, three seeds. Per run: test error, sparsity, effective sparsity, per node layer the
window- and clauset-mode bounded power-law fits against the random-mask null (alpha, verdict,
dead nodes), per weight layer the spectral gap beside a random mask's. Then, for each method's
final masks at the control sparsity (98%), five trainings from scratch, paired by seed:

- ``mask``: the method's masks themselves, from the seed's original initialisation;
- ``rewired``: those masks rewired with every in- and out-degree kept (configuration model);
- ``er``: a random mask with the same number of connections in every layer (Erdos-Renyi
  G(n, m) per layer, which is what "a random mask of the same per-layer density" is);
- ``er-flat``: Erdos-Renyi at the network's overall density, the same in every layer (the
  method's allocation across layers forgotten as well);
- ``pa``: bipartite preferential attachment with the per-layer counts of ``er``.

The runs are specs (docs/running.md), each in its own folder ``runs/<key>-<hash>/``:

- ``<model>-<data>-dense-seed<k>``: the dense model the after-training methods start from;
- ``<model>-<data>-<method>-s<sparsity>-seed<k>``: a method's run, then ``...-measure``: its
  fits, effective sparsity and spectra;
- ``<model>-<data>-<method>-s<sparsity>-seed<k>-<control>``: a control training.

Layout of ``results/topology_atlas/``: ``runs.csv`` (one row per method run), ``layers.csv`` (per
run, node layer and mode), ``table.csv`` (per model, data, method and sparsity: mean +- std over
seeds and per node layer scale-free counts), ``controls.csv`` (per method and control, paired
differences), ``tests.csv`` (paired tests across methods and seeds), ``summary.json``.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats as scipy_stats

from topoprune.errors import TopopruneError
from topoprune.io import load_network
from topoprune.models import build_model
from topoprune.provenance import provenance
from topoprune.prune.lottery import kept_after
from topoprune.prune.methods import METHODS
from topoprune.prune.sparse_evolution import erdos_renyi_density
from topoprune.runner import RunSpec, run_specs
from topoprune.stats.node_layers import fit_columns, fit_node_layers
from topoprune.topology.connectivity import effective_connectivity, spectral_table
from topoprune.train.engine import resolve_device

from ._runs import TRAIN_TASK, config_settings, describe, without_spec, write_if_changed
from ._summary import write_study_summary
from ._tables import columns_of, degree_histogram, rows_to_csv

MEASURE_TASK = "topoprune_studies.topology_atlas:measure"

ATLAS_METHODS = ("magnitude", "dns", "random", "l1-proximal", "reweighted-l1", "obd",
                 "woodfisher", "snip", "grasp", "synflow", "lottery", "set", "rigl")  # fmt: skip
# These prune a trained network: they start from the seed's shared dense model.
FROM_DENSE = frozenset({"magnitude", "dns", "l1-proximal", "reweighted-l1", "obd", "woodfisher"})
CONTROLS = ("mask", "rewired", "er", "er-flat", "pa")

# One short schedule for every method (the budget: the whole atlas in about an hour on two
# workers); lr 0.05 with a cosine schedule unless a method's own study found another.
_SGD = {"lr": 0.05, "schedule": "cosine"}
_AFTER = {**_SGD, "dense_epochs": 0, "retrain_lr_factor": 0.2, "allocation": "global"}
_AT_INIT = {**_SGD, "dense_epochs": 0, "allocation": "global", "retrain_epochs": 8}
SETTINGS = {
    "dense": {**_SGD, "epochs": 8},
    "magnitude": {**_AFTER, "iterations": 2, "retrain_epochs": 3},
    "obd": {**_AFTER, "iterations": 1, "retrain_epochs": 4},
    "woodfisher": {**_AFTER, "iterations": 1, "retrain_epochs": 4},
    # lam and the one-threshold-then-retrain recipe of the regularisation study
    "l1-proximal": {**_SGD, "dense_epochs": 0, "weight_decay": 0.0, "lam": 1e-3, "epochs": 4,
                    "retrain_epochs": 3, "retrain_lr_factor": 0.2},
    # affine scaling as in the regularisation study (noisy q, all layers each iteration)
    "reweighted-l1": {"dense_epochs": 0, "iterations": 4, "iteration_epochs": 1, "update": "all",
                      "q_init": "noisy", "lr": 0.01, "weight_decay": 2e-4, "retrain_epochs": 3,
                      "retrain_lr_factor": 1.0, "schedule": "cosine"},
    # DNS sets no sparsity: c per layer calibrated on MNIST seed 0 (docs/studies/topology_atlas.md)
    "dns": {"dense_epochs": 0, "epochs": 6, "lr": 0.01, "schedule": "cosine"},
    "random": {**_SGD, "dense_epochs": 0, "epochs": 8},
    "snip": _AT_INIT, "grasp": _AT_INIT, "synflow": _AT_INIT,
    "lottery": {**_SGD, "rounds": 4, "round_epochs": 2},
    "set": {**_SGD, "epochs": 8},
    "rigl": {**_SGD, "epochs": 8},
    "control": {**_SGD, "epochs": 6},
}  # fmt: skip
DNS_C = {0.9: (1.35, 1.35, 0.9), 0.98: (4.6, 4.2, 2.5)}


def dns_c(sparsity: float) -> tuple[float, ...]:
    """DNS's c per layer for ``sparsity``: calibrated at 90% and 98%, elsewhere interpolated
    with the log of the kept fraction linear in c (as the calibration runs were)."""
    if sparsity in DNS_C:
        return DNS_C[sparsity]
    share = np.log(0.1 / (1 - sparsity)) / np.log(0.1 / 0.02)
    return tuple(round(max(0.0, float(a + share * (b - a))), 3)
                 for a, b in zip(DNS_C[0.9], DNS_C[0.98]))  # fmt: skip


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = ("lenet300",)
    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
    sparsities: tuple[float, ...] = (0.9, 0.98)
    methods: tuple[str, ...] = ATLAS_METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    control_sparsity: float = 0.98  # the controls retrain each method's masks at this sparsity
    controls: tuple[str, ...] = CONTROLS
    modes: tuple[str, ...] = ("window", "clauset")
    n_boot: int = 1000
    epoch_scale: float = 1.0  # multiplies every epoch count (the quick mode shrinks them)
    train_subset: int = 0  # first N training images (the quick mode); 0: all
    device: str = "auto"
    overrides: dict = field(default_factory=dict)  # "<method>" -> config values


QUICK = Config(datasets=("mnist",), sparsities=(0.9,), control_sparsity=0.9,
               methods=("magnitude", "snip", "set"), seeds=(0,), n_boot=10, epoch_scale=0.1,
               train_subset=2000)  # fmt: skip
# For a bigger machine: more models and sparsities (about 6x the default grid's runs).
PRESETS = {"large": Config(models=("lenet300", "mlp1024", "cnn_mnist"),
                           sparsities=(0.5, 0.8, 0.9, 0.95, 0.98, 0.99))}  # fmt: skip


def weight_shapes(model: str, num_classes: int = 10) -> list[tuple[int, ...]]:
    """The weight shapes of ``model``'s prunable layers, in order (for sparsity targets)."""
    net = build_model(model, num_classes)
    return [tuple(m.weight.shape) for m in net.modules() if hasattr(m, "weight")
            and m.weight is not None and m.weight.dim() >= 2]  # fmt: skip


def _bisect(kept_of, target: float, low: float, high: float) -> float:
    """The parameter in [low, high] where the increasing ``kept_of`` meets ``target``."""
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if kept_of(middle) < target else (low, middle)
    return (low + high) / 2


def set_epsilon(shapes: list[tuple[int, ...]], kept: float) -> float:
    """SET's epsilon at which the Erdos-Renyi layer densities keep ``kept`` of all weights.

    >>> round(set_epsilon([(300, 784), (100, 300), (10, 100)], 0.1), 2)
    17.26
    """
    sizes = np.array([np.prod(s) for s in shapes], dtype=float)

    def kept_of(epsilon: float) -> float:
        densities = [erdos_renyi_density(torch.Size(s), epsilon) for s in shapes]
        return float(np.dot(densities, sizes) / sizes.sum())

    return _bisect(kept_of, kept, 0.0, float(sizes.max()))


def lottery_rate(shapes: list[tuple[int, ...]], kept: float, rounds: int) -> float:
    """The per-round hidden-layer rate (the output layer's at half of it, as in the paper) at
    which ``rounds`` rounds keep ``kept`` of all weights.

    >>> round(lottery_rate([(300, 784), (100, 300), (10, 100)], 0.1, 4), 3)
    0.439
    """
    sizes = np.array([np.prod(s) for s in shapes], dtype=float)

    def kept_of(rate: float) -> float:
        left = [kept_after(rate, rounds)] * (len(sizes) - 1) + [kept_after(rate / 2, rounds)]
        return float(np.dot(left, sizes) / sizes.sum())

    return 1 - _bisect(lambda r: kept_of(1 - r), kept, 0.0, 1.0)


def method_values(model: str, method: str, sparsity: float, config: Config) -> dict:
    """The method's config values at ``sparsity``: the settings, the sparsity target in the
    method's own terms, the overrides, every epoch count scaled."""
    values = dict(SETTINGS[method])
    shapes = weight_shapes(model)
    if method == "dns":  # LeNet-300-100's c per layer; other models get the first layer's
        values["c"] = dns_c(sparsity) if len(shapes) == 3 else dns_c(sparsity)[:1]
    elif method == "random":
        values["kept"] = (1 - sparsity,)
    elif method == "set":
        values["epsilon"] = set_epsilon(shapes, 1 - sparsity)
    elif method == "lottery":
        rate = lottery_rate(shapes, 1 - sparsity, values["rounds"])
        values.update(hidden_rate=rate, output_rate=rate / 2)
    elif method == "rigl":
        values["sparsity"] = sparsity
    elif method not in ("dense", "control"):
        values["sparsity"] = (sparsity,)
    values.update(config.overrides.get(method, {}))
    for key in ("dense_epochs", "epochs", "retrain_epochs", "round_epochs", "iteration_epochs"):
        if values.get(key):  # 0 (start from the shared dense model) stays 0
            values[key] = max(1, round(values[key] * config.epoch_scale))
    return values


def _config(method: str, values: dict) -> dict:
    return config_settings(METHODS[method].Config(**values))


def _key(model: str, dataset: str, method: str, sparsity: float, seed: int) -> str:
    return f"{model}-{dataset}-{method}-s{round(100 * sparsity)}-seed{seed}"


def plan(config: Config, device: str) -> tuple[list[RunSpec], dict[str, dict]]:
    """Per model, data set and seed: the dense run; per method and sparsity its run and
    measurement; at the control sparsity the five control trainings of its masks. Also what
    each run is (model, data set, method, sparsity, seed, control) for the tables."""
    specs, roles = [], {}
    for model in config.models:
        for dataset in config.datasets:
            for seed in config.seeds:
                common = {"model": model, "dataset": dataset, "seed": seed, "device": device,
                          "train_subset": config.train_subset}  # fmt: skip
                dense = f"{model}-{dataset}-dense-seed{seed}"
                specs.append(RunSpec(dense, TRAIN_TASK, {
                    **common, "method": "dense",
                    "config": _config("dense", method_values(model, "dense", 0.0, config)),
                }))  # fmt: skip
                if "er-flat" in config.controls:  # one per seed: it knows no method's masks
                    flat = f"{model}-{dataset}-er-flat-s{round(100 * config.control_sparsity)}"
                    specs.append(RunSpec(f"{flat}-seed{seed}", TRAIN_TASK, {
                        **common, "method": "generated",
                        "config": _config("generated", {
                            **method_values(model, "control", config.control_sparsity, config),
                            "generator": "er", "kept": (1 - config.control_sparsity,)}),
                    }))  # fmt: skip
                    roles[specs[-1].key] = {
                        "model": model, "dataset": dataset, "method": "-",
                        "sparsity_target": config.control_sparsity, "seed": seed,
                        "control": "er-flat"}  # fmt: skip
                for sparsity in config.sparsities:
                    for method in config.methods:
                        role = {"model": model, "dataset": dataset, "method": method,
                                "sparsity_target": sparsity, "seed": seed}  # fmt: skip
                        for spec, control in _method_specs(config, common, dense, method, sparsity):
                            specs.append(spec)
                            roles[spec.key] = {**role, "control": control}
    return specs, roles


def _method_specs(config: Config, common: dict, dense: str, method: str,
                  sparsity: float) -> list[tuple[RunSpec, str | None]]:  # fmt: skip
    """A method's run and measurement, and its controls (each with its control's name)."""
    model, seed = common["model"], common["seed"]
    key = f"{model}-{common['dataset']}-{method}-s{round(100 * sparsity)}-seed{seed}"
    after = method in FROM_DENSE
    specs = [
        RunSpec(key, TRAIN_TASK, {
            **common, "method": method, "init": dense if after else None,
            "config": _config(method, method_values(model, method, sparsity, config)),
        }, needs=(dense,) if after else ()),
        RunSpec(f"{key}-measure", MEASURE_TASK, {
            "run": key, "modes": list(config.modes), "n_boot": config.n_boot, "seed": seed,
        }, needs=(key,)),
    ]  # fmt: skip
    pairs: list[tuple[RunSpec, str | None]] = [(spec, None) for spec in specs]
    if sparsity != config.control_sparsity:
        return pairs
    base = method_values(model, "control", sparsity, config)
    for control in (c for c in config.controls if c != "er-flat"):
        values, from_runs = dict(base), {}
        if control == "mask":  # the seed's original initialisation: the same seed
            trainer, from_runs["masks"] = "fixed-masks", key
        else:
            trainer = "generated"
            values["generator"], from_runs["like"] = control, key
        pairs.append((RunSpec(f"{key}-{control}", TRAIN_TASK, {
            **common, "method": trainer, "from_runs": from_runs,
            "config": _config(trainer, values),
        }, needs=(key,)), control))  # fmt: skip
    return pairs


def measure(folder: Path, inputs: dict, *, run: str, modes: list[str], n_boot: int,
            seed: int) -> dict:  # fmt: skip
    """Topology of run ``run``'s final network: per node layer (channel view) the fits against
    the random null in each mode, per weight layer the spectral gap beside a random mask's, and
    the effective sparsity."""
    summary = inputs[run]
    network = load_network(summary["checkpoint"])
    fits = {mode: fit_node_layers(network, view="channel", mode=mode, n_boot=n_boot, seed=seed)
            for mode in modes}  # fmt: skip
    node_layers = [
        {"node_layer": layer.name, "n_nodes": int(layer.size), "dead": int(layer.dead),
         "histogram": degree_histogram(layer.degrees()),
         "fits": {mode: _fit_summary(fits[mode][i]) for mode in modes}}
        for i, layer in enumerate(network.node_layers("channel"))
    ]  # fmt: skip
    effective = effective_connectivity(network, "channel")
    spectra = spectral_table(network, view="channel", seed=seed)
    return {
        "test_error": summary["test_error"],
        "sparsity": 1 - network.nnz / network.size,
        "effective_sparsity": None if effective is None else 1 - effective["effective_density"],
        "node_layers": node_layers,
        "layers": [{k: row.get(k) for k in ("layer", "spectral_gap", "random_spectral_gap")}
                   for row in spectra],
    }  # fmt: skip


def _fit_summary(fit) -> dict:
    columns = fit_columns(fit)
    null = next((c for c in fit.comparisons if c["alternative"] == "random_null"), None)
    columns["beats_null"] = bool(null and null["p"] < 0.05 and null["loglik_ratio"] > 0)
    # the power law merely not rejected (p >= 0.1): the weaker reading SET's claim rests on
    columns["plausible"] = bool(fit.fittable and fit.p_value is not None and fit.p_value >= 0.1)
    return {k: None if isinstance(v, float) and not np.isfinite(v) else v
            for k, v in columns.items()}  # fmt: skip


def run(config: Config, out: str | Path, *, progress: bool = False, executor=None) -> dict:
    """Every run, measurement and control, then the tables; returns the per-method rows."""
    out = Path(out)
    start = time.perf_counter()
    origin = provenance(("topoprune", "torch", "numpy", "scipy"))
    device = resolve_device(config.device)
    specs, roles = plan(config, device)
    records = run_specs(specs, out / "runs", executor, progress=progress)
    runs, layers, controls, histograms = [], [], [], {}
    for spec in specs:
        if spec.task == MEASURE_TASK:
            measured = without_spec(records[spec.key])
            role = {k: v for k, v in roles[spec.key].items() if k != "control"}
            runs.append({**role, "test_error": 100 * measured["test_error"],
                         "sparsity": measured["sparsity"],
                         "effective_sparsity": measured["effective_sparsity"],
                         **{f"gap_{r['layer']}": r["spectral_gap"] for r in measured["layers"]},
                         **{f"random_gap_{r['layer']}": r["random_spectral_gap"]
                            for r in measured["layers"]}})  # fmt: skip
            layers += layer_rows(role, measured)
            histograms[spec.settings["run"]] = {
                n["node_layer"]: n["histogram"] for n in measured["node_layers"]
            }
        elif roles.get(spec.key, {}).get("control"):
            controls.append(
                {**roles[spec.key], "test_error": 100 * records[spec.key]["test_error"]}
            )
    rows = table(runs, layers)
    (out / "runs.csv").write_text(rows_to_csv(runs, columns_of(runs)))
    (out / "layers.csv").write_text(rows_to_csv(layers))
    (out / "table.csv").write_text(rows_to_csv(rows, columns_of(rows)))
    (out / "controls.csv").write_text(rows_to_csv(control_table(controls)))
    (out / "tests.csv").write_text(rows_to_csv(paired_tests(controls)))
    write_if_changed(out / "histograms.json", histograms)
    wall = time.perf_counter() - start
    write_study_summary(out / "summary.json", {
        "config": asdict(config), "device": device, "wall_seconds": wall,
        "executor": describe(executor), "provenance": origin,
        "task_seconds": task_seconds(specs, records),
    })  # fmt: skip
    return {"rows": rows, "wall_seconds": wall, "submitted": records.submitted}


def layer_rows(role: dict, measured: dict) -> list[dict]:
    """One row per node layer and fit mode of one measured run."""
    return [
        {**role, "node_layer": n["node_layer"], "n_nodes": n["n_nodes"], "dead": n["dead"],
         "mode": mode, **fit}
        for n in measured["node_layers"] for mode, fit in n["fits"].items()
    ]  # fmt: skip


def _mean(values: list) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def table(runs: list[dict], layers: list[dict]) -> list[dict]:
    """Per model, data set, method and sparsity target: error mean and std over seeds,
    sparsity, effective sparsity; per node layer and mode how many seeds earn the scale-free
    verdict (``sf``), merely a plausible power law (``plausible``), the mean alpha and dead
    nodes; per weight layer the mean spectral gap and a random mask's."""
    ids = ("model", "dataset", "method", "sparsity_target")
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in ids), []).append(r)
    rows = []
    for group, members in groups.items():
        error = np.array([m["test_error"] for m in members])
        row = dict(zip(ids, group)) | {
            "seeds": len(members), "test_error_mean": float(error.mean()),
            "test_error_std": float(error.std()),
            "sparsity_mean": _mean([m["sparsity"] for m in members]),
            "effective_sparsity_mean": _mean([m["effective_sparsity"] for m in members]),
        }  # fmt: skip
        mine = [r for r in layers if tuple(r[k] for k in ids) == group]
        for name in dict.fromkeys(r["node_layer"] for r in mine):
            for mode in dict.fromkeys(r["mode"] for r in mine):
                cell = [r for r in mine if r["node_layer"] == name and r["mode"] == mode]
                row[f"{name}_{mode}_sf"] = sum(bool(r["scale_free"]) for r in cell)
                row[f"{name}_{mode}_plausible"] = sum(bool(r["plausible"]) for r in cell)
                row[f"{name}_{mode}_alpha"] = _mean([r["alpha"] for r in cell])
            row[f"{name}_dead"] = _mean([r["dead"] for r in cell])
        for column in [c for c in members[0] if c.startswith(("gap_", "random_gap_"))]:
            row[f"{column}_mean"] = _mean([m[column] for m in members])
        rows.append(row)
    return rows


def control_table(controls: list[dict]) -> list[dict]:
    """Per model, data set, method and control: error mean and std over seeds, and the paired
    difference to the method's own masks (``mask``) retrained the same way."""
    ids = ("model", "dataset", "method", "sparsity_target")
    mask = {tuple(c[k] for k in (*ids, "seed")): c["test_error"] for c in controls
            if c["control"] == "mask"}  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for c in controls:
        groups.setdefault((*(c[k] for k in ids), c["control"]), []).append(c)
    rows = []
    for group, members in groups.items():
        error = np.array([m["test_error"] for m in members])
        paired = [m["test_error"] - mask[(*group[:-1], m["seed"])] for m in members
                  if (*group[:-1], m["seed"]) in mask]  # fmt: skip
        rows.append(dict(zip((*ids, "control"), group)) | {
            "seeds": len(members), "test_error_mean": float(error.mean()),
            "test_error_std": float(error.std()),
            "minus_mask_mean": _mean(paired),
            "minus_mask_std": float(np.std(paired)) if paired else None,
        })  # fmt: skip
    return rows


# The paired comparisons the reading rests on: (control, baseline, what it asks).
COMPARISONS = (
    ("rewired", "mask", "do the degrees alone carry the masks' accuracy?"),
    ("er", "mask", "does a random mask of the same per-layer density train as well?"),
    ("rewired", "er", "do the degrees beat a random mask of the same per-layer density?"),
    ("pa", "er", "do preferential-attachment masks train better than Erdos-Renyi ones?"),
    # one er-flat run per seed is every method's baseline: its pairs are not independent
    ("er-flat", "er", "does the method's allocation across layers matter?"),
)


def paired_tests(controls: list[dict]) -> list[dict]:
    """Per model and data set, each comparison over all (method, seed) pairs: the mean
    difference in test error (points), how many pairs favour each side, the paired t-test and
    the Wilcoxon signed-rank test."""
    errors = {(c["model"], c["dataset"], c["method"], c["seed"], c["control"]): c["test_error"]
              for c in controls}  # fmt: skip

    def error(model: str, dataset: str, method: str, seed: int, control: str) -> float | None:
        found = errors.get((model, dataset, method, seed, control))  # er-flat: one per seed
        return errors.get((model, dataset, "-", seed, control)) if found is None else found

    rows = []
    for model, dataset in dict.fromkeys((c["model"], c["dataset"]) for c in controls):
        pairs_of = {(m, s) for (mo, d, m, s, _) in errors
                    if (mo, d) == (model, dataset) and m != "-"}  # fmt: skip
        for control, baseline, question in COMPARISONS:
            both = [(error(model, dataset, m, s, control), error(model, dataset, m, s, baseline))
                    for m, s in sorted(pairs_of)]  # fmt: skip
            diffs = np.array([a - b for a, b in both if a is not None and b is not None])
            if diffs.size == 0:
                continue
            varied = diffs.size > 1 and np.ptp(diffs) > 0
            rows.append({
                "model": model, "dataset": dataset, "control": control, "baseline": baseline,
                "question": question, "pairs": int(diffs.size),
                "diff_mean": float(diffs.mean()), "diff_std": float(diffs.std()),
                "control_better": int((diffs < 0).sum()), "baseline_better": int((diffs > 0).sum()),
                "t_test_p": float(scipy_stats.ttest_rel(diffs, np.zeros_like(diffs)).pvalue)
                if varied else None,
                "wilcoxon_p": float(scipy_stats.wilcoxon(diffs).pvalue) if varied else None,
            })  # fmt: skip
    return rows


def task_seconds(specs: list[RunSpec], records) -> dict:
    """Seconds the runs took inside their workers, summed per kind (training, measuring,
    controls): the time per worker the larger grid scales from."""
    total: dict[str, float] = {}
    for spec in specs:
        kind = ("measure" if spec.task == MEASURE_TASK else
                "control" if spec.settings.get("from_runs") is not None else "train")  # fmt: skip
        seconds = records[spec.key].get("run_spec", {}).get("task_seconds") or 0.0
        total[kind] = total.get(kind, 0.0) + seconds
    return total


def figures(results: str | Path, out: str | Path) -> list[Path]:
    """Heat maps of alpha and scale-free verdicts per method and node layer (one per fit mode),
    test error against sparsity per method, and the five controls per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, out = Path(results), Path(out)
    if not (results / "table.csv").exists():
        raise TopopruneError(f"{results / 'table.csv'} does not exist: run `topoprune study run "
                             "topology-atlas`")  # fmt: skip
    table = _read_csv(results / "table.csv")
    controls = _read_csv(results / "controls.csv")
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)

    panels = list(dict.fromkeys((r["model"], r["dataset"], r["sparsity_target"]) for r in table))
    methods = list(dict.fromkeys(r["method"] for r in table))
    node_layers = [c[: -len("_dead")] for c in table[0] if c.endswith("_dead")]
    for mode in ("window", "clauset"):
        if f"{node_layers[0]}_{mode}_sf" not in table[0]:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(2.2 + 1.1 * len(node_layers)
                                                          * len(panels), 0.9 + 0.35 * len(methods)),
                                 squeeze=False)  # fmt: skip
        for ax, panel in zip(axes[0], panels, strict=True):
            rows = {r["method"]: r for r in table
                    if (r["model"], r["dataset"], r["sparsity_target"]) == panel}  # fmt: skip
            alpha = np.array([[_float(rows[m].get(f"{n}_{mode}_alpha")) if m in rows else np.nan
                               for n in node_layers] for m in methods])  # fmt: skip
            image = ax.imshow(alpha, cmap="coolwarm", vmin=-4, vmax=4, aspect="auto")
            for i, m in enumerate(methods):
                for j, n in enumerate(node_layers):
                    if m in rows:  # scale-free verdicts / seeds; * when any is plausible only
                        sf, seeds = rows[m][f"{n}_{mode}_sf"], rows[m]["seeds"]
                        plausible = int(rows[m][f"{n}_{mode}_plausible"]) > int(sf)
                        ax.text(j, i, f"{sf}/{seeds}" + ("*" if plausible else ""),
                                ha="center", va="center", fontsize=7,
                                fontweight="bold" if int(sf) else "normal")  # fmt: skip
            ax.set_xticks(range(len(node_layers)), node_layers)
            ax.set_yticks(range(len(methods)), methods if ax is axes[0][0] else [])
            ax.set_title(f"{panel[0]} {panel[1]}\n{100 * float(panel[2]):.0f}% sparse", fontsize=9)
            ax.set_xlabel("node layer")
        fig.colorbar(
            image,
            ax=axes[0].tolist(),
            label=f"alpha ({mode} mode, seed mean; < 0: counts rise with degree)",
        )
        fig.suptitle(f"{mode} mode: scale-free verdicts / seeds (* some fit only plausible, "
                     "p >= 0.1)", fontsize=9)  # fmt: skip
        fig.savefig(out / f"heat_map_{mode}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(out / f"heat_map_{mode}.png")

    datasets = list(dict.fromkeys((r["model"], r["dataset"]) for r in table))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    for ax, (model, dataset) in zip(axes[0], datasets, strict=True):
        for index, method in enumerate(methods):
            rows = sorted(
                (
                    r
                    for r in table
                    if (r["model"], r["dataset"], r["method"]) == (model, dataset, method)
                ),
                key=lambda r: float(r["sparsity_mean"]),
            )
            ax.errorbar([100 * float(r["sparsity_mean"]) for r in rows],
                        [float(r["test_error_mean"]) for r in rows],
                        yerr=[float(r["test_error_std"]) for r in rows], capsize=2,
                        marker="osD^v<>"[index % 7], label=method,
                        color=plt.cm.tab20(index % 20))  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("test error (%), mean +- std over seeds")
        ax.set_title(f"{model} {dataset}")
    axes[0][-1].legend(fontsize=7, ncol=2)
    save(fig, "accuracy_vs_sparsity.png")

    kinds = list(dict.fromkeys(r["control"] for r in controls if r["method"] != "-"))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, (model, dataset) in zip(axes[0], datasets, strict=True):
        mine = [r for r in controls if (r["model"], r["dataset"]) == (model, dataset)]
        for k, kind in enumerate(kinds):
            rows = {r["method"]: r for r in mine if r["control"] == kind}
            ax.errorbar([i + 0.15 * (k - len(kinds) / 2) for i, m in enumerate(methods)
                         if m in rows],
                        [float(rows[m]["test_error_mean"]) for m in methods if m in rows],
                        yerr=[float(rows[m]["test_error_std"]) for m in methods if m in rows],
                        fmt="o", markersize=4, capsize=2, label=kind)  # fmt: skip
        flat = [float(r["test_error_mean"]) for r in mine if r["control"] == "er-flat"]
        if flat:
            ax.axhline(flat[0], color="grey", linestyle=":", label="er-flat")
        ax.set_xticks(range(len(methods)), methods, rotation=60, fontsize=8)
        ax.set_ylabel("test error (%), mean +- std over seeds")
        ax.set_title(f"{model} {dataset}: each method's masks retrained from scratch")
    axes[0][-1].legend(fontsize=7)
    save(fig, "controls.png")
    return written


def _read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _float(value: str | None) -> float:
    return float(value) if value not in (None, "") else np.nan
