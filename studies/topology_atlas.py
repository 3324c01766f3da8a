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

Every control starts from the seed's initial weights (the method's own start, or for the
methods that prune a trained model the dense run's start); connections SET and RigL grew during
training start there too, not from the values those methods gave them. For ``random`` (uniform
per layer) ``er`` and ``er-flat`` draw the same masks. Spreads are sample standard deviations
(ddof 1) over seeds; paired t-tests compare each control with the method's own masks per method
(``controls.csv``) and across methods (``tests.csv``).

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
import functools
import time
from collections.abc import Sequence
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
from topoprune.stats import beats_random_null
from topoprune.stats.alternatives import SIGNIFICANCE
from topoprune.stats.node_layers import fit_columns, fit_node_layers
from topoprune.topology.connectivity import effective_connectivity, spectral_table
from topoprune.train.engine import resolve_device

from ._runs import TRAIN_TASK, config_settings, describe, without_spec
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
    # DNS sets no sparsity: c per layer calibrated on MNIST seed 0 (docs/studies/topology-atlas.md)
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
    """DNS's c per layer for ``sparsity``: calibrated at 90% and 98%, elsewhere inter- or
    extrapolated with the log of the kept fraction linear in c (as in the calibration runs),
    clamped at 0 (below 90% DNS then prunes less than asked: the tables give the measured
    sparsity)."""
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
               methods=("magnitude", "snip", "lottery", "set"), seeds=(0,), n_boot=10,
               epoch_scale=0.1,
               train_subset=2000)  # fmt: skip
# For a bigger machine: more models and sparsities (about 6x the default grid's runs).
PRESETS = {"large": Config(models=("lenet300", "mlp1024", "cnn_mnist"),
                           sparsities=(0.5, 0.8, 0.9, 0.95, 0.98, 0.99))}  # fmt: skip


@functools.cache  # plan asks once per run spec; building the model each time is waste
def weight_shapes(model: str, num_classes: int = 10) -> tuple[tuple[int, ...], ...]:
    """The weight shapes of ``model``'s prunable layers, in order (for sparsity targets)."""
    net = build_model(model, num_classes)
    return tuple(tuple(m.weight.shape) for m in net.modules() if hasattr(m, "weight")
            and m.weight is not None and m.weight.dim() >= 2)  # fmt: skip


def _bisect(kept_of, target: float, low: float, high: float) -> float:
    """The parameter in [low, high] where the increasing ``kept_of`` meets ``target``."""
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if kept_of(middle) < target else (low, middle)
    return (low + high) / 2


def set_epsilon(shapes: Sequence[tuple[int, ...]], kept: float) -> float:
    """SET's epsilon at which the Erdos-Renyi layer densities keep ``kept`` of all weights.

    >>> round(set_epsilon([(300, 784), (100, 300), (10, 100)], 0.1), 2)
    17.26
    """
    sizes = np.array([np.prod(s) for s in shapes], dtype=float)

    def kept_of(epsilon: float) -> float:
        densities = [erdos_renyi_density(torch.Size(s), epsilon) for s in shapes]
        return float(np.dot(densities, sizes) / sizes.sum())

    return _bisect(kept_of, kept, 0.0, float(sizes.max()))


def lottery_rate(shapes: Sequence[tuple[int, ...]], kept: float, rounds: int) -> float:
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
                        "model": model, "data": dataset, "method": "-",
                        "sparsity": config.control_sparsity, "seed": seed,
                        "control": "er-flat"}  # fmt: skip
                for sparsity in config.sparsities:
                    for method in config.methods:
                        role = {"model": model, "data": dataset, "method": method,
                                "sparsity": sparsity, "seed": seed}  # fmt: skip
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
    # at the verdict's significance (0.1), so a scale-free verdict always beats the null here
    columns["beats_null"] = beats_random_null(fit)
    # the weaker reading: the power law merely not rejected, null and range aside
    columns["plausible"] = bool(fit.fittable and fit.p_value is not None
                                and fit.p_value >= SIGNIFICANCE)  # fmt: skip
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
    runs, layers, controls = [], [], []
    for spec in specs:
        if spec.task == MEASURE_TASK:
            measured = without_spec(records[spec.key])
            role = {k: v for k, v in roles[spec.key].items() if k != "control"}
            runs.append({**role, "test_error": 100 * measured["test_error"],
                         "measured_sparsity": measured["sparsity"],
                         "effective_sparsity": measured["effective_sparsity"],
                         **{f"gap_{r['layer']}": r["spectral_gap"] for r in measured["layers"]},
                         **{f"random_gap_{r['layer']}": r["random_spectral_gap"]
                            for r in measured["layers"]}})  # fmt: skip
            layers += layer_rows(role, measured)  # the degree histograms stay in the runs
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


def _std(values) -> float | None:
    """The sample standard deviation (ddof 1, as the t-tests use); None for one value."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if values.size > 1 else None


def _t_test_p(diffs: np.ndarray) -> float | None:
    """Two-sided one-sample t-test of paired differences against 0 (None when it is undefined:
    one pair, or all differences equal)."""
    if diffs.size < 2 or np.ptp(diffs) == 0:
        return None
    return float(scipy_stats.ttest_1samp(diffs, 0.0).pvalue)


IDS = ("model", "data", "method", "sparsity")


def table(runs: list[dict], layers: list[dict]) -> list[dict]:
    """Per model, data set, method and sparsity target: test error mean and sample std over
    seeds, the measured sparsity and effective sparsity; per node layer and mode how many seeds
    earn the scale-free verdict (``sf``) and how many a plausible power law only (p >= 0.1,
    ``plausible``), the mean alpha and dead nodes; per weight layer the mean spectral gap and a
    random mask's."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in IDS), []).append(r)
    rows = []
    for group, members in groups.items():
        error = [m["test_error"] for m in members]
        row = dict(zip(IDS, group)) | {
            "seeds": len(members), "test_error_mean": _mean(error),
            "test_error_std": _std(error),
            "measured_sparsity_mean": _mean([m["measured_sparsity"] for m in members]),
            "effective_sparsity_mean": _mean([m["effective_sparsity"] for m in members]),
        }  # fmt: skip
        mine = [r for r in layers if tuple(r[k] for k in IDS) == group]
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
    """Per model, data set, method and control: test error mean and sample std over seeds, and
    the paired difference to the method's own masks (``mask``) retrained the same way, with its
    paired t-test over the seeds (``er-flat``, one run per seed, has no method and no pair)."""
    mask = {tuple(c[k] for k in (*IDS, "seed")): c["test_error"] for c in controls
            if c["control"] == "mask"}  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for c in controls:
        groups.setdefault((*(c[k] for k in IDS), c["control"]), []).append(c)
    rows = []
    for group, members in groups.items():
        paired = np.array([m["test_error"] - mask[(*group[:-1], m["seed"])] for m in members
                           if (*group[:-1], m["seed"]) in mask])  # fmt: skip
        error = [m["test_error"] for m in members]
        rows.append(dict(zip((*IDS, "control"), group)) | {
            "seeds": len(members), "test_error_mean": _mean(error), "test_error_std": _std(error),
            "minus_mask_mean": _mean(list(paired)), "minus_mask_std": _std(paired),
            "minus_mask_t_test_p": None if group[-1] == "mask" else _t_test_p(paired),
        })  # fmt: skip
    return rows


# The paired comparisons the reading rests on: (control, baseline, what it asks).
COMPARISONS = (
    ("rewired", "mask", "do the degrees alone carry the masks' accuracy?"),
    ("er", "mask", "does a random mask of the same per-layer density train as well?"),
    ("rewired", "er", "do the degrees beat a random mask of the same per-layer density?"),
    ("pa", "er", "do preferential-attachment masks train better than Erdos-Renyi ones?"),
    ("er-flat", "er", "does the method's allocation across layers matter?"),
)


def paired_tests(controls: list[dict]) -> list[dict]:
    """Per model and data set, each comparison over the (method, seed) pairs: the mean
    difference in test error (points, control minus baseline), its sample std, how many pairs
    favour each side, the paired t-test and the Wilcoxon signed-rank test. ``er-flat`` is one
    run per seed, so it is compared with the per-seed mean over methods (as many pairs as
    seeds), not counted once per method."""
    errors = {(c["model"], c["data"], c["method"], c["seed"], c["control"]): c["test_error"]
              for c in controls}  # fmt: skip
    rows = []
    for model, data in dict.fromkeys((c["model"], c["data"]) for c in controls):
        mine = {k[2:]: v for k, v in errors.items() if k[:2] == (model, data)}
        pairs_of = sorted({(m, s) for (m, s, _) in mine if m != "-"})
        for control, baseline, question in COMPARISONS:
            if control == "er-flat":
                seeds = sorted({s for m, s in pairs_of})
                diffs = np.array([
                    mine[("-", s, control)]
                    - np.mean([mine[(m, t, baseline)] for m, t in pairs_of
                               if t == s and (m, t, baseline) in mine])
                    for s in seeds if ("-", s, control) in mine
                ])  # fmt: skip
            else:
                diffs = np.array([
                    mine[(m, s, control)] - mine[(m, s, baseline)] for m, s in pairs_of
                    if (m, s, control) in mine and (m, s, baseline) in mine
                ])  # fmt: skip
            if diffs.size == 0:
                continue
            rows.append({
                "model": model, "data": data, "control": control, "baseline": baseline,
                "question": question, "pairs": int(diffs.size),
                "diff_mean": float(diffs.mean()), "diff_std": _std(diffs),
                "control_better": int((diffs < 0).sum()), "baseline_better": int((diffs > 0).sum()),
                "t_test_p": _t_test_p(diffs),
                "wilcoxon_p": float(scipy_stats.wilcoxon(diffs).pvalue)
                if np.count_nonzero(diffs) > 1 else None,
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
    """Per model and fit mode a heat map of alpha and scale-free verdicts per method and node
    layer; test error against measured sparsity per method; the five controls per method."""
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
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(out / name)

    methods = list(dict.fromkeys(r["method"] for r in table))
    models = list(dict.fromkeys(r["model"] for r in table))
    for model, mode in ((m, mode) for m in models for mode in ("window", "clauset")):
        rows_of_model = [r for r in table if r["model"] == model]
        # this model's node layers: the columns its rows fill
        node_layers = [c[: -len("_dead")] for c in rows_of_model[0]
                       if c.endswith("_dead") and rows_of_model[0][c] != ""]  # fmt: skip
        if not node_layers or f"{node_layers[0]}_{mode}_sf" not in rows_of_model[0]:
            continue
        panels = list(dict.fromkeys((r["data"], r["sparsity"]) for r in rows_of_model))
        fig, axes = plt.subplots(1, len(panels), squeeze=False,
                                 figsize=(1.6 + 1.0 * len(node_layers) * len(panels),
                                          1.0 + 0.35 * len(methods)))  # fmt: skip
        for ax, panel in zip(axes[0], panels, strict=True):
            rows = {r["method"]: r for r in rows_of_model if (r["data"], r["sparsity"]) == panel}
            alpha = np.array([[_float(rows[m][f"{n}_{mode}_alpha"]) if m in rows else np.nan
                               for n in node_layers] for m in methods])  # fmt: skip
            image = ax.imshow(alpha, cmap="coolwarm", vmin=-4, vmax=4, aspect="auto")
            for i, m in enumerate(methods):
                for j, n in enumerate(node_layers):
                    if m in rows:  # scale-free verdicts / seeds; * when a fit is plausible only
                        sf, seeds = int(rows[m][f"{n}_{mode}_sf"]), rows[m]["seeds"]
                        plausible = int(rows[m][f"{n}_{mode}_plausible"]) > sf
                        ax.text(j, i, f"{sf}/{seeds}" + ("*" if plausible else ""),
                                ha="center", va="center", fontsize=7,
                                fontweight="bold" if sf else "normal")  # fmt: skip
            ax.set_xticks(range(len(node_layers)), node_layers)
            ax.set_yticks(range(len(methods)), methods if ax is axes[0][0] else [])
            ax.set_title(f"{panel[0]}\n{100 * float(panel[1]):.0f}% sparse", fontsize=9)
            ax.set_xlabel("node layer")
        fig.colorbar(
            image,
            ax=axes[0].tolist(),
            label=f"alpha ({mode} mode, seed mean; < 0: counts rise with degree)",
        )
        fig.suptitle(f"{model}, {mode} mode: scale-free verdicts / seeds (* a fit plausible "
                     "only, p >= 0.1)", fontsize=9)  # fmt: skip
        save(fig, f"heat_map_{model}_{mode}.png")

    cases = list(dict.fromkeys((r["model"], r["data"]) for r in table))
    fig, axes = plt.subplots(1, len(cases), figsize=(5.5 * len(cases), 4.2), squeeze=False)
    for ax, (model, data) in zip(axes[0], cases, strict=True):
        for index, method in enumerate(methods):
            rows = sorted((r for r in table if (r["model"], r["data"], r["method"])
                           == (model, data, method)),
                          key=lambda r: float(r["measured_sparsity_mean"]))  # fmt: skip
            mean = np.array([float(r["test_error_mean"]) for r in rows])
            std = np.array([_float(r["test_error_std"]) for r in rows])
            # log axis: the lower bar stops short of zero
            ax.errorbar([100 * float(r["measured_sparsity_mean"]) for r in rows], mean,
                        yerr=[np.minimum(np.nan_to_num(std), 0.9 * mean), np.nan_to_num(std)],
                        capsize=2, marker="osD^v<>"[index % 7], label=method,
                        color=plt.cm.tab20(index % 20))  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("measured sparsity (%)")
        ax.set_ylabel("test error (%), mean +- std over seeds")
        ax.set_title(f"{model} {data}")
    axes[0][-1].legend(fontsize=7, ncol=2)
    save(fig, "accuracy_vs_sparsity.png")

    kinds = list(dict.fromkeys(r["control"] for r in controls if r["method"] != "-"))
    cases = list(dict.fromkeys((r["model"], r["data"]) for r in controls))
    fig, axes = plt.subplots(1, len(cases), figsize=(6 * len(cases), 4.2), squeeze=False)
    for ax, (model, data) in zip(axes[0], cases, strict=True):
        mine = [r for r in controls if (r["model"], r["data"]) == (model, data)]
        for k, kind in enumerate(kinds):
            rows = {r["method"]: r for r in mine if r["control"] == kind}
            shown = [(i, rows[m]) for i, m in enumerate(methods) if m in rows]
            mean = np.array([float(r["test_error_mean"]) for _, r in shown])
            std = np.nan_to_num([_float(r["test_error_std"]) for _, r in shown])
            ax.errorbar([i + 0.15 * (k - len(kinds) / 2) for i, _ in shown], mean,
                        yerr=[np.minimum(std, 0.9 * mean), std], fmt="o", markersize=4,
                        capsize=2, label=kind)  # fmt: skip
        flat = [float(r["test_error_mean"]) for r in mine if r["control"] == "er-flat"]
        if flat:
            ax.axhline(flat[0], color="grey", linestyle=":", label="er-flat (one per seed)")
        ax.set_yscale("log")
        ax.set_xticks(range(len(methods)), methods, rotation=60, fontsize=8)
        ax.set_ylabel("test error (%), mean +- std over seeds")
        ax.set_title(f"{model} {data}: each method's masks retrained from scratch", fontsize=9)
    axes[0][-1].legend(fontsize=7)
    save(fig, "controls.png")
    return written


def _read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _float(value: str | None) -> float:
    return float(value) if value not in (None, "") else np.nan
