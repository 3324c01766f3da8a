"""Study: Deep Compression (Han et al. 2016) on LeNet-300-100 and LeNet-5, reproduced.

    topoprune study run deep-compression [--quick]
    topoprune figures --study deep-compression

Each seed's dense model and its magnitude-pruned model are the pruning-table study's runs (same
settings, trained here). Then trained quantisation (``topoprune prune --method
trained-quantization`` at the paper's bits: 6 for every LeNet-300-100 layer, 8 for LeNet-5's
convolutions and 5 for its linear layers), ``topoprune compress`` with 5-bit relative indices and
Huffman coding, and every error is measured on the model decoded from the compressed file.

Parts: the paper's Tables 1-3 (``table.csv``, ``layers.csv``); test error against weight bits
(2-8, every layer) with and without centroid training (``bits.csv``); the memory footprint of a
99%-sparse LeNet-300-100 in dense, CSR and this format, beside a small dense MLP
(``footprint.csv``); the structured study compares structured and unstructured footprints.

Every training run and every compressed file (k-means, Huffman coding, then decoding and testing
it) is a run spec in ``runs/<key>-<hash>/``: a finished one is never rerun, so an interrupted
study resumes where it stopped, and the runs can go to local processes or a Ray cluster
(docs/running.md). The keys, each ending in ``-seed<k>``:

- ``<model>-dense``, then ``<model>-magnitude`` (needs it): the pruning table's runs;
- ``<model>-magnitude-quantized-<bits>-e<epochs>`` (trained quantisation at ``<bits>``, e.g.
  ``conv8-fc6``; needs the magnitude run), then its file, the same key with ``-compressed``;
- the sweep's k-means-only files of the magnitude run,
  ``<model>-magnitude-kmeans-<bits>-compressed`` (needing it);
- the footprint's ``lenet300-magnitude99`` (needs the dense run), its trained quantisation and
  file (``lenet300-magnitude99-quantized-...``), and ``mlp40-dense``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from topoprune.compress.api import compress_checkpoint, decompressed_state_dict
from topoprune.data import ImageDataset, load_dataset
from topoprune.errors import TopopruneError
from topoprune.io import load_network
from topoprune.models import build_model
from topoprune.provenance import provenance
from topoprune.prune.methods import METHODS
from topoprune.runner import RunSpec, run_specs
from topoprune.train.engine import resolve_device
from topoprune.train.optim import error_rate

from . import pruning_table
from ._runs import TRAIN_TASK, config_settings, describe
from ._summary import write_study_summary
from ._tables import columns_of, mean_sd, rows_to_csv, rows_to_markdown

# Han et al. 2016, Tables 1-3: error %, compression ratio after P+Q and P+Q+H, and per layer
# (weights % kept, weight bits P+Q / P+Q+H, index bits P+Q / P+Q+H, rate % P+Q / P+Q+H).
PAPER = {
    "lenet300": {"dense_error": 1.64, "error": 1.58, "ratio_pq": 32, "ratio_pqh": 40, "layers": [
        ("ip1", 8, 6, 4.4, 5, 3.7, 3.1, 2.32), ("ip2", 9, 6, 4.4, 5, 4.3, 3.8, 3.04),
        ("ip3", 26, 6, 4.3, 5, 3.2, 15.7, 12.70), ("total", 8, 6, 5.1, 5, 3.7, 3.1, 2.49)]},
    "lenet5": {"dense_error": 0.80, "error": 0.74, "ratio_pq": 33, "ratio_pqh": 39, "layers": [
        ("conv1", 66, 8, 7.2, 5, 1.5, 78.5, 67.45), ("conv2", 12, 8, 7.2, 5, 3.9, 6.0, 5.28),
        ("ip1", 8, 5, 4.5, 5, 4.5, 2.7, 2.45), ("ip2", 19, 5, 5.2, 5, 3.7, 6.9, 6.13),
        ("total", 8, 5.3, 4.1, 5, 4.4, 3.05, 2.55)]},
}  # fmt: skip
PAPER_COLUMNS = ("kept_percent", "weight_bits", "weight_bits_huffman", "index_bits",
                 "index_bits_huffman", "rate_quantised_percent",
                 "rate_huffman_percent")  # fmt: skip
BITS = {"lenet300": {"fc_bits": 6, "conv_bits": 8}, "lenet5": {"fc_bits": 5, "conv_bits": 8}}
# centroid fine-tuning: SGD with momentum 0.9, summed gradients (eq. 3), no weight decay; the
# learning rate was chosen among 1e-5, 1e-4, 1e-3 on LeNet-300-100 seed 0's test error (the
# validation errors did not separate them; docs/studies/deep-compression.md says so)
FINETUNE = {"lr": 1e-3, "weight_decay": 0.0}
# the 99%-sparse LeNet-300-100 of the footprint part: the pruning table's magnitude recipe with
# 99% of each hidden layer and 90% of the output layer removed (98.97% overall)
SPARSE99 = {"sparsity": (0.99, 0.99, 0.9)}


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = ("lenet300", "lenet5")
    seeds: tuple[int, ...] = (0, 1, 2)
    epoch_scale: float = 1.0  # multiplies the pruning table's epoch counts (quick mode)
    finetune_epochs: int = 3  # centroid training after k-means, at the paper's bits
    index_bits: int = 5
    sweep_bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    sweep_seeds: tuple[int, ...] = (0, 1, 2)
    sweep_epochs: int = 2  # centroid training per bit width
    footprint: bool = True
    small_dense_epochs: int = 20  # the mlp40 reference of the footprint part
    train_subset: int = 0  # 0: all 55,000 training images
    device: str = "auto"


QUICK = Config(models=("lenet300",), seeds=(0,), epoch_scale=0.05, finetune_epochs=1,
               sweep_bits=(2, 6), sweep_seeds=(0,), sweep_epochs=1, small_dense_epochs=1,
               train_subset=2000)  # fmt: skip


COMPRESS_TASK = "topoprune_studies.deep_compression:compress"


def compress(folder: Path, inputs: dict, *, model: str, run: str, device: str, index_bits: int,
             conv_bits: int, fc_bits: int, fixed: bool = False,
             exact: bool = False) -> dict:  # fmt: skip
    """Compress the final checkpoint of the needed run ``run`` into ``model.tprz`` (Huffman
    coded) and, with ``fixed``, ``model-fixed.tprz`` (fixed-width codes); each file's report and
    the test error of the model decoded from it; with ``exact``, whether ``model.tprz`` decodes
    to exactly the checkpoint's masked weights."""
    checkpoint = inputs[run]["checkpoint"]
    data = load_dataset("mnist")
    options = {"index_bits": index_bits, "conv_bits": conv_bits, "fc_bits": fc_bits}
    record = {"huffman": _compressed(model, checkpoint, folder / "model.tprz", data, device,
                                     **options)}  # fmt: skip
    if fixed:
        record["fixed"] = _compressed(model, checkpoint, folder / "model-fixed.tprz", data,
                                      device, use_huffman=False, **options)  # fmt: skip
    if exact:
        record["decoded_exactly"] = _exact(checkpoint, folder / "model.tprz")
    return record


def _compressed(model: str, checkpoint: str, path: Path, data: ImageDataset, device: str,
                **options) -> dict:  # fmt: skip
    report = compress_checkpoint(checkpoint, path, **options)
    return {"file": str(path), "file_bytes": report.file_bytes,
            "tensor_bytes": report.tensor_bytes, "total": report.total(),
            "ratios": report.ratios(), "rows": report.rows(),
            "test_error": error_of_file(model, path, data, device)}  # fmt: skip


def error_of_file(model: str, path: Path, data: ImageDataset, device: str) -> float:
    """Test error of the model decoded from a compressed file (no topoprune masks needed)."""
    net = build_model(model, data.num_classes)
    state = {k: torch.from_numpy(v) for k, v in decompressed_state_dict(path).items()}
    net.load_state_dict(state)
    return error_rate(net.to(device), data.test, device)


def _exact(checkpoint: str, path: Path) -> bool:
    """Whether the file decodes to exactly the checkpoint's (masked) weights."""
    ours = {layer.name: layer.weight * layer.mask for layer in load_network(checkpoint).layers}
    theirs = decompressed_state_dict(path)
    return all(np.array_equal(ours[name], theirs[name]) for name in ours)


def _bits_name(bits: dict) -> str:
    """``conv8-fc6`` for ``{"conv_bits": 8, "fc_bits": 6}``."""
    return "-".join(f"{k.split('_')[0]}{v}" for k, v in sorted(bits.items()))


class Plan:
    """The study's run specs (a run several parts use is listed once), and the part that first
    asked for each."""

    def __init__(self, config: Config, device: str) -> None:
        self.config, self.device = config, device
        self.specs: dict[str, RunSpec] = {}
        self.parts: dict[str, str] = {}

    def add(self, part: str, spec: RunSpec) -> str:
        known = self.specs.setdefault(spec.key, spec)
        if known != spec:
            raise TopopruneError(f"run {spec.key} is planned twice with different settings")
        self.parts.setdefault(spec.key, part)
        return spec.key

    def train(self, part: str, model: str, name: str, seed: int, method: str, cfg,
              init: str | None = None) -> str:  # fmt: skip
        """A training run keyed ``<model>-<name>-seed<k>``, from the run ``init`` if given."""
        return self.add(part, RunSpec(
            f"{model}-{name}-seed{seed}", TRAIN_TASK,
            {"model": model, "method": method, "seed": seed, "device": self.device,
             "train_subset": self.config.train_subset, "config": config_settings(cfg),
             "init": init},
            needs=(init,) if init is not None else (),
        ))  # fmt: skip

    def pruned(self, part: str, model: str, seed: int) -> tuple[str, str]:
        """The pruning table's dense and magnitude runs for (model, seed)."""
        scale = self.config.epoch_scale
        dense_cfg = pruning_table.method_config(model, "dense", scale, {})
        dense = self.train(part, model, "dense", seed, "dense", dense_cfg)
        magnitude_cfg = pruning_table.method_config(model, "magnitude", scale, {})
        pruned = self.train(part, model, "magnitude", seed, "magnitude", magnitude_cfg,
                            init=dense)  # fmt: skip
        return dense, pruned

    def quantised(self, part: str, model: str, seed: int, init: str, epochs: int, bits: dict,
                  of: str = "magnitude", **file) -> tuple[str, str]:  # fmt: skip
        """Trained quantisation of the run ``init`` (named ``of``) at ``bits``: its key, and the
        key of its compressed file at the same bits (``file``: :meth:`compressed`'s options)."""
        cfg = METHODS["trained-quantization"].Config(epochs=epochs, **FINETUNE, **bits)
        name = f"{of}-quantized-{_bits_name(bits)}-e{epochs}"
        key = self.train(part, model, name, seed, "trained-quantization", cfg, init)
        return key, self.compressed(part, model, name, seed, key, bits, **file)

    def compressed(self, part: str, model: str, name: str, seed: int, run: str, bits: dict,
                   fixed: bool = False, exact: bool = False) -> str:  # fmt: skip
        """The compressed file of the run ``run`` (:func:`compress`), keyed
        ``<model>-<name>-compressed-seed<k>``."""
        return self.add(part, RunSpec(
            f"{model}-{name}-compressed-seed{seed}", COMPRESS_TASK,
            {"model": model, "run": run, "device": self.device,
             "index_bits": self.config.index_bits, "fixed": fixed, "exact": exact, **bits},
            needs=(run,),
        ))  # fmt: skip


def main_part(plan: Plan) -> list[tuple[str, int, str, str, str]]:
    """Han et al.'s pipeline per (model, seed): the dense, pruned and compressed runs' keys."""
    config, runs = plan.config, []
    for model in config.models:
        for seed in config.seeds:
            dense, pruned = plan.pruned("pipeline", model, seed)
            _, files = plan.quantised("pipeline", model, seed, pruned, config.finetune_epochs,
                                      BITS[model], fixed=True, exact=True)  # fmt: skip
            runs.append((model, seed, dense, pruned, files))
    return runs


def main_rows(runs: list[tuple], records: dict) -> tuple[list[dict], list[dict]]:
    """One row per (model, seed) and stage, one per layer."""
    stages, layers = [], []
    for model, seed, dense_key, pruned_key, files_key in runs:
        dense, pruned, files = records[dense_key], records[pruned_key], records[files_key]
        report, fixed = files["huffman"], files["fixed"]
        total, ratios = report["total"], report["ratios"]
        error, fixed_error = report["test_error"], fixed["test_error"]
        common = {"model": model, "seed": seed}
        stages += [
            {**common, "stage": "dense", "bytes": total["dense_bytes"], "ratio": 1.0,
             "test_error": 100 * dense["test_error"]},
            {**common, "stage": "pruned", "bytes": total["pruned_bytes"],
             "ratio": ratios["pruned"], "params_ratio": ratios["pruned_params"],
             "test_error": 100 * pruned["test_error"]},
            {**common, "stage": "quantised", "bytes": total["quantised_bytes"],
             "ratio": ratios["quantised"], "test_error": 100 * fixed_error},
            {**common, "stage": "huffman", "bytes": total["huffman_bytes"],
             "ratio": ratios["huffman"], "test_error": 100 * error},
            {**common, "stage": "file (Huffman)", "bytes": report["file_bytes"],
             "ratio": ratios["file"], "test_error": 100 * error},
            {**common, "stage": "file (fixed width)", "bytes": fixed["file_bytes"],
             "ratio": fixed["ratios"]["file"], "test_error": 100 * fixed_error},
        ]  # fmt: skip
        for stage in stages[-6:]:
            stage["decoded_exactly"] = files["decoded_exactly"]
        layers += [{**common, **row} for row in report["rows"]]
    return stages, layers


def bits_part(plan: Plan) -> list[tuple[str, int, int, str, str, str]]:
    """Per (model, seed, bits): the pruned run, its k-means-only file and the file of its
    trained quantisation (the same bits for every layer)."""
    config, runs = plan.config, []
    for model in config.models:
        for seed in config.sweep_seeds:
            _, pruned = plan.pruned("bits", model, seed)
            for bits in config.sweep_bits:
                every = {"conv_bits": bits, "fc_bits": bits}
                kmeans = plan.compressed("bits", model, f"magnitude-kmeans-{_bits_name(every)}",
                                         seed, pruned, every)  # fmt: skip
                _, trained = plan.quantised("bits", model, seed, pruned, config.sweep_epochs,
                                            every)  # fmt: skip
                runs.append((model, seed, bits, pruned, kmeans, trained))
    return runs


def bits_rows(runs: list[tuple], records: dict) -> list[dict]:
    """Test error against weight bits, k-means only and trained."""
    rows = []
    for model, seed, bits, pruned, kmeans, trained in runs:
        common = {"model": model, "bits": bits, "seed": seed}
        pruned_error = 100 * records[pruned]["test_error"]
        rows.append({**common, "centroids": "k-means",
                     "test_error": 100 * records[kmeans]["huffman"]["test_error"],
                     "pruned_error": pruned_error})  # fmt: skip
        rows.append({**common, "centroids": "trained",
                     "test_error": 100 * records[trained]["huffman"]["test_error"],
                     "pruned_error": pruned_error})  # fmt: skip
    return rows


def csr_bytes(network) -> int:
    """Bytes of the weight layers in CSR: float32 values, int32 column indices and row pointers
    (a convolution as its C_out x (C_in k k) matrix)."""
    total = 0
    for layer in network.layers:
        rows = layer.mask.shape[0]
        total += 8 * int(layer.mask.sum()) + 4 * (rows + 1)
    return total


def footprint_part(plan: Plan) -> dict[str, str] | None:
    """One seed: a 99%-sparse LeNet-300-100 (from the pruning table's dense run), its trained
    quantisation and file, and a small dense MLP (mlp40, 784-40-20-10); their keys."""
    config = plan.config
    if not config.footprint:
        return None
    seed = config.seeds[0]
    dense, _ = plan.pruned("footprint", "lenet300", seed)
    cfg = dataclasses.replace(
        pruning_table.method_config("lenet300", "magnitude", config.epoch_scale, {}), **SPARSE99
    )
    sparse = plan.train("footprint", "lenet300", "magnitude99", seed, "magnitude", cfg,
                        init=dense)  # fmt: skip
    _, files = plan.quantised("footprint", "lenet300", seed, sparse, config.finetune_epochs,
                              BITS["lenet300"], of="magnitude99", fixed=True)  # fmt: skip
    small = plan.train("footprint", "mlp40", "dense", seed, "dense",
                       METHODS["dense"].Config(epochs=config.small_dense_epochs, lr=0.05,
                                               schedule="cosine"))  # fmt: skip
    return {"seed": seed, "sparse": sparse, "files": files, "small": small}


def footprint_rows(runs: dict | None, records: dict) -> list[dict]:
    """The 99%-sparse LeNet-300-100 stored densely, in CSR, in this format with and without
    Huffman coding, beside the small dense MLP."""
    if runs is None:
        return []
    seed, sparse, small = runs["seed"], records[runs["sparse"]], records[runs["small"]]
    huff, fixed = records[runs["files"]]["huffman"], records[runs["files"]]["fixed"]
    network = load_network(sparse["checkpoint"])
    weights = sum(layer.mask.size for layer in network.layers)
    kept = sum(int(layer.mask.sum()) for layer in network.layers)
    biases = huff["tensor_bytes"]  # float32 biases, stored by every row (the files hold them too)
    common = {"model": "lenet300", "seed": seed, "kept_percent": 100 * kept / weights,
              "biases_bytes": biases}  # fmt: skip
    rows = [
        {**common, "storage": "dense float32", "bytes": 4 * weights + biases,
         "test_error": 100 * sparse["test_error"]},
        {**common, "storage": "CSR (float32, int32 indices)", "bytes": csr_bytes(network) + biases,
         "test_error": 100 * sparse["test_error"]},
        {**common, "storage": "this format, fixed width (file)", "bytes": fixed["file_bytes"],
         "test_error": 100 * fixed["test_error"]},
        {**common, "storage": "this format, Huffman (file)", "bytes": huff["file_bytes"],
         "test_error": 100 * huff["test_error"]},
    ]  # fmt: skip
    small_weights = sum(layer.mask.size for layer in load_network(small["checkpoint"]).layers)
    rows.append({"model": "mlp40", "seed": seed, "kept_percent": 100.0, "biases_bytes": 0,
                 "storage": "small dense MLP (no biases), float32", "bytes": 4 * small_weights,
                 "test_error": 100 * small["test_error"]})  # fmt: skip
    return rows


def stage_table(rows: list[dict]) -> list[dict]:
    """``table.csv``: mean +- std over seeds per (model, stage), the paper beside."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for stage in dict.fromkeys(r["stage"] for r in rows if r["model"] == model):
            group = [r for r in rows if r["model"] == model and r["stage"] == stage]
            paper = PAPER.get(model, {})
            paper_ratio = {"quantised": paper.get("ratio_pq"),
                           "huffman": paper.get("ratio_pqh")}.get(stage)  # fmt: skip
            paper_error = {"dense": paper.get("dense_error"), "huffman": paper.get("error"),
                           "quantised": paper.get("error")}.get(stage)  # fmt: skip
            errors = [r["test_error"] for r in group]
            ratios = [r["ratio"] for r in group]
            out.append({
                "model": model, "stage": stage,
                "bytes": float(np.mean([r["bytes"] for r in group])),
                "ratio": float(np.mean(ratios)), "ratio_std": float(np.std(ratios)),
                "params_ratio": (float(np.mean([r["params_ratio"] for r in group]))
                                 if "params_ratio" in group[0] else None),
                "test_error_mean": float(np.mean(errors)),
                "test_error_std": float(np.std(errors)),
                "seeds": len(group), "paper_ratio": paper_ratio,
                "paper_params_ratio": 12 if stage == "pruned" and paper else None,
                "paper_error": paper_error,
                "decoded_exactly": all(r.get("decoded_exactly", True) for r in group),
            })  # fmt: skip
    return out


def layer_table(rows: list[dict]) -> list[dict]:
    """Tables 2-3: per layer, the mean over seeds of the paper's columns beside the paper's."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        names = list(dict.fromkeys(r["layer"] for r in rows if r["model"] == model))
        paper = PAPER.get(model, {}).get("layers", [])
        for index, name in enumerate(names):
            group = [r for r in rows if r["model"] == model and r["layer"] == name]
            row = {"model": model, "layer": name, "weights": group[0]["weights"],
                   "seeds": len(group)}  # fmt: skip
            ours = {c: float(np.mean([r[c] for r in group])) for c in PAPER_COLUMNS}
            theirs = paper[index] if index < len(paper) else None
            for c_index, column in enumerate(PAPER_COLUMNS):
                row[column] = round(ours[column], 2)
                row[f"paper_{column}"] = theirs[c_index + 1] if theirs else None
            out.append(row)
    return out


def bits_table(rows: list[dict]) -> list[dict]:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for bits in sorted({r["bits"] for r in rows if r["model"] == model}):
            row = {"model": model, "bits": bits}
            for centroids in ("k-means", "trained"):
                errors = [r["test_error"] for r in rows if r["model"] == model
                          and r["bits"] == bits and r["centroids"] == centroids]  # fmt: skip
                row[centroids] = mean_sd(errors)
            pruned = [r["pruned_error"] for r in rows if r["model"] == model and r["bits"] == bits
                      and r["centroids"] == "trained"]  # fmt: skip
            row["pruned (no sharing)"] = mean_sd(pruned)
            row["seeds"] = len(pruned)
            out.append(row)
    return out


def run(config: Config, out: str | Path, *, progress: bool = False, executor=None) -> dict:
    """Every part's runs (one graph), then the tables, ``figures.json`` and ``summary.json``."""
    out = Path(out)
    start = time.perf_counter()
    origin = provenance(("topoprune", "torch", "numpy"))
    device = resolve_device(config.device)
    plan = Plan(config, device)
    main_runs, bits_runs, footprint_runs = main_part(plan), bits_part(plan), footprint_part(plan)
    records = run_specs(list(plan.specs.values()), out / "runs", executor, progress=progress)
    # seconds of the runs this invocation ran, per part (summed: they may have run at once)
    clock = dict.fromkeys(("pipeline", "bits", "footprint"), 0.0)
    for key in records.submitted:
        clock[plan.parts[key]] += records[key]["run_spec"]["task_seconds"]
    stages, layers = main_rows(main_runs, records)
    bits = bits_rows(bits_runs, records)
    footprint = footprint_rows(footprint_runs, records)

    table = stage_table(stages)
    (out / "table.csv").write_text(rows_to_csv(table))
    (out / "stages.csv").write_text(rows_to_csv(stages, columns_of(stages)))
    (out / "layers.csv").write_text(rows_to_csv(layer_table(layers)))
    (out / "bits.csv").write_text(rows_to_csv(bits))
    (out / "footprint.csv").write_text(rows_to_csv(footprint, columns_of(footprint)))
    (out / "tables.md").write_text(
        "## Tables 1-3: the pipeline (mean over seeds)\n\n" + rows_to_markdown(_rounded(table))
        + "\n## Per layer (mean over seeds), the paper's columns beside\n\n"
        + rows_to_markdown(layer_table(layers))
        + "\n## Test error % against weight bits (every layer)\n\n"
        + rows_to_markdown(bits_table(bits))
        + "\n## Memory footprint of a 99%-sparse LeNet-300-100 (one seed)\n\n"
        + rows_to_markdown(_rounded(footprint))
    )  # fmt: skip
    (out / "figures.json").write_text(json.dumps({"bits": bits, "stages": stages}) + "\n")
    wall = time.perf_counter() - start
    write_study_summary(out / "summary.json", {
        "config": asdict(config), "paper": PAPER, "bits": BITS, "finetune": FINETUNE,
        "sparse99": SPARSE99, "part_seconds": {k: round(v, 1) for k, v in clock.items()},
        "wall_seconds": wall, "device": device, "executor": describe(executor),
        "provenance": origin,
    })  # fmt: skip
    return {"rows": table, "wall_seconds": wall, "submitted": records.submitted}


def _rounded(rows: list[dict]) -> list[dict]:
    def tidy(key: str, value):
        if not isinstance(value, float) or not math.isfinite(value):
            return value
        return round(value) if key == "bytes" else round(value, 3)

    return [{k: tidy(k, v) for k, v in r.items()} for r in rows]


# ---- figures -----------------------------------------------------------------------------------


def figures(results: str | Path, out: str | Path) -> list[Path]:
    """Test error against weight bits, k-means only and with trained centroids (Han et al.'s
    Figure 7 on the LeNets), and the bytes after each stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(results) / "figures.json"
    if not path.exists():
        raise TopopruneError(f"{path} does not exist: run `topoprune study run deep-compression`")
    data = json.loads(path.read_text())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = list(dict.fromkeys(r["model"] for r in data["bits"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = [r for r in data["bits"] if r["model"] == model]
        for index, centroids in enumerate(("k-means", "trained")):
            bits = sorted({r["bits"] for r in rows})
            values = [[r["test_error"] for r in rows if r["bits"] == b
                       and r["centroids"] == centroids] for b in bits]  # fmt: skip
            ax.errorbar(bits, [np.mean(v) for v in values], [np.std(v) for v in values],
                        marker="o", capsize=3, label=f"{centroids} centroids",
                        color=f"C{index}")  # fmt: skip
        pruned = [r["pruned_error"] for r in rows if r["centroids"] == "trained"]
        ax.axhline(np.mean(pruned), color="grey", linestyle="--", label="pruned, 32-bit")
        ax.set(title=model, xlabel="weight bits (every layer)", ylabel="test error %")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    target = out / "error-bits.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return [target]
