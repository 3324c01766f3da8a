"""Study: pruning before and during training (SNIP, lottery tickets, SET, RigL) and whether
connections grown during training attach preferentially.

    topoprune study run sparse-training [--quick]
    topoprune figures --study sparse-training

Parts (every training run and every run's measurement a run spec: a finished one is never rerun,
so an interrupted study resumes where it stopped, and the runs can go to local processes or a Ray
cluster, docs/running.md):

1. **SNIP's Table 1**: a dense model and SNIP (one global ranking of ``|g w|`` on 100 training
   examples at initialisation, then training of the masked network) per model, sparsity and seed
   on MNIST, beside the paper's errors.
2. **The lottery-ticket curve** (LeNet-300-100, Adam 1.2e-3, batch 60 as in the paper): one
   iterative-magnitude run per seed (20% of each hidden layer, 10% of the output layer per round,
   rewinding to the initialisation); at the rounds where the paper reports (51.3, 21.1, 13.5,
   7.0, 3.6 and 1.9% remaining) the round's mask trained from a new initialisation
   (``fixed-masks``, the paper's re-initialisation control) and random masks of the same
   per-layer densities (``random``). Test error and the early-stopping epoch (lowest validation
   error) of each.
3. **Dynamic sparse training**: SET (epsilon 20, zeta 0.3), RigL (ERK at the same densities,
   which ERK reproduces exactly for these MLPs), static random masks of those densities and
   magnitude pruning to them (half the epochs dense, half retraining), the same number of epochs
   each, on LeNet-300-100 / MNIST and SET's 784-1000-1000-1000-10 MLP / Fashion-MNIST. The
   sparse-from-scratch runs use ``--sparse-init`` (without it the 4%-dense MLP stays at chance).
4. **Attachment during training**: for every SET and RigL run, the attachment rate between
   consecutive mask snapshots (exponent beta of rate ~ (d_i d_j)^beta with its 95% bootstrap
   interval) at evenly spaced updates, and window- and clauset-mode fits of every node layer's
   degrees with the random-mask null at the start, the middle and the end of training.

Outputs in ``results/sparse_training/``: ``table.csv`` (model, method, kept_percent, seeds,
test_error_mean, test_error_std, part), ``snip.csv``, ``lottery.csv``, ``dst.csv``,
``attachment.csv``, ``fits.csv``, ``tables.md``, ``figures.json`` and ``summary.json``; the runs
under ``runs/<key>-<hash>/`` (summaries in git, checkpoints not), keyed
``<model>-<data>-<name>-seed<k>``: ``dense``, ``snip<sparsity>`` and
``snip<sparsity>-<epochs>epochs``; ``lottery``, then ``reinit-round<r>`` (seed k + 1000) and
``random-round<r>``, each needing its seed's ``lottery`` run; ``set``, ``rigl``, ``random``,
``magnitude``; ``init-<method>-<sparse|default>``; and ``attach-<model>-<data>-<method>-seed<k>``,
the attachment and fit measurements of a SET or RigL run (needing it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from topoprune.attachment import compare_snapshots
from topoprune.data import load_dataset
from topoprune.errors import TopopruneError
from topoprune.io import load_network
from topoprune.io.checkpoint import snapshot_names
from topoprune.io.torch_file import load_torch_object
from topoprune.models import build_model
from topoprune.provenance import provenance
from topoprune.prune.masks import weight_modules
from topoprune.prune.methods import METHODS
from topoprune.prune.sparse_evolution import erdos_renyi_densities
from topoprune.runner import RunSpec, run_specs
from topoprune.stats.node_layers import fit_node_layers
from topoprune.train.engine import TrainSettings, resolve_device
from topoprune.train.run import prune_run

from ._data import subset
from ._runs import config_from_settings, config_settings, describe
from ._summary import write_study_summary
from ._tables import columns_of, degree_histogram, mean_sd, rows_to_csv, rows_to_markdown

# Lee et al. 2019, Table 1 (test error %, MNIST): the dense reference and SNIP at each sparsity.
PAPER_SNIP = {
    "lenet300": {"dense": 1.7, 0.95: 1.6, 0.98: 2.4},
    "lenet5": {"dense": 0.9, 0.98: 0.8, 0.99: 1.1},
}
# Frankle and Carbin 2019, Figure 3: the remaining weights (%) of the rounds they plot.
PAPER_LOTTERY_REMAINING = (100.0, 51.3, 21.1, 13.5, 7.0, 3.6, 1.9)
SNIP_RECIPE = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"}
LOTTERY_RECIPE = {"optimizer": "adam", "lr": 1.2e-3, "weight_decay": 0.0}
DST_RECIPE = {
    "lenet300": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"},
    "mlp3x1000": {"lr": 0.05, "momentum": 0.9, "weight_decay": 2e-4, "schedule": "cosine"},
}
BATCH = {"snip": 100, "lottery": 60, "dst": {"lenet300": 100, "mlp3x1000": 128}}
SET_EPSILON, SET_ZETA = 20.0, 0.3
DST_METHODS = ("set", "rigl", "random", "magnitude")
# an update that grows fewer connections than this in a layer is listed, not summarised: a
# rate fitted to a handful of new connections says little (RigL's last updates grow 1)
MIN_CREATED = 50


@dataclass(frozen=True)
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    # (model, sparsity) pairs of SNIP's table and the epochs of each model (dense and masked)
    snip_cases: tuple[tuple[str, float], ...] = (("lenet300", 0.95), ("lenet300", 0.98),
                                                 ("lenet5", 0.98), ("lenet5", 0.99))  # fmt: skip
    snip_epochs: tuple[tuple[str, int], ...] = (("lenet300", 20), ("lenet5", 5))
    # SNIP at a longer schedule, one seed: (model, sparsity, epochs); is the gap to the paper
    # a matter of training length?
    snip_longer: tuple[tuple[str, float, int], ...] = (("lenet300", 0.98, 100),)
    lottery_rounds: tuple[int, ...] = (0, 3, 7, 9, 12, 15, 18)  # the paper's remaining %
    lottery_epochs: int = 4  # per round
    # (model, data set, epochs) of the dynamic sparse training comparison
    dst_cases: tuple[tuple[str, str, int], ...] = (("lenet300", "mnist", 20),
                                                   ("mlp3x1000", "fashion-mnist", 5))  # fmt: skip
    rigl_delta_t: int = 100
    # the initialisation check: (model, data set, epochs, training images) with and without
    # --sparse-init for the sparse-from-scratch methods, one seed
    init_check: tuple[str, str, int, int] = ("mlp3x1000", "fashion-mnist", 2, 15000)
    attachment_pairs: int = 8  # consecutive snapshot pairs measured per run
    attachment_boot: int = 200
    fit_boot: int = 100
    train_subset: int = 0  # quick mode: the first this many training images (0: all)
    device: str = "auto"


QUICK = Config(
    seeds=(0,),
    snip_cases=(("lenet300", 0.95),),
    snip_epochs=(("lenet300", 1),),
    snip_longer=(("lenet300", 0.95, 2),),
    lottery_rounds=(0, 1, 2),
    lottery_epochs=1,
    dst_cases=(("lenet300", "mnist", 2),),
    rigl_delta_t=10,
    init_check=("lenet300", "mnist", 1, 1000),
    attachment_pairs=2,
    attachment_boot=20,
    fit_boot=10,
    train_subset=2000,
)


TRAIN_TASK = "topoprune_studies.sparse_training:train"
MEASURE_TASK = "topoprune_studies.sparse_training:measure"


def train(folder: Path, inputs: dict, *, model: str, dataset: str, method: str, seed: int,
          device: str, batch_size: int, config: dict, train_subset: int = 0,
          masks_of: str | None = None, kept_of: str | None = None,
          kept_snapshot: str | None = None) -> dict:  # fmt: skip
    """Run ``method`` on ``model`` in ``folder`` (resuming a killed attempt), on the first
    ``train_subset`` training images (0: all). ``masks_of`` is the key of the needed run whose
    checkpoint holds the masks (``fixed-masks``); ``kept_of`` that of the run whose mask
    snapshot ``kept_snapshot`` gives the per-layer kept fractions (``random``)."""
    values = dict(config)
    if masks_of is not None:
        values["masks"] = inputs[masks_of]["checkpoint"]
    if kept_of is not None:
        values["kept"] = mask_densities(inputs[kept_of]["checkpoint"], kept_snapshot)
    settings = TrainSettings(seed=seed, device=device, batch_size=batch_size)
    data = subset(load_dataset(dataset), train_subset)
    return prune_run(model, dataset, method, config_from_settings(method, values), settings,
                     folder, resume=True, data=data)  # fmt: skip


def mask_densities(checkpoint: str, snapshot: str | None) -> list[float]:
    """The kept fraction of every weight layer in a checkpoint's mask snapshot, in order."""
    network = load_network(checkpoint, snapshot=snapshot, keep_weights=False)
    return [float(layer.density) for layer in network.layers]


class Plan:
    """The study's run specs, and which part each belongs to."""

    def __init__(self, config: Config, device: str) -> None:
        self.config, self.device = config, device
        self.specs: list[RunSpec] = []
        self.parts: dict[str, str] = {}

    def train(self, part: str, model: str, data: str, name: str, seed: int, method: str, cfg,
              batch: int, images: int | None = None, *, masks_of: str | None = None,
              kept_of: str | None = None, kept_snapshot: str | None = None) -> str:  # fmt: skip
        """A training run keyed ``<model>-<data>-<name>-seed<k>``, on ``images`` training images
        (default: the config's subset). ``masks_of`` / ``kept_of`` are keys of runs it needs:
        the config's ``masks`` / ``kept`` come from them (see :func:`train`)."""
        key = f"{model}-{data}-{name}-seed{seed}"
        values = config_settings(cfg)
        needed = {"masks_of": masks_of, "kept_of": kept_of, "kept_snapshot": kept_snapshot}
        needed = {k: v for k, v in needed.items() if v is not None}
        for field, of in (("masks", masks_of), ("kept", kept_of)):
            if of is not None:
                del values[field]  # filled in by the task from the needed run
        settings = {"model": model, "dataset": data, "method": method, "seed": seed,
                    "device": self.device, "batch_size": batch, "config": values,
                    "train_subset": self.config.train_subset if images is None else images,
                    **needed}  # fmt: skip
        needs = tuple(dict.fromkeys(k for k in (masks_of, kept_of) if k is not None))
        return self.add(part, RunSpec(key, TRAIN_TASK, settings, needs))

    def add(self, part: str, spec: RunSpec) -> str:
        self.specs.append(spec)
        self.parts[spec.key] = part
        return spec.key


def _kept_percent(summary: dict) -> float:
    """The kept share of every weight layer's weights (unpruned layers count as kept)."""
    return round(100 / summary["compression"], 3)


def _early_stopping(summary: dict, stage: str) -> dict:
    """The epoch (and its validation error) of the lowest validation error in ``stage``."""
    records = [h for h in summary["history"] if h.get("stage") == stage and "val_error" in h]
    if not records:
        return {"early_stop_epoch": None, "early_stop_val_error": None, "val_errors": []}
    best = min(records, key=lambda h: h["val_error"])
    return {"early_stop_epoch": best["epoch"],
            "early_stop_val_error": round(100 * best["val_error"], 3),
            "val_errors": [round(100 * h["val_error"], 3) for h in records]}  # fmt: skip


# ---- part 1: SNIP's table ----------------------------------------------------------------------


def snip_part(plan: Plan, config: Config) -> list[tuple[str, tuple]]:
    """SNIP's runs: each run's key and its row's model, method, sparsity, seed, epochs (and
    schedule)."""
    epochs = dict(config.snip_epochs)
    runs = []
    for seed in config.seeds:
        for model in dict.fromkeys(m for m, _ in config.snip_cases):
            dense = METHODS["dense"].Config(epochs=epochs[model], **SNIP_RECIPE)
            key = plan.train("snip", model, "mnist", "dense", seed, "dense", dense, BATCH["snip"])
            runs.append((key, (model, "dense", 0.0, seed, epochs[model])))
        for model, sparsity in config.snip_cases:
            snip = METHODS["snip"].Config(sparsity=(sparsity,), retrain_epochs=epochs[model],
                                          scoring_examples=100, **SNIP_RECIPE)  # fmt: skip
            key = plan.train("snip", model, "mnist", f"snip{sparsity:g}", seed, "snip", snip,
                             BATCH["snip"])  # fmt: skip
            runs.append((key, (model, "snip", sparsity, seed, epochs[model])))
    for model, sparsity, longer in config.snip_longer:
        snip = METHODS["snip"].Config(sparsity=(sparsity,), retrain_epochs=longer,
                                      scoring_examples=100, **SNIP_RECIPE)  # fmt: skip
        key = plan.train("snip", model, "mnist", f"snip{sparsity:g}-{longer}epochs",
                         config.seeds[0], "snip", snip, BATCH["snip"])  # fmt: skip
        runs.append((key, (model, "snip", sparsity, config.seeds[0], longer, "longer")))
    return runs


def snip_rows(runs: list[tuple[str, tuple]], records: dict) -> list[dict]:
    """One row per SNIP run (:func:`snip_part`), from its record."""
    return [_snip_row(*row[:4], records[key], *row[4:]) for key, row in runs]


def _snip_row(model: str, method: str, sparsity: float, seed: int, summary: dict,
              epochs: int, schedule: str = "main") -> dict:  # fmt: skip
    return {"model": model, "method": method, "sparsity": sparsity, "seed": seed,
            "schedule": schedule,
            "kept_percent": _kept_percent(summary),
            "test_error": round(100 * summary["test_error"], 3),
            "paper_test_error": PAPER_SNIP.get(model, {}).get(
                "dense" if method == "dense" else sparsity),
            "epochs": epochs, "seconds": round(summary["wall_seconds_this_run"], 1)}  # fmt: skip


def snip_table(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds beside the paper, and whether ours is within 0.3 points."""
    out = []
    for key, group in _groups(rows, ("model", "method", "sparsity", "epochs")).items():
        errors = [r["test_error"] for r in group]
        paper = group[0]["paper_test_error"]
        mean = float(np.mean(errors))
        out.append({**dict(zip(("model", "method", "sparsity", "epochs"), key, strict=True)),
                    "seeds": len(group), "kept_percent": group[0]["kept_percent"],
                    "test_error": mean_sd(errors), "paper_test_error": paper,
                    "difference": None if paper is None else round(mean - paper, 2),
                    "within_0.3": None if paper is None else abs(mean - paper) <= 0.3})  # fmt: skip
    return out


# ---- part 2: the lottery-ticket curve ----------------------------------------------------------


def lottery_part(plan: Plan, config: Config) -> list[tuple[int, str, dict[int, tuple[str, str]]]]:
    """Per seed: the ticket's run, and per reported round (but 0) the keys of its controls,
    which need the ticket (its mask snapshot of that round)."""
    model, data = "lenet300", "mnist"
    rounds = max(config.lottery_rounds)
    epochs = config.lottery_epochs
    runs = []
    for seed in config.seeds:
        ticket_config = METHODS["lottery"].Config(rounds=max(rounds, 1), round_epochs=epochs,
                                                  dense_epochs=0, **LOTTERY_RECIPE)  # fmt: skip
        ticket = plan.train("lottery", model, data, "lottery", seed, "lottery", ticket_config,
                            BATCH["lottery"])  # fmt: skip
        controls = {}
        for r in config.lottery_rounds:
            if r == 0:
                continue  # the dense network: no control
            stage = f"round{r}"
            # the ticket's masks from a new initialisation: the run's seed differs from the ticket's
            fixed = METHODS["fixed-masks"].Config(snapshot=stage, epochs=epochs, **LOTTERY_RECIPE)
            reinit = plan.train("lottery", model, data, f"reinit-round{r}", seed + 1000,
                                "fixed-masks", fixed, BATCH["lottery"],
                                masks_of=ticket)  # fmt: skip
            # random masks of the round's per-layer densities
            random = METHODS["random"].Config(epochs=epochs, dense_epochs=0, **LOTTERY_RECIPE)
            rand = plan.train("lottery", model, data, f"random-round{r}", seed, "random", random,
                              BATCH["lottery"], kept_of=ticket, kept_snapshot=stage)  # fmt: skip
            controls[r] = (reinit, rand)
        runs.append((seed, ticket, controls))
    return runs


def lottery_rows(runs: list[tuple[int, str, dict]], records: dict, config: Config) -> list[dict]:
    """Per seed and reported round: the ticket's row and its controls' rows."""
    model, rows = "lenet300", []
    for seed, ticket_key, controls in runs:
        ticket = records[ticket_key]
        for r in config.lottery_rounds:
            stage = f"round{r}"
            network = load_network(ticket["checkpoint"], snapshot=stage, keep_weights=False)
            kept = 100 * sum(int(la.mask.sum()) for la in network.layers) / network.size
            base = {"model": model, "round": r, "seed": seed, "kept_percent": round(kept, 2)}
            rows.append({**base, "variant": "ticket",
                         "test_error": round(100 * ticket["stage_test_errors"][stage], 3),
                         **_early_stopping(ticket, stage)})  # fmt: skip
            if r == 0:
                continue
            reinit, rand = (records[key] for key in controls[r])
            rows.append({**base, "variant": "reinit",
                         "test_error": round(100 * reinit["test_error"], 3),
                         **_early_stopping(reinit, "fixed")})  # fmt: skip
            rows.append({**base, "variant": "random",
                         "test_error": round(100 * rand["test_error"], 3),
                         **_early_stopping(rand, "random")})  # fmt: skip
    return rows


def lottery_table(rows: list[dict]) -> list[dict]:
    out = []
    for (r, variant), group in _groups(rows, ("round", "variant")).items():
        out.append({"round": r, "kept_percent": group[0]["kept_percent"],
                    "paper_kept_percent": _paper_remaining(group[0]["kept_percent"]),
                    "variant": variant, "seeds": len(group),
                    "test_error": mean_sd([g["test_error"] for g in group]),
                    "early_stop_epoch": mean_sd([g["early_stop_epoch"] for g in group], 1),
                    "val_error_epoch1": mean_sd([g["val_errors"][0] if g["val_errors"] else None
                                                 for g in group])})  # fmt: skip
    return sorted(out, key=lambda r: (r["round"], r["variant"]))


def _paper_remaining(kept: float) -> float | str:
    nearest = min(PAPER_LOTTERY_REMAINING, key=lambda p: abs(p - kept))
    return nearest if abs(nearest - kept) < 0.1 else ""


# ---- part 3: dynamic sparse training -----------------------------------------------------------


def set_densities(model: str) -> tuple[float, ...]:
    """SET's Erdos-Renyi densities (epsilon 20) of the model's weight layers, in order."""
    return tuple(erdos_renyi_densities(build_model(model), SET_EPSILON).values())


def _overall_density(model: str, densities: tuple[float, ...]) -> float:
    sizes = [m.weight.numel() for _, m in weight_modules(build_model(model))]
    return sum(d * s for d, s in zip(densities, sizes, strict=True)) / sum(sizes)


def dst_config(method: str, model: str, epochs: int, config: Config):
    recipe = DST_RECIPE[model]
    densities = set_densities(model)
    if method == "set":
        return METHODS["set"].Config(epsilon=SET_EPSILON, zeta=SET_ZETA, epochs=epochs,
                                     sparse_init=True, **recipe)  # fmt: skip
    if method == "rigl":
        return METHODS["rigl"].Config(sparsity=1 - _overall_density(model, densities),
                                      epochs=epochs, delta_t=config.rigl_delta_t, alpha=0.3,
                                      stop=0.75, sparse_init=True, **recipe)  # fmt: skip
    if method == "random":
        return METHODS["random"].Config(kept=densities, epochs=epochs, dense_epochs=0,
                                        sparse_init=True, **recipe)  # fmt: skip
    dense = math.ceil(epochs / 2)
    return METHODS["magnitude"].Config(sparsity=tuple(1 - d for d in densities), iterations=1,
                                       dense_epochs=dense, retrain_epochs=epochs - dense,
                                       retrain_lr_factor=1.0, **recipe)  # fmt: skip


def dst_part(plan: Plan, config: Config) -> list[tuple[str, tuple]]:
    """The dynamic sparse training runs: each run's key and its model, data, method, seed,
    epochs."""
    runs = []
    for model, data, epochs in config.dst_cases:
        for seed in config.seeds:
            for method in DST_METHODS:
                cfg = dst_config(method, model, epochs, config)
                key = plan.train("dynamic_sparse_training", model, data, method, seed, method, cfg,
                                 BATCH["dst"][model])  # fmt: skip
                runs.append((key, (model, data, method, seed, epochs)))
    return runs


def dst_rows(runs: list[tuple[str, tuple]], records: dict) -> list[dict]:
    rows = []
    for key, (model, data, method, seed, epochs) in runs:
        summary = records[key]
        row = {"model": model, "data": data, "method": method, "seed": seed,
               "epochs": epochs, "kept_percent": _kept_percent(summary),
               "test_error": round(100 * summary["test_error"], 3),
               "seconds": round(summary["wall_seconds_this_run"], 1)}  # fmt: skip
        if method == "magnitude":
            row["dense_test_error"] = round(100 * summary["stage_test_errors"]["dense"], 3)
        rows.append(row)
    return rows


def dst_table(rows: list[dict]) -> list[dict]:
    out = []
    for key, group in _groups(rows, ("model", "data", "method")).items():
        row = {**dict(zip(("model", "data", "method"), key, strict=True)), "seeds": len(group),
               "epochs": group[0]["epochs"], "kept_percent": group[0]["kept_percent"],
               "test_error": mean_sd([g["test_error"] for g in group])}  # fmt: skip
        if "dense_test_error" in group[0]:
            row["dense_test_error"] = mean_sd([g["dense_test_error"] for g in group])
        out.append(row)
    return out


def init_check_part(plan: Plan, config: Config) -> list[tuple[str, dict]]:
    """SET, RigL and static random masks with and without ``--sparse-init``, one seed, a short
    run on a subset: does the default (dense-scale) initialisation train at these densities?
    Each run's key and the start of its row."""
    model, data, epochs, images = config.init_check
    runs = []
    for method in ("set", "rigl", "random"):
        for sparse_init in (False, True):
            cfg = dataclasses.replace(dst_config(method, model, epochs, config),
                                      sparse_init=sparse_init)  # fmt: skip
            name = f"init-{method}-{'sparse' if sparse_init else 'default'}"
            key = plan.train("init_check", model, data, name, config.seeds[0], method, cfg,
                             BATCH["dst"][model], images)  # fmt: skip
            runs.append((key, {"model": model, "data": data, "method": method,
                               "sparse_init": sparse_init, "seed": config.seeds[0],
                               "epochs": epochs, "train_images": images}))  # fmt: skip
    return runs


def init_check_rows(runs: list[tuple[str, dict]], records: dict) -> list[dict]:
    return [{**row, "kept_percent": _kept_percent(records[key]),
             "test_error": round(100 * records[key]["test_error"], 3)}
            for key, row in runs]  # fmt: skip


# ---- part 4: attachment and degree distributions during training ------------------------------


def dynamic_snapshots(checkpoint: str, method: str) -> list[str]:
    """The masks of every SET or RigL update, in order (the start first)."""
    prefix = {"set": "set/epoch", "rigl": "rigl/step"}[method]
    names = [n for n in snapshot_names(load_torch_object(Path(checkpoint))) if n.startswith(prefix)]
    return sorted(names, key=lambda n: int(n.removeprefix(prefix)))


def spaced(count: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(count)`` (all of them when ``count <= k``).

    >>> spaced(10, 3), spaced(2, 5)
    ([0, 4, 9], [0, 1])
    """
    if count <= k:
        return list(range(count))
    return sorted({round(i * (count - 1) / (k - 1)) for i in range(k)})


def attachment_part(plan: Plan, dst_runs: list[tuple[str, tuple]],
                    config: Config) -> list[tuple[str, dict]]:  # fmt: skip
    """A measurement spec per SET and RigL run (``attach-<run key>``, needing the run); each
    spec's key and the columns its rows start with."""
    runs = []
    for run_key, (model, data, method, seed, _) in dst_runs:
        if method not in ("set", "rigl"):
            continue
        key = plan.add("attachment_and_fits", RunSpec(
            f"attach-{run_key}", MEASURE_TASK,
            {"run": run_key, "method": method, "seed": seed, "pairs": config.attachment_pairs,
             "n_boot": config.attachment_boot, "fit_boot": config.fit_boot},
            needs=(run_key,),
        ))  # fmt: skip
        runs.append((key, {"model": model, "data": data, "method": method, "seed": seed}))
    return runs


def attachment_rows(runs: list[tuple[str, dict]],
                    records: dict) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Attachment rows (one per run, update and linear layer) and fit rows (one per run, time,
    node layer and mode)."""
    attach_rows, fit_rows = [], []
    for key, base in runs:
        attach_rows += [{**base, **r} for r in records[key]["attachment"]]
        fit_rows += [{**base, **r} for r in records[key]["fits"]]
    return attach_rows, fit_rows


def measure(folder: Path, inputs: dict, *, run: str, method: str, seed: int, pairs: int,
            n_boot: int, fit_boot: int) -> dict:  # fmt: skip
    """The task of an ``attach-`` spec: :func:`measure_run` on the needed run ``run``."""
    return measure_run(inputs[run]["checkpoint"], method, seed, pairs, n_boot, fit_boot)


def measure_run(checkpoint: str, method: str, seed: int, pairs: int, n_boot: int,
                fit_boot: int) -> dict:  # fmt: skip
    """Attachment between ``pairs`` evenly spaced consecutive mask snapshots of a SET or RigL
    run (``n_boot`` bootstrap samples), and window- and clauset-mode fits (``fit_boot``) of its
    node layers' degrees at the start, the middle and the end of training."""
    names = dynamic_snapshots(checkpoint, method)
    attachment = []
    for i in spaced(len(names) - 1, pairs):
        before = load_network(checkpoint, snapshot=names[i], keep_weights=False)
        after = load_network(checkpoint, snapshot=names[i + 1], keep_weights=False)
        result = compare_snapshots(before, after, n_boot=n_boot, seed=seed)
        for layer in result["layers"]:
            a = layer.get("attachment")
            attachment.append({
                "update": i + 1, "updates": len(names) - 1, "before": names[i],
                "after": names[i + 1], "layer": layer["layer"], "created": layer["created"],
                "kept": layer["kept_after"],
                "beta": None if a is None else a["beta"],
                "beta_low": None if a is None else a["beta_ci95"][0],
                "beta_high": None if a is None else a["beta_ci95"][1],
                "beta_cumulative": None if a is None else a["beta_cumulative"],
                "note": layer.get("attachment_error", ""),
            })  # fmt: skip
    fits = []
    times = {"start": names[0], "middle": names[len(names) // 2], "end": None}
    for when, snapshot in times.items():
        network = load_network(checkpoint, snapshot=snapshot, keep_weights=False)
        layers = network.node_layers("channel")
        for mode in ("window", "clauset"):
            fitted = fit_node_layers(network, mode=mode, n_boot=fit_boot, seed=seed)
            for layer, fit in zip(layers, fitted, strict=True):
                record = fit.to_dict()
                null = next((c for c in record["comparisons"]
                             if c["alternative"] == "random_null"), None)  # fmt: skip
                fits.append({
                    "time": when, "snapshot": snapshot or "final", "node_layer": layer.name,
                    "n_nodes": layer.size, "mode": mode, "fittable": record["fittable"],
                    "alpha": record["alpha"], "xmin": record["xmin"], "xmax": record["xmax"],
                    "p": record["p_value"],
                    "beats_null": bool(null and null["p"] < 0.05 and null["loglik_ratio"] > 0),
                    "scale_free": bool(getattr(fit, "scale_free", False)),
                    "verdict": record["verdict"],
                    "degrees": degree_histogram(layer.degrees()),
                })  # fmt: skip
    return {"attachment": attachment, "fits": fits}


ATTACHMENT_COLUMNS = ("model", "data", "method", "seed", "update", "updates", "before", "after",
                      "layer", "created", "kept", "beta", "beta_low", "beta_high",
                      "beta_cumulative", "note")  # fmt: skip
FIT_COLUMNS = ("model", "data", "method", "seed", "time", "snapshot", "node_layer", "n_nodes",
               "mode", "fittable", "alpha", "xmin", "xmax", "p", "beats_null", "scale_free",
               "verdict")  # fmt: skip


def attachment_table(rows: list[dict]) -> list[dict]:
    """Per model, method and layer: beta over updates and seeds, and how many intervals lie above
    0 (preferential) or below it."""
    out = []
    measured = [r for r in rows if r["beta"] is not None and r["created"] >= MIN_CREATED]
    for key, group in _groups(measured, ("model", "method", "layer")).items():
        out.append({**dict(zip(("model", "method", "layer"), key, strict=True)),
                    "measurements": len(group),
                    "created_per_update": round(float(np.mean([g["created"] for g in group]))),
                    "beta": mean_sd([g["beta"] for g in group]),
                    "ci_above_0": sum(g["beta_low"] > 0 for g in group),
                    "ci_below_0": sum(g["beta_high"] < 0 for g in group),
                    "beta_cumulative": mean_sd([g["beta_cumulative"] for g in group])})  # fmt: skip
    return out


def fits_table(rows: list[dict]) -> list[dict]:
    out = []
    keys = ("model", "method", "node_layer", "mode", "time")
    for key, group in _groups(rows, keys).items():
        fitted = [g for g in group if g["fittable"]]
        out.append({**dict(zip(keys, key, strict=True)), "seeds": len(group),
                    "alpha": mean_sd([g["alpha"] for g in fitted]),
                    "p_ge_0.1": sum(g["p"] is not None and g["p"] >= 0.1 for g in fitted),
                    "beats_null": sum(g["beats_null"] for g in group),
                    "scale_free": sum(g["scale_free"] for g in group)})  # fmt: skip
    return out


# ---- the study ---------------------------------------------------------------------------------


def _groups(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def table_rows(snip: list[dict], lottery: list[dict], dst: list[dict]) -> list[dict]:
    """``table.csv``: every trained configuration's error over seeds, the issue's columns first."""
    rows = []

    def add(part, model, method, group):
        errors = [g["test_error"] for g in group]
        rows.append({"model": model, "method": method, "kept_percent": group[0]["kept_percent"],
                     "seeds": len(group), "test_error_mean": round(float(np.mean(errors)), 3),
                     "test_error_std": round(float(np.std(errors)), 3), "part": part})  # fmt: skip

    for (model, method, _, epochs), group in _groups(
        snip, ("model", "method", "sparsity", "epochs")
    ).items():
        add(f"snip ({epochs} epochs)", model, method, group)
    for (r, variant), group in _groups(lottery, ("round", "variant")).items():
        add("lottery", "lenet300", f"lottery-{variant}-round{r}", group)
    for (model, data, method), group in _groups(dst, ("model", "data", "method")).items():
        add(f"dynamic sparse training ({data})", model, method, group)
    return rows


def run(config: Config, out: str | Path, *, progress: bool = False, executor=None) -> dict:
    """Every part's runs (one graph), then the tables, ``figures.json`` and ``summary.json``."""
    out = Path(out)
    start = time.perf_counter()
    origin = provenance(("topoprune", "torch", "numpy"))
    device = resolve_device(config.device)
    plan = Plan(config, device)
    snip_runs = snip_part(plan, config)
    lottery_runs = lottery_part(plan, config)
    dst_runs = dst_part(plan, config)
    init_runs = init_check_part(plan, config)
    attach_runs = attachment_part(plan, dst_runs, config)
    records = run_specs(plan.specs, out / "runs", executor, progress=progress)
    # seconds of the runs this invocation ran, per part (summed: they may have run at once)
    clock = dict.fromkeys(
        ("snip", "lottery", "dynamic_sparse_training", "init_check", "attachment_and_fits"), 0.0
    )
    for key in records.submitted:
        clock[plan.parts[key]] += records[key]["run_spec"]["task_seconds"]
    snip = snip_rows(snip_runs, records)
    lottery = lottery_rows(lottery_runs, records, config)
    dst = dst_rows(dst_runs, records)
    init = init_check_rows(init_runs, records)
    attachment, fits = attachment_rows(attach_runs, records)

    tables = {"snip": snip_table(snip), "lottery": lottery_table(lottery), "dst": dst_table(dst),
              "attachment": attachment_table(attachment), "fits": fits_table(fits)}  # fmt: skip
    (out / "table.csv").write_text(rows_to_csv(table_rows(snip, lottery, dst)))
    (out / "snip.csv").write_text(rows_to_csv(snip))
    (out / "lottery.csv").write_text(rows_to_csv(
        [{k: v for k, v in r.items() if k != "val_errors"} for r in lottery]))  # fmt: skip
    (out / "dst.csv").write_text(rows_to_csv(dst, columns_of(dst)))
    (out / "init_check.csv").write_text(rows_to_csv(init))
    (out / "attachment.csv").write_text(rows_to_csv(attachment, ATTACHMENT_COLUMNS))
    (out / "fits.csv").write_text(rows_to_csv(fits, FIT_COLUMNS))
    (out / "tables.md").write_text(
        "## SNIP's Table 1 (test error %)\n\n" + rows_to_markdown(tables["snip"])
        + "\n## Lottery tickets (LeNet-300-100)\n\n" + rows_to_markdown(tables["lottery"])
        + "\n## Dynamic sparse training\n\n" + rows_to_markdown(tables["dst"])
        + "\n## Initialisation check (one seed)\n\n" + rows_to_markdown(init)
        + "\n## Attachment between consecutive masks\n\n" + rows_to_markdown(tables["attachment"])
        + "\n## Degree distributions during training\n\n" + rows_to_markdown(tables["fits"])
    )  # fmt: skip
    (out / "figures.json").write_text(json.dumps({
        "snip": snip, "lottery": lottery, "dst": dst, "attachment": attachment,
        "fits": [r for r in fits if r["mode"] == "window"]}) + "\n")  # fmt: skip
    wall = time.perf_counter() - start
    write_study_summary(out / "summary.json", {
        "config": asdict(config), "paper_snip": {m: {str(k): v for k, v in p.items()}
                                                 for m, p in PAPER_SNIP.items()},
        "paper_lottery_remaining": PAPER_LOTTERY_REMAINING, "snip_recipe": SNIP_RECIPE,
        "lottery_recipe": LOTTERY_RECIPE, "dst_recipe": DST_RECIPE, "batch": BATCH,
        "part_seconds": {k: round(v, 1) for k, v in clock.items()}, "wall_seconds": wall,
        "device": device, "executor": describe(executor), "provenance": origin,
    })  # fmt: skip
    return {"rows": tables["snip"], "wall_seconds": wall, "submitted": records.submitted}


# ---- figures -----------------------------------------------------------------------------------


def figures(results: str | Path, out: str | Path) -> list[Path]:
    """Accuracy against sparsity (SNIP beside the paper, dynamic sparse training), the lottery
    curve, attachment exponents over training and degree distributions at start, middle, end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(results) / "figures.json"
    if not path.exists():
        raise TopopruneError(f"{path} does not exist: run `topoprune study run sparse-training`")
    data = json.loads(path.read_text())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        target = out / name
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)

    # accuracy against sparsity
    models = sorted({r["model"] for r in data["snip"]} | {r["model"] for r in data["dst"]})
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for index, (method, marker) in enumerate((("snip", "o"), *((m, "s") for m in DST_METHODS))):
            source = ([r for r in data["snip"] if r.get("schedule", "main") == "main"]
                      if method == "snip" else data["dst"])  # fmt: skip
            groups = _groups([r for r in source if r["model"] == model and r["method"] == method],
                             ("kept_percent",))  # fmt: skip
            if not groups:
                continue
            kept = sorted(groups)
            x = [100 - k[0] for k in kept]
            y = [np.mean([g["test_error"] for g in groups[k]]) for k in kept]
            sd = [np.std([g["test_error"] for g in groups[k]]) for k in kept]
            ax.errorbar(x, y, sd, marker=marker, linestyle="-" if method == "snip" else "",
                        label=method, capsize=3, color=f"C{index}")  # fmt: skip
        paper = PAPER_SNIP.get(model)
        if paper and any(r["model"] == model for r in data["snip"]):
            points = [(100 * s, e) for s, e in paper.items() if s != "dense"]
            ax.scatter(*zip(*points, strict=True), marker="*", s=120, color="black",
                       label="SNIP (paper)", zorder=5)  # fmt: skip
            ax.axhline(paper["dense"], color="black", linestyle=":", label="dense (paper)")
        dense = [r["test_error"] for r in data["snip"] if r["model"] == model
                 and r["method"] == "dense"]  # fmt: skip
        if dense:
            ax.axhline(np.mean(dense), color="grey", linestyle="--", label="dense (ours)")
        ax.set(title=model, xlabel="sparsity %", ylabel="test error %")
        ax.legend(fontsize=7)
    save(fig, "accuracy-sparsity.png")

    # the lottery curve
    if data["lottery"]:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for variant in ("ticket", "reinit", "random"):
            groups = _groups([r for r in data["lottery"] if r["variant"] == variant],
                             ("kept_percent",))  # fmt: skip
            kept = sorted(groups, reverse=True)
            if not kept:
                continue
            x = [k[0] for k in kept]
            for ax, key in zip(axes, ("test_error", "early_stop_epoch"), strict=True):
                y = [np.mean([g[key] for g in groups[k]]) for k in kept]
                sd = [np.std([g[key] for g in groups[k]]) for k in kept]
                ax.errorbar(x, y, sd, marker="o", label=variant, capsize=3)
        for ax, label in zip(axes, ("test error %", "early-stopping epoch"), strict=True):
            ax.set(xscale="log", xlabel="weights remaining %", ylabel=label,
                   title=f"LeNet-300-100: {label}")  # fmt: skip
            ax.invert_xaxis()
            ax.legend(fontsize=7)
        save(fig, "lottery.png")

    # attachment exponents over training
    if data["attachment"]:
        cases = sorted({(r["model"], r["method"]) for r in data["attachment"]})
        fig, axes = plt.subplots(1, len(cases), figsize=(4.5 * len(cases), 4), squeeze=False)
        for ax, (model, method) in zip(axes[0], cases, strict=True):
            rows = [r for r in data["attachment"] if r["model"] == model
                    and r["method"] == method and r["beta"] is not None
                    and r["created"] >= MIN_CREATED]  # fmt: skip
            layers = sorted({r["layer"] for r in rows})
            for i, layer in enumerate(layers):
                mine = [r for r in rows if r["layer"] == layer]
                x = [r["update"] / r["updates"] for r in mine]
                y = [r["beta"] for r in mine]
                low = [r["beta"] - r["beta_low"] for r in mine]
                high = [r["beta_high"] - r["beta"] for r in mine]
                ax.errorbar(x, y, [low, high], fmt="o", color=f"C{i}", alpha=0.6,
                            label=f"layer {layer}", capsize=2)  # fmt: skip
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set(title=f"{model}: {method}", xlabel="update / updates",
                   ylabel="attachment exponent beta")  # fmt: skip
            ax.legend(fontsize=7)
        save(fig, "attachment.png")

    # degree distributions of the hidden node layers at start, middle and end (seed 0)
    if data["fits"]:
        cases = sorted({(r["model"], r["method"]) for r in data["fits"]})
        for model, method in cases:
            rows = [r for r in data["fits"] if r["model"] == model and r["method"] == method
                    and r["seed"] == min(g["seed"] for g in data["fits"])]  # fmt: skip
            layers = list(dict.fromkeys(r["node_layer"] for r in rows))
            fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.8),
                                     squeeze=False)  # fmt: skip
            for ax, layer in zip(axes[0], layers, strict=True):
                for when in ("start", "middle", "end"):
                    hit = [r for r in rows if r["node_layer"] == layer and r["time"] == when]
                    if not hit:
                        continue
                    k = np.array(hit[0]["degrees"]["k"])
                    counts = np.array(hit[0]["degrees"]["count"])
                    ccdf = 1 - np.concatenate([[0], np.cumsum(counts)[:-1]]) / counts.sum()
                    keep = k > 0
                    ax.loglog(k[keep], ccdf[keep], marker=".", label=when)  # verdicts: fits.csv
                ax.set(title=f"{layer}", xlabel="degree", ylabel="P(D >= d)")
                ax.legend(fontsize=6)
            fig.suptitle(f"{model}, {method}: degrees during training (first seed)")
            save(fig, f"degrees-{model}-{method}.png")
    return written
