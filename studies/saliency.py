"""Study: removing what the loss least needs (OBD, OBS, WoodFisher, Taylor) and the slides' claims.

    topoprune study run saliency [--quick]
    topoprune figures --study saliency

Per model (WoodFisher's 784-40-20-10 MLP without biases, LeNet-300-100) and seed, one dense
model (spec ``<model>-dense-seed<k>``), then:

1. **One-shot pruning without retraining**: test accuracy against sparsity for magnitude,
   OBD (Gauss-Newton diagonal), diagonal Fisher (OBD on the empirical Fisher's diagonal),
   layer-wise OBS, WoodFisher, Taylor and random, with every layer at the same sparsity
   (``uniform``) and, for all but layer-wise OBS (whose objectives are per layer), one ranking
   over the network (``global``, WoodFisher's setting). Each criterion's scores (and
   Hessians) are computed once on the dense model and serve every sparsity; these are the same
   functions the registered methods call (``topoprune/prune/saliency.py``, ``woodfisher.py``).
2. **E(mag) >= E(OBD) >= E(OBS)**: each layer alone pruned to 50% and 90% by magnitude, OBD
   and layer-wise OBS; the loss increase on the validation split (and on the scoring
   examples), the test error, and the overlap of the removed sets. Layer-wise OBS minimises
   each layer's reconstruction error, not the loss: E(OBD) >= E(OBS) is not a theorem here.
3. **With retraining**: the registered methods (``topoprune prune``) pruning every layer once to
   ``retrain_sparsity`` from the dense model, then retraining ``retrain_epochs`` epochs
   (``<model>-<method>-retrain-seed<k>``).
4. **Units** (LeNet-300-100): skeletonization, APoZ, NISP and random hidden units removed, with
   and without fine-tuning (``<model>-<method>-units<fraction>-ft<epochs>-seed<k>``).

Parts 1 and 2 on one dense model are one spec, ``<model>-scores-seed<k>`` (its record holds
the rows and each criterion's seconds). Every spec but the dense ones needs its seed's dense
run; each owns ``runs/<key>-<hash>/``. A finished run is never rerun, so an interrupted study
resumes where it stopped, and the runs can go to local processes or a Ray cluster
(docs/running.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.models.zoo import build_model
from topoprune.provenance import provenance
from topoprune.prune.allocation import allocate
from topoprune.prune.curvature import (
    empirical_fisher_diagonal,
    gauss_newton_diagonal,
    layer_inputs,
)
from topoprune.prune.masks import add_masks, apply_masks, current_masks
from topoprune.prune.methods import METHODS
from topoprune.prune.saliency import (
    layer_hessian,
    obd_saliency,
    obs_path,
    removal_goal,
    rows_of,
    taylor_scores,
)
from topoprune.prune.woodfisher import (
    BlockLayout,
    block_fisher_inverse,
    fisher_gradients,
    prune_with_update,
)
from topoprune.runner import RunSpec, run_specs
from topoprune.train.data import training_batches
from topoprune.train.engine import resolve_device
from topoprune.train.optim import error_rate
from topoprune.train.run import load_trained_state

from ._data import mnist
from ._runs import TRAIN_TASK, config_settings, describe
from ._summary import write_study_summary
from ._tables import mean_sd, rows_to_csv, rows_to_markdown

CRITERIA = ("magnitude", "obd", "diag-fisher", "obs", "woodfisher", "taylor", "random")
UNIT_METHODS = ("skeletonization", "activation", "nisp", "units-random")
# The columns of oneshot.csv and claims.csv, and the criteria timed, in order: a finished run's
# record is read back from its summary.json, whose keys are sorted.
ONESHOT_COLUMNS = ("model", "allocation", "method", "sparsity", "seed", "test_accuracy")
CLAIM_COLUMNS = (
    "model", "layer", "sparsity", "seed",
    *(f"{what}_{c}" for c in ("magnitude", "obd", "obs")
      for what in ("loss_increase", "scoring_loss_increase", "test_error")),
    "overlap_magnitude_obd", "overlap_magnitude_obs", "overlap_obd_obs", "mag_ge_obd",
    "obd_ge_obs",
)  # fmt: skip
TIMED = ("taylor", "obd", "diag-fisher", "woodfisher", "obs")

# WoodFisher's code release, tests/mnist_test_results.csv: the 784-40-20-10 MLP (its checkpoint
# at 93.97% test accuracy), all three layers pruned one-shot to 95% by one joint ranking, 100
# gradients (4096 for the diagonal Fisher), dampening 1e-5.
PAPER_POINT = {"sparsity": 0.95, "dense": 93.97, "woodfisher": 84.18, "diag-fisher": 19.88}

# Dense training. The MLP follows WoodFisher's recipe for that checkpoint (SGD, lr 0.001,
# momentum 0.5, batch 64, 25 epochs: its scheduler starts after epoch 120); LeNet-300-100 the
# recipe of the other studies.
DENSE = {
    "mlp40": {"epochs": 25, "lr": 0.001, "momentum": 0.5, "weight_decay": 0.0},
    "lenet300": {"epochs": 10, "lr": 0.05, "schedule": "cosine"},
}
BATCH = {"mlp40": 64, "lenet300": 128}
# WoodFisher per model: gradients m and block size B. The MLP: the paper point's m = 100 (its
# blocks were whole layers: 8 x 31360^2 bytes for the first; 2000 keeps it within memory).
# LeNet-300-100: m = 200, B = 500 take about a minute on 2 cores (m = 400, B = 1000: 3.7 min,
# measured), once per seed and once per retraining run.
WOODFISHER = {"mlp40": {"m": 100, "block": 2000}, "lenet300": {"m": 200, "block": 500}}
DIAG_FISHER_EXAMPLES = 4096
DAMP_OBS = 1e-4  # relative dampening of the layer-wise Hessians (MNIST's border pixels are 0)
DAMP_WOODFISHER = 1e-5


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...] = ("mlp40", "lenet300")
    seeds: tuple[int, ...] = (0, 1, 2)
    sparsities: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
    claim_sparsities: tuple[float, ...] = (0.5, 0.9)
    scoring_examples: int = 1000
    retrain_sparsity: float = 0.9
    retrain_epochs: int = 2
    retrain_methods: tuple[str, ...] = ("magnitude", "obd", "obs", "woodfisher", "taylor",
                                        "random")  # fmt: skip
    unit_model: str = "lenet300"
    unit_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
    unit_finetune_epochs: int = 2
    epoch_scale: float = 1.0  # multiplies the dense epochs (quick mode)
    train_subset: int = 0  # quick mode: the first this many training images (0: all)
    device: str = "auto"
    overrides: dict = field(default_factory=dict)


QUICK = Config(
    models=("mlp40",),
    seeds=(0,),
    sparsities=(0.5, 0.9),
    claim_sparsities=(0.5,),
    scoring_examples=200,
    retrain_epochs=1,
    retrain_methods=("obs", "woodfisher"),
    unit_fractions=(0.5,),
    unit_finetune_epochs=1,
    epoch_scale=0.1,
    train_subset=2000,
    overrides={"woodfisher": {"m": 50, "block": 200}},
)


# ---- runs through the registered methods ------------------------------------------------------


def _dense_config(model: str, scale: float):
    values = dict(DENSE[model])
    values["epochs"] = max(1, round(values["epochs"] * scale))
    return METHODS["dense"].Config(**values)


def _retrain_config(method: str, model: str, config: Config):
    """Prune every layer once to ``retrain_sparsity`` from the dense model, retrain."""
    shared = {"dense_epochs": 0, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0,
              "schedule": "cosine"}  # fmt: skip
    s = config.retrain_sparsity
    if method == "random":
        return METHODS["random"].Config(**shared, kept=(1 - s,), epochs=config.retrain_epochs)
    values = {**shared, "sparsity": (s,), "iterations": 1, "retrain_epochs": config.retrain_epochs,
              "retrain_lr_factor": 1.0}  # fmt: skip
    if method in ("obd", "obs", "taylor"):
        values["scoring_examples"] = config.scoring_examples
    if method == "obs":
        values["damp"] = DAMP_OBS
    if method == "woodfisher":
        wf = _woodfisher_settings(model, config)
        values.update(fisher_examples=wf["m"], block_size=wf["block"], damp=DAMP_WOODFISHER)
    return METHODS[method].Config(**values)


def _unit_config(method: str, fraction: float, epochs: int, config: Config):
    return METHODS[method].Config(
        dense_epochs=0, units=(fraction,), retrain_epochs=epochs, lr=0.01, weight_decay=0.0,
        retrain_lr_factor=1.0, schedule="cosine", scoring_examples=config.scoring_examples,
    )  # fmt: skip


def _woodfisher_settings(model: str, config: Config) -> dict:
    return {**WOODFISHER[model], **config.overrides.get("woodfisher", {})}


# ---- one-shot pruning from the dense model ----------------------------------------------------


def _dense_net(model: str, checkpoint: str | dict, classes: int) -> nn.Module:
    """The dense model from its checkpoint file, or from a state dict already read from it."""
    net = add_masks(build_model(model, classes))
    if isinstance(checkpoint, dict):
        net.load_state_dict(checkpoint)
    else:
        load_trained_state(net, checkpoint)
    return net


def _masked(net: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in net.named_modules() if hasattr(m, "weight_mask")}


class OneShot:
    """One dense model's criteria, computed once: scores per criterion, layer-wise OBS paths,
    the WoodFisher inverse; :meth:`prune` installs a criterion's masks (and updates) at a
    sparsity into a fresh copy of the dense model.

    ``woodfisher`` holds WoodFisher's gradients ``m`` and block size ``block``; the other
    settings default to the study's constants."""

    def __init__(self, model: str, checkpoint: str, data, seed: int, *, scoring_examples: int,
                 woodfisher: dict, diag_fisher_examples: int = DIAG_FISHER_EXAMPLES,
                 damp_obs: float = DAMP_OBS,
                 damp_woodfisher: float = DAMP_WOODFISHER) -> None:  # fmt: skip
        self.model, self.checkpoint, self.data = model, checkpoint, data
        self.woodfisher, self.diag_fisher_examples = dict(woodfisher), diag_fisher_examples
        self.damp_obs, self.damp_woodfisher = damp_obs, damp_woodfisher
        self.net = _dense_net(model, checkpoint, data.num_classes)
        self.state = {k: v.clone() for k, v in self.net.state_dict().items()}
        self.names = list(_masked(self.net))
        batches = training_batches(data.train, 128, "cpu")
        key = seed * 1_000_003 + 17
        self.scoring = list(batches.draw(scoring_examples, key))
        self.timings: dict[str, float] = {}
        self.scores = self._scores(batches, key, seed)
        self._obs: dict[str, dict[int, dict]] = {}

    def _timed(self, name: str, compute):
        start = time.perf_counter()
        value = compute()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        return value

    def _scores(self, batches, key: int, seed: int) -> dict[str, dict[str, torch.Tensor]]:
        net, names, ce = self.net, self.names, nn.functional.cross_entropy
        weights = {n: m.weight_orig.detach() for n, m in _masked(net).items()}
        generator = torch.Generator().manual_seed(seed + 7919)
        out = {
            "magnitude": {n: w.abs() for n, w in weights.items()},
            "random": {n: torch.rand(w.shape, generator=generator) for n, w in weights.items()},
        }
        out["taylor"] = self._timed("taylor", lambda: taylor_scores(net, names, self.scoring, ce))
        gn = self._timed("obd", lambda: gauss_newton_diagonal(net, names, self.scoring, ce))
        out["obd"] = {n: obd_saliency(weights[n], gn[n]) for n in names}
        fisher_batches = list(batches.draw(self.diag_fisher_examples, key + 1))
        fisher = self._timed(
            "diag-fisher", lambda: empirical_fisher_diagonal(net, names, fisher_batches, ce)
        )
        out["diag-fisher"] = {n: obd_saliency(weights[n], fisher[n]) for n in names}
        wf = self.woodfisher
        layout = BlockLayout({n: w.shape for n, w in weights.items()}, wf["block"])
        masks = current_masks(net)

        def inverse():
            grads = fisher_gradients(net, layout, masks, batches.draw(wf["m"], key + 2), ce)
            return block_fisher_inverse(grads, wf["block"], self.damp_woodfisher)

        self.layout = layout
        self.flat = layout.flatten({n: w.double() for n, w in weights.items()})
        self.inverse = self._timed("woodfisher", inverse)  # its scores: prune_with_update
        return out

    def obs_layer(self, name: str, counts: list[int]) -> dict[int, dict]:
        """Layer-wise OBS of one layer to each of ``counts`` removals (cached)."""
        known = self._obs.setdefault(name, {})
        missing = sorted(set(counts) - set(known))
        if missing:
            module = _masked(self.net)[name]

            def path():
                inputs = layer_inputs(self.net, [name], self.scoring)[name]
                alive = rows_of(module.weight_mask.bool())
                hessian = layer_hessian(inputs, self.damp_obs)
                return obs_path(rows_of(module.weight_orig.detach()), alive, hessian, missing)

            known.update(zip(missing, self._timed("obs", path), strict=True))
        return {c: known[c] for c in counts}

    def prepare_obs(self, sparsities: list[float]) -> None:
        """Run layer-wise OBS once per layer to every count these sparsities need (the path is
        one greedy sequence: each sparsity is a prefix of it)."""
        for name, module in _masked(self.net).items():
            alive = module.weight_mask.bool()
            self.obs_layer(name, sorted({removal_goal(alive, s) for s in sparsities}))

    def prune(self, criterion: str, sparsity: dict[str, float] | float) -> nn.Module:
        """A fresh copy of the dense model pruned by ``criterion`` to ``sparsity`` (per layer,
        or one value for one global ranking); layers missing from a dict stay dense."""
        net = _dense_net(self.model, self.state, self.data.num_classes)
        modules = _masked(net)
        if criterion == "obs":
            if not isinstance(sparsity, dict):
                raise TopopruneError("layer-wise OBS has no global ranking")
            for name, s in sparsity.items():
                count = removal_goal(modules[name].weight_mask.bool(), s)
                step = self.obs_layer(name, [count])[count]
                with torch.no_grad():
                    modules[name].weight_orig.copy_(
                        step["weight"].view_as(modules[name].weight_orig)
                    )
                apply_masks(net, {name: step["alive"].view_as(modules[name].weight_mask)})
            return net
        masks = current_masks(net)
        if criterion == "woodfisher":  # the method's own step, on the inverse computed once
            kept, updated = prune_with_update(self.layout, self.flat, self.inverse, masks,
                                              sparsity)  # fmt: skip
            with torch.no_grad():
                for name, module in modules.items():
                    module.weight_orig.copy_(updated[name].float())
        elif isinstance(sparsity, dict):
            scores = self.scores[criterion]
            kept = allocate({n: scores[n] for n in sparsity}, {n: masks[n] for n in sparsity},
                            sparsity)  # fmt: skip
        else:
            kept = allocate(self.scores[criterion], masks, sparsity)
        apply_masks(net, kept)
        return net

    def loss(self, net: nn.Module, batches=None) -> float:
        """The mean cross-entropy on ``batches`` (default: the validation split, held out from
        the examples the criteria were computed on)."""
        total, count = 0.0, 0
        if batches is None:
            val = self.data.val
            batches = [(val.images[i : i + 1000], val.labels[i : i + 1000])
                       for i in range(0, len(val), 1000)]  # fmt: skip
        with torch.no_grad():
            for x, y in batches:
                total += float(nn.functional.cross_entropy(net(x), y, reduction="sum"))
                count += len(y)
        return total / count


def oneshot_rows(shot: OneShot, sparsities: list[float], seed: int) -> list[dict]:
    """Test accuracy of every criterion at every sparsity, uniform and global."""
    rows = []
    for allocation in ("uniform", "global"):
        for criterion in CRITERIA:
            if criterion == "obs" and allocation == "global":
                continue
            for s in sparsities:
                goal = dict.fromkeys(shot.names, s) if allocation == "uniform" else s
                net = shot.prune(criterion, goal)
                error = error_rate(net, shot.data.test, "cpu")
                rows.append({"model": shot.model, "allocation": allocation,
                             "method": criterion, "sparsity": s, "seed": seed,
                             "test_accuracy": round(100 * (1 - error), 3)})  # fmt: skip
    return rows


def claim_rows(shot: OneShot, sparsities: list[float], seed: int) -> list[dict]:
    """Each layer alone at each claim sparsity: the loss increase on the validation split (held
    out: layer-wise OBS nearly refits the examples its Hessian comes from) and on the scoring
    examples, test error, overlaps."""
    base, base_fit = shot.loss(shot.net), shot.loss(shot.net, shot.scoring)
    rows = []
    for name in shot.names:
        for s in sparsities:
            removed, row = {}, {"model": shot.model, "layer": name, "sparsity": s, "seed": seed}
            for criterion in ("magnitude", "obd", "obs"):
                net = shot.prune(criterion, {name: s})
                removed[criterion] = ~_masked(net)[name].weight_mask.bool()
                row[f"loss_increase_{criterion}"] = round(shot.loss(net) - base, 6)
                row[f"scoring_loss_increase_{criterion}"] = round(
                    shot.loss(net, shot.scoring) - base_fit, 6
                )
                row[f"test_error_{criterion}"] = round(100 * error_rate(net, shot.data.test,
                                                                        "cpu"), 3)  # fmt: skip
            count = max(int(removed["obs"].sum()), 1)
            for a, b in (("magnitude", "obd"), ("magnitude", "obs"), ("obd", "obs")):
                row[f"overlap_{a}_{b}"] = round(float((removed[a] & removed[b]).sum()) / count, 4)
            e = [row[f"loss_increase_{c}"] for c in ("magnitude", "obd", "obs")]
            row["mag_ge_obd"], row["obd_ge_obs"] = e[0] >= e[1], e[1] >= e[2]
            rows.append(row)
    return rows


# ---- the study --------------------------------------------------------------------------------


SCORE = "topoprune_studies.saliency:score"


def run_key(model: str, name: str, seed: int) -> str:
    """The spec key of a run (``name``: ``dense``, ``obs-retrain``, ``nisp-units0.5-ft2``)."""
    return f"{model}-{name}-seed{seed}"


def score_key(model: str, seed: int) -> str:
    """The spec key of the one-shot criteria and claims computed on a dense model."""
    return f"{model}-scores-seed{seed}"


def _unit_name(method: str, fraction: float, epochs: int) -> str:
    return f"{method}-units{fraction:g}-ft{epochs}"


def plan(config: Config, device: str) -> list[RunSpec]:
    """The dense run per model and seed; then, each needing its dense run, the scoring of it
    (parts 1 and 2), the retraining runs (part 3) and the unit runs (part 4)."""
    specs: list[RunSpec] = []

    def training(model: str, name: str, seed: int, method: str, cfg) -> None:
        dense = None if name == "dense" else run_key(model, "dense", seed)
        specs.append(RunSpec(
            run_key(model, name, seed), TRAIN_TASK,
            {"model": model, "method": method, "seed": seed, "device": device,
             "batch_size": BATCH[model], "train_subset": config.train_subset, "init": dense,
             "config": config_settings(cfg)},
            needs=(dense,) if dense else (),
        ))  # fmt: skip

    for model in dict.fromkeys((*config.models, config.unit_model)):
        for seed in config.seeds:
            training(model, "dense", seed, "dense", _dense_config(model, config.epoch_scale))
    for model in config.models:
        for seed in config.seeds:
            dense = run_key(model, "dense", seed)
            specs.append(RunSpec(
                score_key(model, seed), SCORE,
                {"model": model, "seed": seed, "dense": dense,
                 "train_subset": config.train_subset,
                 "scoring_examples": config.scoring_examples,
                 "sparsities": list(config.sparsities),
                 "claim_sparsities": list(config.claim_sparsities),
                 "woodfisher": _woodfisher_settings(model, config),
                 "diag_fisher_examples": DIAG_FISHER_EXAMPLES, "damp_obs": DAMP_OBS,
                 "damp_woodfisher": DAMP_WOODFISHER},
                needs=(dense,),
            ))  # fmt: skip
    for model in config.models:
        for seed in config.seeds:
            for method in config.retrain_methods:
                training(model, f"{method}-retrain", seed, method,
                         _retrain_config(method, model, config))  # fmt: skip
    for seed in config.seeds:
        for method in UNIT_METHODS:
            for fraction in config.unit_fractions:
                for epochs in (0, config.unit_finetune_epochs):
                    training(config.unit_model, _unit_name(method, fraction, epochs), seed,
                             method, _unit_config(method, fraction, epochs, config))  # fmt: skip
    return specs


def score(folder: Path, inputs: dict, *, model: str, seed: int, dense: str, train_subset: int,
          scoring_examples: int, sparsities: list[float], claim_sparsities: list[float],
          woodfisher: dict, diag_fisher_examples: int, damp_obs: float,
          damp_woodfisher: float) -> dict:  # fmt: skip
    """Parts 1 and 2 on the dense run ``dense`` (on the CPU): every criterion's one-shot rows,
    the claims' rows, and the seconds each criterion took."""
    shot = OneShot(model, inputs[dense]["checkpoint"], mnist(train_subset), seed,
                   scoring_examples=scoring_examples, woodfisher=woodfisher,
                   diag_fisher_examples=diag_fisher_examples, damp_obs=damp_obs,
                   damp_woodfisher=damp_woodfisher)  # fmt: skip
    shot.prepare_obs([*sparsities, *claim_sparsities])
    return {
        "oneshot": oneshot_rows(shot, sparsities, seed),
        "claims": claim_rows(shot, claim_sparsities, seed),
        "timings": shot.timings,
    }


def run(config: Config, out: str | Path, *, progress: bool = False, executor=None) -> dict:
    """Every part; writes ``table.csv`` (model, method, sparsity, seeds, test error mean and
    std for every one-shot, retrained and unit result), ``oneshot.csv``, ``claims.csv``,
    ``claims_summary.csv``, ``retrain.csv``, ``units.csv``, ``tables.md``, ``figures.json`` and
    ``summary.json``."""
    out = Path(out)
    start = time.perf_counter()
    origin = provenance(("topoprune", "torch", "numpy"))
    device = resolve_device(config.device)
    records = run_specs(plan(config, device), out / "runs", executor, progress=progress)

    oneshot, claims, timings = [], [], []
    for model in config.models:
        for seed in config.seeds:
            dense = records[run_key(model, "dense", seed)]
            scores = records[score_key(model, seed)]
            dense_accuracy = round(100 * (1 - dense["test_error"]), 3)
            oneshot += [{**{c: r[c] for c in ONESHOT_COLUMNS}, "dense_accuracy": dense_accuracy}
                        for r in scores["oneshot"]]  # fmt: skip
            claims += [{c: r[c] for c in CLAIM_COLUMNS} for r in scores["claims"]]
            timings.append({"model": model, "seed": seed, **{
                f"{k}_seconds": round(scores["timings"][k], 2) for k in TIMED
                if k in scores["timings"]}})  # fmt: skip
    retrain = []
    for model in config.models:
        for seed in config.seeds:
            for method in config.retrain_methods:
                summary = records[run_key(model, f"{method}-retrain", seed)]
                retrain.append({"model": model, "method": method, "seed": seed,
                                "sparsity": config.retrain_sparsity,
                                "retrain_epochs": config.retrain_epochs,
                                "test_accuracy": round(100 * (1 - summary["test_error"]), 3),
                                "seconds_last_invocation": round(
                                    summary["wall_seconds_this_run"], 1)})  # fmt: skip
    units = []
    for seed in config.seeds:
        for method in UNIT_METHODS:
            for fraction in config.unit_fractions:
                for epochs in (0, config.unit_finetune_epochs):
                    name = _unit_name(method, fraction, epochs)
                    r = records[run_key(config.unit_model, name, seed)]
                    accuracy = round(100 * (1 - r["test_error"]), 3)
                    units.append({"model": config.unit_model, "method": method, "seed": seed,
                                  "fraction_removed": fraction, "finetune_epochs": epochs,
                                  "kept_percent": round(100 / r["compression"], 3),
                                  "test_accuracy": accuracy})  # fmt: skip

    tables = {
        "oneshot": aggregate(oneshot, ("model", "allocation", "method", "sparsity")),
        "claims": claims_summary(claims),
        "retrain": aggregate(retrain, ("model", "method", "sparsity", "retrain_epochs")),
        "units": aggregate(units, ("model", "method", "fraction_removed", "finetune_epochs")),
    }
    paper = paper_rows(tables["oneshot"], oneshot)
    (out / "table.csv").write_text(rows_to_csv(table_rows(tables)))
    (out / "oneshot.csv").write_text(rows_to_csv(oneshot))
    (out / "claims.csv").write_text(rows_to_csv(claims))
    (out / "claims_summary.csv").write_text(rows_to_csv(tables["claims"]))
    (out / "retrain.csv").write_text(rows_to_csv(retrain))
    (out / "units.csv").write_text(rows_to_csv(units))
    (out / "paper.csv").write_text(rows_to_csv(paper))
    (out / "figures.json").write_text(json.dumps(
        {"oneshot": tables["oneshot"], "units": tables["units"], "paper": PAPER_POINT},
        indent=1) + "\n")  # fmt: skip
    (out / "tables.md").write_text(
        "## WoodFisher's published point\n\n" + rows_to_markdown(paper)
        + "\n## E(mag) >= E(OBD) >= E(OBS)\n\n" + rows_to_markdown(tables["claims"])
        + "\n## With retraining\n\n" + rows_to_markdown(_display(tables["retrain"]))
        + "\n## Units\n\n" + rows_to_markdown(_display(tables["units"]))
        + "\n## Cost of the criteria (seconds, dense model, once per seed)\n\n"
        + rows_to_markdown(timings)
    )  # fmt: skip
    wall = time.perf_counter() - start
    write_study_summary(out / "summary.json", {
        "paper": PAPER_POINT, "claims": tables["claims"], "timings": timings,
        "config": asdict(config), "dense": DENSE, "woodfisher": WOODFISHER,
        "damp_obs": DAMP_OBS, "damp_woodfisher": DAMP_WOODFISHER,
        "diag_fisher_examples": DIAG_FISHER_EXAMPLES, "wall_seconds": wall, "device": device,
        "executor": describe(executor), "provenance": origin,
    })  # fmt: skip
    return {"rows": tables["oneshot"], "wall_seconds": wall, "submitted": records.submitted}


def aggregate(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Mean and std of ``test_accuracy`` (and test error) over seeds per ``keys``."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, group in groups.items():
        accuracy = [r["test_accuracy"] for r in group]
        error = [100 - a for a in accuracy]
        out.append({**dict(zip(keys, key, strict=True)), "seeds": len(group),
                    "test_accuracy_mean": round(float(np.mean(accuracy)), 3),
                    "test_accuracy_std": round(float(np.std(accuracy)), 3),
                    "test_error_mean": round(float(np.mean(error)), 3),
                    "test_error_std": round(float(np.std(error)), 3)})  # fmt: skip
    return out


def _display(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("test_error")} for r in rows]


def table_rows(tables: dict) -> list[dict]:
    """``table.csv``: every aggregated result with the issue's columns first."""
    rows = []
    for part in ("oneshot", "retrain", "units"):
        for r in tables[part]:
            sparsity = r.get("sparsity", r.get("fraction_removed"))
            variant = {
                "oneshot": f"one-shot {r.get('allocation')}",
                "retrain": f"retrained {r.get('retrain_epochs')} epochs",
                "units": f"units removed, fine-tuned {r.get('finetune_epochs')} epochs",
            }[part]
            rows.append({"model": r["model"], "method": r["method"], "sparsity": sparsity,
                         "seeds": r["seeds"], "test_error_mean": r["test_error_mean"],
                         "test_error_std": r["test_error_std"], "part": part,
                         "variant": variant})  # fmt: skip
    return rows


def claims_summary(claims: list[dict]) -> list[dict]:
    """Per model, layer and sparsity: mean loss increases, how often each inequality held, the
    mean overlaps."""
    groups: dict[tuple, list[dict]] = {}
    for row in claims:
        groups.setdefault((row["model"], row["layer"], row["sparsity"]), []).append(row)
    out = []
    for (model, layer, s), group in groups.items():
        row = {"model": model, "layer": layer, "sparsity": s, "seeds": len(group)}
        for c in ("magnitude", "obd", "obs"):
            row[f"loss_increase_{c}"] = mean_sd([g[f"loss_increase_{c}"] for g in group], 4)
        for c in ("magnitude", "obd", "obs"):
            row[f"scoring_loss_increase_{c}"] = mean_sd(
                [g[f"scoring_loss_increase_{c}"] for g in group], 4
            )
        for c in ("magnitude", "obd", "obs"):
            row[f"test_error_{c}"] = mean_sd([g[f"test_error_{c}"] for g in group])
        row["mag_ge_obd"] = f"{sum(g['mag_ge_obd'] for g in group)}/{len(group)}"
        row["obd_ge_obs"] = f"{sum(g['obd_ge_obs'] for g in group)}/{len(group)}"
        for pair in ("magnitude_obd", "magnitude_obs", "obd_obs"):
            row[f"overlap_{pair}"] = mean_sd([g[f"overlap_{pair}"] for g in group])
        out.append(row)
    return out


def paper_rows(oneshot: list[dict], raw: list[dict]) -> list[dict]:
    """WoodFisher's published 95% global one-shot point on its MLP beside ours."""
    s = PAPER_POINT["sparsity"]
    ours = {r["method"]: r for r in oneshot if r["model"] == "mlp40"
            and r["allocation"] == "global" and r["sparsity"] == s}  # fmt: skip
    dense = list({r["seed"]: r["dense_accuracy"] for r in raw if r["model"] == "mlp40"}.values())
    if not ours:
        return []
    rows = [{"what": "dense", "paper_accuracy": PAPER_POINT["dense"],
             "our_accuracy": mean_sd(dense)}]  # fmt: skip
    for method in ("woodfisher", "diag-fisher", "magnitude", "obd"):
        r = ours.get(method)
        if r is not None:
            rows.append({"what": f"{method}, 95% one-shot global",
                         "paper_accuracy": PAPER_POINT.get(method, ""),
                         "our_accuracy": f"{r['test_accuracy_mean']:.2f} +- "
                                         f"{r['test_accuracy_std']:.2f}"})  # fmt: skip
    return rows


# ---- figures ----------------------------------------------------------------------------------


def figures(results: str | Path, out: str | Path) -> list[Path]:
    """One figure per model: test accuracy against sparsity of every criterion, one-shot without
    retraining, uniform and global; and the unit criteria against the fraction removed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(results) / "figures.json"
    if not path.exists():
        raise TopopruneError(f"{path} does not exist: run `topoprune study run saliency`")
    data = json.loads(path.read_text())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    models = sorted({r["model"] for r in data["oneshot"]})
    for model in models:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, allocation in zip(axes, ("uniform", "global"), strict=True):
            for method in CRITERIA:
                rows = sorted((r for r in data["oneshot"] if r["model"] == model
                               and r["allocation"] == allocation and r["method"] == method),
                              key=lambda r: r["sparsity"])  # fmt: skip
                if not rows:
                    continue
                x = [100 * r["sparsity"] for r in rows]
                y = np.array([r["test_accuracy_mean"] for r in rows])
                sd = np.array([r["test_accuracy_std"] for r in rows])
                color = f"C{CRITERIA.index(method)}"  # the same colour in both panels
                ax.plot(x, y, marker="o", label=method, color=color)
                ax.fill_between(x, y - sd, y + sd, alpha=0.15, color=color)
            if model == "mlp40" and allocation == "global":
                p = data["paper"]
                for method, marker in (("woodfisher", "*"), ("diag-fisher", "X")):
                    ax.scatter([100 * p["sparsity"]], [p[method]], marker=marker, s=120,
                               color="black", zorder=5, label=f"{method} (paper)")  # fmt: skip
            ax.set(title=f"{model}: one-shot, {allocation} sparsity, no retraining",
                   xlabel="sparsity %", ylabel="test accuracy %")  # fmt: skip
            ax.legend(fontsize=7)
        fig.tight_layout()
        target = out / f"oneshot-{model}.png"
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    if data["units"]:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for method in UNIT_METHODS:
            for epochs in sorted({r["finetune_epochs"] for r in data["units"]}):
                rows = sorted((r for r in data["units"] if r["method"] == method
                               and r["finetune_epochs"] == epochs),
                              key=lambda r: r["fraction_removed"])  # fmt: skip
                if rows:
                    ax.errorbar([100 * r["fraction_removed"] for r in rows],
                                [r["test_accuracy_mean"] for r in rows],
                                [r["test_accuracy_std"] for r in rows], marker="o",
                                linestyle="-" if epochs else "--",
                                color=f"C{UNIT_METHODS.index(method)}",
                                label=f"{method}, {epochs} ft epochs")  # fmt: skip
        ax.set(title=f"{data['units'][0]['model']}: hidden units removed",
               xlabel="units removed per hidden layer %", ylabel="test accuracy %")  # fmt: skip
        ax.legend(fontsize=6)
        fig.tight_layout()
        target = out / "units.png"
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    return written
