"""Study: structured pruning that makes models smaller and faster, measured.

    topoprune study run structured [--quick]
    topoprune figures --study structured

Per (model, data set, seed): a dense model, then every structured method started from it
(``--init``, no dense epochs of its own): ``filter-l1`` (Li et al. 2017), ``taylor-fm``
(Molchanov et al. 2017), ``channel-lasso`` (He et al. 2017), ``ssl`` (Wen et al. 2016) and, on
the model with BatchNorm, ``slimming`` (Liu et al. 2017); and an unstructured ``magnitude``
model with filter-l1's parameter count in every layer. Three seeds on LeNet-5 and MNIST (the
target's), one on the other pairs. Each result is compacted (its zeroed channels removed: a
smaller dense model; its largest output difference from the masked model is
``max_abs_difference``) and measured: parameters, multiply-accumulates, bytes, and CPU latency
at batch 1 and 128 against the dense model in the same rounds (``speed.csv``; the unstructured
model also through CSR products). The channel-view topology of every result is in
``topology.csv``. One seed of the other structures: ``iss-lstm`` on the row-by-row LSTM at
several penalties, ``epsilon-resnet`` on the residual CNN at several epsilons, ``layer-fold``
on LeNet-300-100 with PReLU (``others.csv``).

Schedules are short (the budget is 2 hours on 2 CPU cores for everything); the dense error they
reach is the reference for "within 0.1 points". Every training is a run spec keyed
``<model>-<dataset>-<method>-seed<k>`` (``lstm_mnist-mnist-iss-lstm-0.06-seed0`` for a setting of
the other structures; folder ``runs/<key>-<hash>/``), started from its dense model's run where it
has one; a finished run is never rerun, so the study resumes, and the runs can go to local
processes or a Ray cluster (docs/running.md). Compaction, timing and the channel graphs are done
in the driver once every run is done; ``summary.json``'s ``run_folders`` maps each key to its
folder.
"""

from __future__ import annotations

import io
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from topoprune.errors import TopopruneError
from topoprune.io import load_network
from topoprune.models import MODELS, build_model
from topoprune.models.cost import (
    csr_model,
    interleaved_latency,
    multiply_accumulates,
    parameter_count,
    speedups,
)
from topoprune.provenance import provenance
from topoprune.prune.allocation import per_layer
from topoprune.prune.masks import weight_modules
from topoprune.prune.methods import METHODS
from topoprune.runner import RunSpec, run_specs
from topoprune.topology import network_from_module
from topoprune.train.compaction import compacted_model
from topoprune.train.engine import resolve_device

from ._runs import TRAIN_TASK, config_settings, describe
from ._summary import write_study_summary
from ._tables import columns_of, rows_to_csv, rows_to_markdown
from .deep_compression import csr_bytes as weight_csr_bytes

# reference points as later work reports them (LeNet-5 on MNIST, filters per layer, error
# increase in points, speedup): Wen et al. 2016 (SSL) and Molchanov et al. 2017 (Taylor)
PAPER = {
    ("lenet5", "ssl"): {"filters": "3-15-175", "error_delta": 0.05, "speedup": 3.62},
    ("lenet5", "taylor-fm"): {"filters": "2-12-127", "error_delta": 0.02, "speedup": 4.62},
}
STRUCTURED = ("filter-l1", "taylor-fm", "channel-lasso", "ssl", "slimming")
DENSE = {"epochs": 4, "lr": 0.05, "schedule": "cosine"}
# every method's settings, started from the dense model: lr 0.02, cosine within each stage
COMMON = {"lr": 0.02, "schedule": "cosine"}
RECIPES = {
    "filter-l1": {"dense_epochs": 0, "sparsity": (0.75, 0.7, 0.6), "retrain_epochs": 2,
                  "retrain_lr_factor": 1.0},
    "taylor-fm": {"dense_epochs": 0, "epochs": 2, "maps_per_removal": 2, "budget": 0.25},
    "channel-lasso": {"sparsity": (0.7,), "finetune_epochs": 2, "finetune_lr_factor": 1.0},
    "ssl": {"epochs": 2, "penalty": 0.003, "finetune_epochs": 1, "finetune_lr_factor": 1.0},
    "slimming": {"epochs": 2, "penalty": 1e-4, "percent": 0.5, "finetune_epochs": 1,
                 "finetune_lr_factor": 1.0},
    "magnitude": {"dense_epochs": 0, "iterations": 1, "retrain_epochs": 2,
                  "retrain_lr_factor": 1.0},
    # the control: the dense model trained as many more epochs as the methods fine-tune
    "dense-continued": {"epochs": 2},
}  # fmt: skip


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = ("lenet5", "cnn_mnist_bn")
    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
    seeds: tuple[int, ...] = (0, 1, 2)  # the first model on the first data set (the target's)
    # every other (model, data set): one seed keeps the study within 2 hours on 2 cores
    other_seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = STRUCTURED
    epoch_scale: float = 1.0  # multiplies every epoch count (quick mode); at least 1 epoch
    train_subset: int = 0  # 0: every training image
    prune_every: int = 10  # taylor-fm's steps between removals
    # the models made for the other structures, one seed: the row-by-row LSTM (iss-lstm at each
    # penalty, error against hidden units kept), the residual CNN (epsilon-resnet at each epsilon)
    # and LeNet-300-100 with PReLU (layer-fold)
    others: bool = True
    other_seed: int = 0
    lstm_penalties: tuple[float, ...] = (0.02, 0.06, 0.12)
    epsilons: tuple[float, ...] = (3.0, 5.0, 7.0)
    fold_penalties: tuple[float, ...] = (0.01, 0.1, 1.0)
    latency_rounds: int = 5
    latency_repeats: int = 10
    device: str = "auto"


QUICK = Config(models=("lenet5_bn",), datasets=("mnist",), seeds=(0,), epoch_scale=0.01,
               train_subset=1000, prune_every=2, latency_rounds=2, latency_repeats=2,
               lstm_penalties=(0.06,), epsilons=(5.0,), fold_penalties=(1.0,))  # fmt: skip


def _scaled(recipe: dict, scale: float) -> dict:
    return {k: (max(1, round(v * scale)) if k.endswith("epochs") and v else v)
            for k, v in recipe.items()}  # fmt: skip


def _layers(model: str) -> list[str]:
    return [name for name, _ in weight_modules(build_model(model))]


def kept_widths(model: str, sparsity: tuple[float, ...]) -> list[int]:
    """Filters filter-l1 keeps in each pruned layer (every layer but the output layer)."""
    modules = dict(weight_modules(build_model(model)))
    names = list(modules)[:-1]
    return [round((1 - s) * modules[n].weight.shape[0])
            for n, s in per_layer(sparsity, names, "sparsity").items()]  # fmt: skip


def matched_sparsity(model: str, widths: list[int]) -> tuple[float, ...]:
    """Per weight layer, the sparsity that leaves as many weights as the layer keeps once the
    filters ``widths`` (and the channels they feed) are removed: unstructured pruning at
    filter-l1's parameter count, layer by layer."""
    modules = [m for _, m in weight_modules(build_model(model))]
    out = []
    previous = None  # kept output channels of the previous layer
    for index, module in enumerate(modules):
        weight = module.weight
        rows = widths[index] if index < len(widths) else weight.shape[0]
        inputs = weight.shape[1]
        if previous is not None:
            inputs = inputs * previous[1] // previous[0]  # flattened inputs shrink alike
        kept = rows * inputs * weight[0, 0].numel()
        out.append(1 - kept / weight.numel())
        previous = (weight.shape[0], rows)
    return tuple(out)


def run_key(model: str, dataset: str, method: str, seed: int) -> str:
    """The run spec's key: ``lenet5-mnist-filter-l1-seed0`` (``method`` names the study's
    variant: ``dense-continued``, ``iss-lstm-0.06``)."""
    return f"{model}-{dataset}-{method}-seed{seed}"


def _spec(config: Config, device: str, model: str, dataset: str, name: str, seed: int,
          method: str, cfg, init: str | None = None, batch_size: int = 128) -> RunSpec:  # fmt: skip
    """The spec of the study's run ``name`` (key :func:`run_key`), ``method`` training it."""
    return RunSpec(run_key(model, dataset, name, seed), TRAIN_TASK, {
        "model": model, "dataset": dataset, "method": method, "seed": seed, "device": device,
        "config": config_settings(cfg), "init": init, "train_subset": config.train_subset,
        "batch_size": batch_size,
    }, needs=() if init is None else (init,))  # fmt: skip


def method_config(config: Config, model: str, method: str):
    """The config of a main-part run: ``dense``, a method of ``RECIPES``, ``dense-continued``
    (the registered ``dense`` method, started from the dense model)."""
    scale = config.epoch_scale
    if method == "dense":
        return METHODS["dense"].Config(**_scaled(DENSE, scale))
    recipe = _scaled(RECIPES[method], scale)
    if method == "dense-continued":
        return METHODS["dense"].Config(**COMMON, **recipe)
    if method == "magnitude":
        widths = kept_widths(model, RECIPES["filter-l1"]["sparsity"])
        recipe["sparsity"] = matched_sparsity(model, widths)
        return METHODS[method].Config(**COMMON, **recipe)
    if method == "filter-l1":
        recipe["dense_layers"] = (_layers(model)[-1],)
    if method == "taylor-fm":
        recipe["prune_every"] = config.prune_every
    return METHODS[method].Config(**COMMON, **recipe)


def methods_for(config: Config, model: str) -> list[str]:
    """The runs started from each dense model: the structured methods (slimming only on a model
    with BatchNorm), the unstructured model and the control."""
    has_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                   for m in build_model(model).modules())  # fmt: skip
    chosen = [m for m in config.methods if m != "slimming" or has_norm]
    return [*chosen, "magnitude", "dense-continued"]


def _combos(config: Config) -> list[tuple[str, str, int]]:
    """(model, data set, seed): every seed on the first pair, ``other_seeds`` on the others."""
    pairs = [(m, d) for m in config.models for d in config.datasets]
    return [(m, d, s) for i, (m, d) in enumerate(pairs)
            for s in (config.seeds if i == 0 else config.other_seeds)]  # fmt: skip


def training_specs(config: Config, device: str) -> list[RunSpec]:
    """Every dense model, then every method started from its (model, data set, seed)'s."""
    specs = [_spec(config, device, model, dataset, "dense", seed, "dense",
                   method_config(config, model, "dense"))
             for model, dataset, seed in _combos(config)]  # fmt: skip
    for model, dataset, seed in _combos(config):
        dense = run_key(model, dataset, "dense", seed)
        for method in methods_for(config, model):
            registered = "dense" if method == "dense-continued" else method
            specs.append(_spec(config, device, model, dataset, method, seed, registered,
                               method_config(config, model, method), init=dense))  # fmt: skip
    return specs


def training_part(config: Config, records: dict) -> list[dict]:
    """One row per (model, dataset, method, seed), in :func:`training_specs`' order."""
    rows = [_run_row(model, dataset, "dense", seed,
                     records[run_key(model, dataset, "dense", seed)])
            for model, dataset, seed in _combos(config)]  # fmt: skip
    for model, dataset, seed in _combos(config):
        for method in methods_for(config, model):
            rows.append(_run_row(model, dataset, method, seed,
                                 records[run_key(model, dataset, method, seed)]))  # fmt: skip
    return rows


# the other models' recipes: SGD at lr 0.3 moves the LSTM (lr 0.01 leaves its loss at 2.30 for
# hundreds of steps), batches of 256
LSTM = {
    "dense": {"epochs": 2, "lr": 0.3},
    "iss": {"epochs": 1, "finetune_epochs": 1, "lr": 0.3},
    "batch_size": 256,
}
FOLD = {"epochs": 3, "finetune_epochs": 1, "lr": 0.05}
# the residual CNN learns slowly at lr 0.01 (11-21% error after 200 steps, 4.5% at lr 0.1)
RESIDUAL = {
    "dense": {"epochs": 2, "lr": 0.1},
    "epsilon": {"plain_epochs": 0, "epochs": 1, "finetune_epochs": 1, "lr": 0.1},
}


def other_specs(config: Config, device: str) -> list[RunSpec]:
    """One seed each, on MNIST: a dense LSTM, its control trained 2 epochs more (as long as the
    methods) and iss-lstm at every penalty from it; the same for the residual CNN and
    epsilon-resnet at every epsilon; layer-fold on LeNet-300-100 with PReLU at every penalty."""
    if not config.others:
        return []
    seed, scale, specs = config.other_seed, config.epoch_scale, []

    def spec(model, name, method, cfg, init=None, batch_size=128) -> RunSpec:
        return _spec(config, device, model, "mnist", name, seed, method, cfg,
                     None if init is None else run_key(model, "mnist", init, seed),
                     batch_size)  # fmt: skip

    def dense_and_control(model: str, recipe: dict, lr: float, batch_size: int) -> None:
        more = {"epochs": 2, "lr": lr}
        specs.extend([
            spec(model, "dense", "dense", METHODS["dense"].Config(**_scaled(recipe, scale)),
                 batch_size=batch_size),
            spec(model, "dense-continued", "dense",
                 METHODS["dense"].Config(**_scaled(more, scale)), "dense", batch_size),
        ])  # fmt: skip

    dense_and_control("lstm_mnist", LSTM["dense"], LSTM["iss"]["lr"], LSTM["batch_size"])
    for penalty in config.lstm_penalties:
        cfg = METHODS["iss-lstm"].Config(penalty=penalty, **_scaled(LSTM["iss"], scale))
        specs.append(spec("lstm_mnist", f"iss-lstm-{penalty:g}", "iss-lstm", cfg, "dense",
                          LSTM["batch_size"]))  # fmt: skip
    dense_and_control("resnet_mnist", RESIDUAL["dense"], RESIDUAL["epsilon"]["lr"], 128)
    for epsilon in config.epsilons:
        cfg = METHODS["epsilon-resnet"].Config(epsilon=epsilon,
                                               **_scaled(RESIDUAL["epsilon"], scale))  # fmt: skip
        specs.append(spec("resnet_mnist", f"epsilon-resnet-{epsilon:g}", "epsilon-resnet", cfg,
                          "dense"))  # fmt: skip
    for penalty in config.fold_penalties:
        cfg = METHODS["layer-fold"].Config(penalty=penalty, **_scaled(FOLD, scale))
        specs.append(spec("lenet300_prelu", f"layer-fold-{penalty:g}", "layer-fold", cfg))
    return specs


def others_part(config: Config, records: dict) -> list[dict]:
    """The rows of ``others.csv`` from :func:`other_specs`' records."""
    if not config.others:
        return []
    seed, rows = config.other_seed, []

    def record(model: str, name: str) -> dict:
        return records[run_key(model, "mnist", name, seed)]

    def dense_and_control(model: str, units: int) -> None:
        for name, setting in (("dense", "-"), ("dense-continued", "+2 epochs")):
            rows.append({"model": model, "method": name, "setting": setting,
                         "test_error": 100 * record(model, name)["test_error"], "kept": units,
                         "of": units})  # fmt: skip

    dense_and_control("lstm_mnist", build_model("lstm_mnist").hidden_size)
    for penalty in config.lstm_penalties:
        summary = record("lstm_mnist", f"iss-lstm-{penalty:g}")
        report = summary["report"]
        rows.append({"model": "lstm_mnist", "method": "iss-lstm", "setting": f"penalty {penalty:g}",
                     "test_error": 100 * summary["test_error"],
                     "kept": report["hidden_units_kept"], "of": report["hidden_units"],
                     "params": report["params"], "params_compact": report["params_compact"],
                     "max_abs_difference": report["max_abs_difference"]})  # fmt: skip
    dense_and_control("resnet_mnist", len(build_model("resnet_mnist").blocks))
    for epsilon in config.epsilons:
        summary = record("resnet_mnist", f"epsilon-resnet-{epsilon:g}")
        report = summary["report"]
        rows.append({"model": "resnet_mnist", "method": "epsilon-resnet",
                     "setting": f"epsilon {epsilon:g}", "test_error": 100 * summary["test_error"],
                     "kept": report["blocks"] - len(report["blocks_dropped"]),
                     "of": report["blocks"], "params": report["params"],
                     "params_compact": report["params_compact"],
                     "max_abs_difference": report.get("max_abs_difference")})  # fmt: skip
    for penalty in config.fold_penalties:
        folded = record("lenet300_prelu", f"layer-fold-{penalty:g}")
        report = folded["report"]
        rows.append({"model": "lenet300_prelu", "method": "layer-fold",
                     "setting": f"penalty {penalty:g}", "test_error": 100 * folded["test_error"],
                     "kept": report.get("weight_layers_folded"), "of": report.get("weight_layers"),
                     "params": report.get("params"), "params_compact": report.get("params_folded"),
                     "max_abs_difference": report.get("max_abs_difference")})  # fmt: skip
    return rows


def _run_row(model: str, dataset: str, method: str, seed: int, summary: dict) -> dict:
    return {"model": model, "dataset": dataset, "method": method, "seed": seed,
            "test_error": 100 * summary["test_error"],
            "dense_error": 100 * (summary["test_error"] if summary.get("init_test_error") is None
                                  else summary["init_test_error"]),
            "compression": summary.get("compression"),
            "checkpoint": summary["checkpoint"],
            "seconds": summary.get("wall_seconds_this_run")}  # fmt: skip


def _widths(model: torch.nn.Module) -> str:
    """Output widths of the weight layers but the last, as "20-50-500"."""
    layers = [m for _, m in weight_modules(model)][:-1]
    return "-".join(str(m.weight.shape[0]) for m in layers)


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what a dense checkpoint of it takes (with
    the file's own few kilobytes of zip and pickle framing)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def csr_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weight layers in CSR (float32 values, int32 column indices and row
    pointers, a convolution as its C_out x (C_in k k) matrix) and every other parameter and
    buffer dense: the unstructured model stored sparse."""
    weights = {id(m.weight) for _, m in weight_modules(model)}
    others = [t for t in [*model.parameters(), *model.buffers()] if id(t) not in weights]
    return (weight_csr_bytes(network_from_module(model, keep_weights=False))
            + sum(t.numel() * t.element_size() for t in others))  # fmt: skip


def speed_part(runs: list[dict], rounds: int = 5, repeats: int = 10) -> list[dict]:
    """Per (model, dataset, seed): the dense model, every compacted result and the unstructured
    model (dense and through CSR products) timed in interleaved rounds at batch 1 and 128 (the
    rows of ``runs`` need ``model, dataset, method, seed, checkpoint``; one is ``dense``)."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for row in [r for r in runs if r["method"] != "dense-continued"]:  # the dense model's shape
        groups.setdefault((row["model"], row["dataset"], row["seed"]), []).append(row)
    generator = torch.Generator().manual_seed(0)  # the same random batches in every run
    for (model, dataset, seed), rows in groups.items():
        candidates, facts = {}, {}
        for row in rows:
            _, plain, small, example = compacted_model(row["checkpoint"])
            with torch.no_grad():
                difference = float((small(example) - plain(example)).abs().max())
            name = row["method"]
            candidates[name] = small
            facts[name] = {"params": parameter_count(small), "widths": _widths(small),
                           "flops": multiply_accumulates(small, example[:1]),
                           "file_bytes": state_bytes(small),
                           "max_abs_difference": difference}  # fmt: skip
            if name == "magnitude":
                candidates["magnitude (CSR)"] = csr_model(plain)
                nonzero = sum(int(m.weight.count_nonzero()) for _, m in weight_modules(plain))
                weights = sum(m.weight.numel() for _, m in weight_modules(plain))
                # the non-zero weights and every other parameter (biases, BatchNorm)
                facts["magnitude"]["params_nonzero"] = parameter_count(plain) - weights + nonzero
                facts["magnitude (CSR)"] = {**facts["magnitude"],
                                            "file_bytes": csr_bytes(plain)}  # fmt: skip
        for batch_size in (1, 128):
            batch = torch.rand(batch_size, *MODELS[model].input_shape, generator=generator)
            times = interleaved_latency(candidates, batch, rounds=rounds, repeats=repeats)
            ratio = speedups(times, "dense")
            for name in candidates:
                facts[name][f"latency_b{batch_size}_ms"] = 1e3 * statistics.median(times[name])
                facts[name][f"speedup_b{batch_size}"] = ratio[name]
        dense_flops = facts["dense"]["flops"]
        for name, fact in facts.items():
            out.append({"model": model, "dataset": dataset, "seed": seed, "method": name,
                        **fact, "flops_ratio": dense_flops / fact["flops"]})  # fmt: skip
    return out


def topology_part(runs: list[dict]) -> list[dict]:
    """Per pruned result and weight layer, its channel graph (``channel-simple``: an edge per
    connected pair of channels or units): outputs alive, the in-degree spread among them, and
    the connections on an input-to-output path. A structured result keeps whole channels, so
    few outputs stay alive, each fully connected; an unstructured one keeps almost every
    channel, with uneven degrees."""
    from topoprune.topology.connectivity import effective_connectivity

    out = []
    for row in runs:
        if row["method"] in ("dense", "dense-continued"):
            continue
        network = load_network(row["checkpoint"])
        view = "channel-simple"
        connectivity = effective_connectivity(network, view) or {}
        effective = {r["layer"]: r for r in connectivity.get("layers", [])}
        for layer, (fan_out, fan_in) in zip(network.layers, network.layer_degrees(view),
                                            strict=True):  # fmt: skip
            alive = fan_in[fan_in > 0]
            edges = int(fan_in.sum())
            path = effective.get(layer.name, {}).get("effective_nnz")
            out.append({"model": row["model"], "dataset": row["dataset"], "seed": row["seed"],
                        "method": row["method"], "layer": layer.name,
                        "outputs": int(fan_in.size), "outputs_alive": int(alive.size),
                        "inputs": int(fan_out.size),
                        "inputs_read": int(np.count_nonzero(fan_out)),
                        "edges": edges, "channel_density": edges / (fan_in.size * fan_out.size),
                        "fan_in_min": int(alive.min()) if alive.size else 0,
                        "fan_in_mean": float(alive.mean()) if alive.size else 0.0,
                        "fan_in_max": int(alive.max()) if alive.size else 0,
                        "weights": layer.nnz,
                        "weights_on_paths": path})  # fmt: skip
    return out


def _select(rows: list[dict], model: str, dataset: str, method: str) -> list[dict]:
    return [r for r in rows if (r["model"], r["dataset"], r["method"]) == (model, dataset, method)]


def _trained(method: str) -> str:
    """The run behind a speed row (the CSR timing is of the magnitude run)."""
    return method.removesuffix(" (CSR)")


def main_table(runs: list[dict], speed: list[dict]) -> list[dict]:
    """``table.csv``: per (model, dataset, method), mean over seeds."""
    out = []
    keys = list(dict.fromkeys((r["model"], r["dataset"], r["method"]) for r in speed))
    for model, dataset, method in keys:
        fast = _select(speed, model, dataset, method)
        errors = [r["test_error"] for r in _select(runs, model, dataset, _trained(method))]
        dense = [r["test_error"] for r in _select(runs, model, dataset, "dense")]
        continued = [r["test_error"] for r in _select(runs, model, dataset, "dense-continued")]
        paper = PAPER.get((model, method), {}) if dataset == "mnist" else {}
        widths = [r["widths"] for r in fast]
        out.append({
            "model": model, "dataset": dataset, "method": method, "seeds": len(fast),
            "filters": widths[0] if len(set(widths)) == 1 else " / ".join(widths),
            "params": float(np.mean([r["params"] for r in fast])),
            "params_nonzero": (float(np.mean([r["params_nonzero"] for r in fast]))
                               if "params_nonzero" in fast[0] else None),
            "flops": float(np.mean([r["flops"] for r in fast])),
            "flops_ratio": float(np.mean([r["flops_ratio"] for r in fast])),
            "speedup_b1": float(np.mean([r["speedup_b1"] for r in fast])),
            "speedup_b128": float(np.mean([r["speedup_b128"] for r in fast])),
            "speedup_b128_std": float(np.std([r["speedup_b128"] for r in fast])),
            "test_error_mean": float(np.mean(errors)), "test_error_std": float(np.std(errors)),
            "dense_error_mean": float(np.mean(dense)),
            "error_delta": float(np.mean(errors) - np.mean(dense)),
            "dense_continued_error_mean": float(np.mean(continued)) if continued else None,
            "error_delta_continued": (float(np.mean(errors) - np.mean(continued))
                                      if continued else None),
            "max_abs_difference": max(r["max_abs_difference"] for r in fast),
            "paper_filters": paper.get("filters"), "paper_error_delta": paper.get("error_delta"),
            "paper_speedup": paper.get("speedup"),
        })  # fmt: skip
    return out


def targets(table: list[dict]) -> list[dict]:
    """The issue's target on LeNet-5: at least 3x measured speedup at batch 128 within 0.1
    points of the dense error, per data set and method."""
    rows = [r for r in table if r["model"].startswith("lenet5") and r["method"] in STRUCTURED]
    return [{"model": r["model"], "dataset": r["dataset"], "method": r["method"],
             "speedup_b128": round(r["speedup_b128"], 2),
             "error_delta": round(r["error_delta"], 3),
             "met": bool(r["speedup_b128"] >= 3 and r["error_delta"] <= 0.1)}
            for r in rows]  # fmt: skip


def run(config: Config, out: str | Path, *, progress: bool = False, executor=None) -> dict:
    """Every training run (the main part's and the other structures'), then compaction, timing
    and channel graphs in the driver; writes the tables, ``figures.json`` and ``summary.json``
    into ``out``."""
    out = Path(out)
    start = time.perf_counter()
    origin = provenance(("topoprune", "torch", "numpy"))
    device = resolve_device(config.device)
    clock, tic = {}, time.perf_counter()
    specs = training_specs(config, device) + other_specs(config, device)
    records = run_specs(specs, out / "runs", executor, progress=progress)
    runs = training_part(config, records)
    others = others_part(config, records)
    clock["training"], tic = time.perf_counter() - tic, time.perf_counter()
    speed = speed_part(runs, config.latency_rounds, config.latency_repeats)
    clock["speed"], tic = time.perf_counter() - tic, time.perf_counter()
    topology = topology_part(runs)
    clock["topology"] = time.perf_counter() - tic

    table = main_table(runs, speed)
    goals = targets(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.csv").write_text(rows_to_csv(table))
    runs_public = [{k: v for k, v in r.items() if k != "checkpoint"} for r in runs]
    (out / "runs.csv").write_text(rows_to_csv(runs_public))
    (out / "speed.csv").write_text(rows_to_csv(speed, columns_of(speed)))
    (out / "topology.csv").write_text(rows_to_csv(topology))
    (out / "others.csv").write_text(rows_to_csv(others, columns_of(others)))
    (out / "tables.md").write_text(
        "## Structured results (mean over seeds)\n\n" + rows_to_markdown(_rounded(table))
        + "\n## Target: >= 3x at batch 128 within 0.1 points (LeNet-5)\n\n"
        + rows_to_markdown(goals)
        + "\n## Other structures (one seed)\n\n" + rows_to_markdown(_rounded(others))
    )  # fmt: skip
    figures_data = {"table": table, "runs": runs_public, "topology": topology, "others": others}
    (out / "figures.json").write_text(json.dumps(figures_data) + "\n")
    wall = time.perf_counter() - start
    write_study_summary(out / "summary.json", {
        "config": asdict(config), "paper": {f"{m}/{k}": v for (m, k), v in PAPER.items()},
        "dense": DENSE, "common": COMMON, "recipes": RECIPES, "lstm": LSTM, "fold": FOLD,
        "residual": RESIDUAL,
        "targets": goals,
        "part_seconds": {k: round(v, 1) for k, v in clock.items()},
        "wall_seconds": wall, "device": device, "executor": describe(executor),
        "run_folders": {s.key: f"runs/{records.folders[s.key].name}" for s in specs},
        "provenance": origin,
    })  # fmt: skip
    return {"rows": table, "wall_seconds": wall, "submitted": records.submitted}


def _rounded(rows: list[dict]) -> list[dict]:
    def tidy(value):
        if not isinstance(value, float) or not math.isfinite(value):
            return value
        return round(value, 3) if abs(value) < 1000 else round(value)

    return [{k: tidy(v) for k, v in r.items()} for r in rows]


# ---- figures -----------------------------------------------------------------------------------


def figures(results: str | Path, out: str | Path) -> list[Path]:
    """Test error against measured speedup at batch 128, one panel per (model, data set); test
    error against the LSTM's hidden units and the residual CNN's blocks kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(results) / "figures.json"
    if not path.exists():
        raise TopopruneError(f"{path} does not exist: run `topoprune study run structured`")
    table = json.loads(path.read_text())["table"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    panels = list(dict.fromkeys((r["model"], r["dataset"]) for r in table))
    methods = list(dict.fromkeys(r["method"] for r in table))  # one colour per method
    columns = min(2, len(panels))
    fig, axes = plt.subplots(math.ceil(len(panels) / columns), columns,
                             figsize=(5.5 * columns, 4 * math.ceil(len(panels) / columns)),
                             squeeze=False)  # fmt: skip
    for ax, (model, dataset) in zip(axes.flat, panels):
        rows = [r for r in table if (r["model"], r["dataset"]) == (model, dataset)]
        for row in rows:
            ax.errorbar(row["speedup_b128"], row["test_error_mean"], row["test_error_std"],
                        xerr=row["speedup_b128_std"], marker="o", capsize=3, linestyle="none",
                        color=f"C{methods.index(row['method'])}",
                        label=row["method"])  # fmt: skip
        ax.set(title=f"{model}, {dataset}", xlabel="measured CPU speedup, batch 128",
               ylabel="test error %")  # fmt: skip
        ax.set_xscale("log")
        ax.legend(fontsize=7)
    return [
        _save(fig, out / "error-speedup.png", plt),
        *_others_figure(json.loads(path.read_text()).get("others", []), out, plt),
    ]


def _others_figure(rows: list[dict], out: Path, plt) -> list[Path]:
    """Test error against the structures kept: LSTM hidden units, residual blocks."""
    panels = [("lstm_mnist", "iss-lstm", "hidden units kept"),
              ("resnet_mnist", "epsilon-resnet", "residual blocks kept")]  # fmt: skip
    panels = [p for p in panels if any(r["method"] == p[1] for r in rows)]
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (model, method, label) in zip(axes[0], panels, strict=True):
        pruned = [r for r in rows if r["model"] == model and r["method"] == method]
        ax.plot([r["kept"] for r in pruned], [r["test_error"] for r in pruned], "o-",
                label=method)  # fmt: skip
        for row, text in ((r, r["setting"]) for r in pruned):
            ax.annotate(text, (row["kept"], row["test_error"]), fontsize=7)
        for index, name in enumerate(("dense", "dense-continued")):
            dense = [r for r in rows if r["model"] == model and r["method"] == name]
            if dense:
                ax.axhline(dense[0]["test_error"], color=f"C{index + 1}", linestyle="--",
                           label=name)  # fmt: skip
        ax.set(title=model, xlabel=label, ylabel="test error %")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    return [_save(fig, out / "error-kept.png", plt)]


def _save(fig, target: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
