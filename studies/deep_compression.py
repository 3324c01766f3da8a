"""Study: Deep Compression (Han et al. 2016) on LeNet-300-100 and LeNet-5, reproduced.

    topoprune study run deep-compression [--quick]
    topoprune figures --study deep-compression

Each seed's dense model and its magnitude-pruned model are the pruning-table study's runs (same
settings, trained here into ``runs/``). Then trained quantisation (``topoprune prune --method
trained-quantization`` at the paper's bits: 6 for every LeNet-300-100 layer, 8 for LeNet-5's
convolutions and 5 for its linear layers), ``topoprune compress`` with 5-bit relative indices and
Huffman coding, and every error is measured on the model decoded from the compressed file.

Parts: the paper's Tables 1-3 (``table.csv``, ``layers.csv``); test error against weight bits
(2-8, every layer) with and without centroid training (``bits.csv``); the memory footprint of a
99%-sparse LeNet-300-100 in dense, CSR and this format, beside a small dense MLP
(``footprint.csv``); the structured study compares structured and unstructured footprints. A
run whose summary exists is not rerun, so the study resumes.
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
from topoprune.data import ImageDataset
from topoprune.errors import TopopruneError
from topoprune.io import load_network
from topoprune.models import build_model
from topoprune.provenance import provenance
from topoprune.prune.methods import METHODS
from topoprune.train.engine import TrainSettings, resolve_device
from topoprune.train.optim import error_rate
from topoprune.train.run import prune_run

from . import pruning_table
from ._data import mnist
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


class Study:
    """Runs in ``out/runs/<model>-<name>-seed<k>/``, compressed files beside their checkpoints."""

    def __init__(self, out: Path, config: Config, progress: bool) -> None:
        self.out, self.config, self.progress = out, config, progress
        self.device = resolve_device(config.device)
        self.data: ImageDataset = mnist(config.train_subset)

    def settings(self, seed: int) -> TrainSettings:
        return TrainSettings(seed=seed, device=self.device, progress=self.progress)

    def folder(self, model: str, name: str, seed: int) -> Path:
        return self.out / "runs" / f"{model}-{name}-seed{seed}"

    def train(self, model: str, name: str, seed: int, method: str, cfg, init=None) -> dict:
        return prune_run(model, "mnist", method, cfg, self.settings(seed),
                         self.folder(model, name, seed), resume=True, init=init,
                         data=self.data)  # fmt: skip

    def pruned(self, model: str, seed: int) -> tuple[dict, dict]:
        """The pruning table's dense and magnitude runs for (model, seed)."""
        scale = self.config.epoch_scale
        dense_cfg = pruning_table.method_config(model, "dense", scale, {})
        dense = self.train(model, "dense", seed, "dense", dense_cfg)
        magnitude_cfg = pruning_table.method_config(model, "magnitude", scale, {})
        pruned = self.train(model, "magnitude", seed, "magnitude", magnitude_cfg,
                            init=dense["checkpoint"])  # fmt: skip
        return dense, pruned

    def quantised(self, model: str, seed: int, init: str, epochs: int, of: str = "magnitude",
                  **bits) -> dict:  # fmt: skip
        """Trained quantisation of the run ``of`` (whose checkpoint is ``init``)."""
        cfg = METHODS["trained-quantization"].Config(epochs=epochs, **FINETUNE, **bits)
        name = "-".join(f"{k.split('_')[0]}{v}" for k, v in sorted(bits.items()))
        return self.train(model, f"{of}-quantized-{name}-e{epochs}", seed,
                          "trained-quantization", cfg, init)  # fmt: skip

    def error_of_file(self, model: str, path: Path) -> float:
        """Test error of the model decoded from a compressed file (no topoprune masks needed)."""
        net = build_model(model, self.data.num_classes)
        state = {k: torch.from_numpy(v) for k, v in decompressed_state_dict(path).items()}
        net.load_state_dict(state)
        return error_rate(net.to(self.device), self.data.test, self.device)


def _exact(checkpoint: str, path: Path) -> bool:
    """Whether the file decodes to exactly the checkpoint's (masked) weights."""
    ours = {layer.name: layer.weight * layer.mask for layer in load_network(checkpoint).layers}
    theirs = decompressed_state_dict(path)
    return all(np.array_equal(ours[name], theirs[name]) for name in ours)


def main_part(study: Study) -> tuple[list[dict], list[dict]]:
    """Han et al.'s pipeline per (model, seed): one row per stage, one per layer."""
    config, stages, layers = study.config, [], []
    for model in config.models:
        for seed in config.seeds:
            dense, pruned = study.pruned(model, seed)
            trained = study.quantised(model, seed, pruned["checkpoint"], config.finetune_epochs,
                                      **BITS[model])  # fmt: skip
            folder = Path(trained["checkpoint"]).parent
            report = compress_checkpoint(trained["checkpoint"], folder / "model.tprz",
                                         index_bits=config.index_bits, **BITS[model])  # fmt: skip
            fixed = compress_checkpoint(trained["checkpoint"], folder / "model-fixed.tprz",
                                        index_bits=config.index_bits, use_huffman=False,
                                        **BITS[model])  # fmt: skip
            error = study.error_of_file(model, folder / "model.tprz")
            fixed_error = study.error_of_file(model, folder / "model-fixed.tprz")
            total, ratios = report.total(), report.ratios()
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
                {**common, "stage": "file (Huffman)", "bytes": report.file_bytes,
                 "ratio": ratios["file"], "test_error": 100 * error},
                {**common, "stage": "file (fixed width)", "bytes": fixed.file_bytes,
                 "ratio": fixed.ratios()["file"], "test_error": 100 * fixed_error},
            ]  # fmt: skip
            exact = _exact(trained["checkpoint"], folder / "model.tprz")
            for stage in stages[-6:]:
                stage["decoded_exactly"] = exact
            layers += [{**common, **row} for row in report.rows()]
    return stages, layers


def bits_part(study: Study) -> list[dict]:
    """Test error against weight bits (the same for every layer), k-means only and trained."""
    config, rows = study.config, []
    for model in config.models:
        for seed in config.sweep_seeds:
            _, pruned = study.pruned(model, seed)
            for bits in config.sweep_bits:
                folder = study.folder(model, f"bits{bits}", seed)
                folder.mkdir(parents=True, exist_ok=True)
                compress_checkpoint(pruned["checkpoint"], folder / "kmeans.tprz", conv_bits=bits,
                                    fc_bits=bits, index_bits=config.index_bits)  # fmt: skip
                untrained = study.error_of_file(model, folder / "kmeans.tprz")
                trained = study.quantised(model, seed, pruned["checkpoint"], config.sweep_epochs,
                                          conv_bits=bits, fc_bits=bits)  # fmt: skip
                compress_checkpoint(trained["checkpoint"], folder / "trained.tprz", conv_bits=bits,
                                    fc_bits=bits, index_bits=config.index_bits)  # fmt: skip
                common = {"model": model, "bits": bits, "seed": seed}
                rows.append({**common, "centroids": "k-means", "test_error": 100 * untrained})
                trained_error = study.error_of_file(model, folder / "trained.tprz")
                rows.append({**common, "centroids": "trained", "test_error": 100 * trained_error})
                rows[-1]["pruned_error"] = rows[-2]["pruned_error"] = 100 * pruned["test_error"]
    return rows


def csr_bytes(network) -> int:
    """Bytes of the weight layers in CSR: float32 values, int32 column indices and row pointers
    (a convolution as its C_out x (C_in k k) matrix)."""
    total = 0
    for layer in network.layers:
        rows = layer.mask.shape[0]
        total += 8 * int(layer.mask.sum()) + 4 * (rows + 1)
    return total


def footprint_part(study: Study) -> list[dict]:
    """One seed: a 99%-sparse LeNet-300-100 stored densely, in CSR, in this format with and
    without Huffman coding, beside a small dense MLP (mlp40, 784-40-20-10)."""
    if not study.config.footprint:
        return []
    seed, config = study.config.seeds[0], study.config
    dense, _ = study.pruned("lenet300", seed)
    cfg = dataclasses.replace(
        pruning_table.method_config("lenet300", "magnitude", config.epoch_scale, {}), **SPARSE99
    )
    sparse = study.train("lenet300", "magnitude99", seed, "magnitude", cfg,
                         init=dense["checkpoint"])  # fmt: skip
    trained = study.quantised("lenet300", seed, sparse["checkpoint"], config.finetune_epochs,
                              of="magnitude99", **BITS["lenet300"])  # fmt: skip
    folder = Path(trained["checkpoint"]).parent
    huff = compress_checkpoint(trained["checkpoint"], folder / "model.tprz",
                               index_bits=config.index_bits, **BITS["lenet300"])  # fmt: skip
    fixed = compress_checkpoint(trained["checkpoint"], folder / "model-fixed.tprz",
                                index_bits=config.index_bits, use_huffman=False,
                                **BITS["lenet300"])  # fmt: skip
    network = load_network(sparse["checkpoint"])
    weights = sum(layer.mask.size for layer in network.layers)
    kept = sum(int(layer.mask.sum()) for layer in network.layers)
    biases = huff.tensor_bytes  # float32 biases, stored by every row (the files hold them too)
    common = {"model": "lenet300", "seed": seed, "kept_percent": 100 * kept / weights,
              "biases_bytes": biases}  # fmt: skip
    rows = [
        {**common, "storage": "dense float32", "bytes": 4 * weights + biases,
         "test_error": 100 * sparse["test_error"]},
        {**common, "storage": "CSR (float32, int32 indices)", "bytes": csr_bytes(network) + biases,
         "test_error": 100 * sparse["test_error"]},
        {**common, "storage": "this format, fixed width (file)", "bytes": fixed.file_bytes,
         "test_error": 100 * study.error_of_file("lenet300", folder / "model-fixed.tprz")},
        {**common, "storage": "this format, Huffman (file)", "bytes": huff.file_bytes,
         "test_error": 100 * study.error_of_file("lenet300", folder / "model.tprz")},
    ]  # fmt: skip
    small = study.train("mlp40", "dense", seed, "dense",
                        METHODS["dense"].Config(epochs=config.small_dense_epochs, lr=0.05,
                                                schedule="cosine"))  # fmt: skip
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


def run(config: Config, out: str | Path, *, progress: bool = False) -> dict:
    """Every part; writes the tables, ``figures.json`` and ``summary.json`` into ``out``."""
    out = Path(out)
    start = time.perf_counter()
    origin = provenance(("topoprune", "torch", "numpy"))
    study = Study(out, config, progress)
    clock, tic = {}, time.perf_counter()
    stages, layers = main_part(study)
    clock["pipeline"], tic = time.perf_counter() - tic, time.perf_counter()
    bits = bits_part(study)
    clock["bits"], tic = time.perf_counter() - tic, time.perf_counter()
    footprint = footprint_part(study)
    clock["footprint"] = time.perf_counter() - tic

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
        "wall_seconds": wall, "device": study.device, "provenance": origin,
    })  # fmt: skip
    return {"rows": table, "wall_seconds": wall}


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
