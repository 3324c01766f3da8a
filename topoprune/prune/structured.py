"""Structured pruning methods: whole filters (output channels or units) go, and the result is
compacted into a smaller dense model (:mod:`topoprune.prune.structure`).

A filter mask zeroes a filter's weights; its bias is zeroed and held at zero too, so that the
channel outputs exactly zero and :func:`~topoprune.prune.structure.compact` can remove it
without changing the model's outputs. The report gives the filters kept per layer and the
parameters of the compacted model, checked to compute the masked model's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.prune.allocation import per_layer
from topoprune.prune.method import Context, Method, PruneConfig, TrainConfig, hp
from topoprune.prune.methods import METHODS
from topoprune.prune.scoring import ScoreConfig, ScoreMethod


def dead_filters(module: nn.Module) -> torch.Tensor:
    """Boolean per output filter (unit): every weight of the filter is masked."""
    return module.weight_mask.reshape(module.weight_mask.shape[0], -1).eq(0).all(dim=1)


def zero_dead_biases(ctx: Context) -> None:
    """Zero the biases (and their optimizer state) of filters whose weights are all masked."""
    with torch.no_grad():
        for _, module in ctx.pruned_modules():
            if module.bias is None:
                continue
            dead = dead_filters(module)
            if dead.any():
                module.bias[dead] = 0
                if ctx.optimizer is not None:
                    for value in ctx.optimizer.state.get(module.bias, {}).values():
                        if isinstance(value, torch.Tensor) and value.shape == module.bias.shape:
                            value[dead] = 0


def _channel_groups_with_norms(ctx: Context) -> list[dict]:
    """``[{"producers": [...], "norms": [...]}]`` of the channel groups that have a BatchNorm
    (traced once per run, kept in the method state: plain data that survives a resume)."""
    cached = ctx.state.method_state.get("norm_groups")
    if cached is not None:
        return cached
    groups = []
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ctx.model.modules()):
        from topoprune.prune.structure import channel_groups

        inputs, _ = next(iter(ctx.scoring_batches(2)))
        groups = [{"producers": g.producers + g.passthrough, "norms": g.norms}
                  for g in channel_groups(ctx.model, inputs.to(ctx.device))
                  if g.norms and not g.frozen]  # fmt: skip
    ctx.state.method_state["norm_groups"] = groups
    return groups


def zero_dead_channels(ctx: Context) -> None:
    """:func:`zero_dead_biases`, and the BatchNorm scale and shift of channels whose every
    producing filter is masked, so that such a channel outputs exactly zero."""
    zero_dead_biases(ctx)
    if ctx.draw_batches is None:
        return
    modules = dict(ctx.model.named_modules())
    for group in _channel_groups_with_norms(ctx):
        producers = [modules[n] for n in group["producers"] if hasattr(modules[n], "weight_mask")]
        if len(producers) != len(group["producers"]):
            continue  # a producer that is not pruned keeps the channel alive
        dead = dead_filters(producers[0])
        for module in producers[1:]:
            dead = dead & dead_filters(module)
        if dead.any():
            _hold_norms(ctx.model, group["norms"], dead)


def compaction_report(ctx: Context) -> dict:
    """Filters kept per pruned layer, and the compacted model's size and agreement with the
    masked model on a scoring batch (``max_abs_difference``)."""
    from topoprune.prune.masks import strip_masks
    from topoprune.prune.structure import compact

    kept = {name: int((~dead_filters(m)).sum()) for name, m in ctx.pruned_modules()}
    report: dict = {"filters_kept": kept,
                    "filters": {name: int(m.weight_mask.shape[0])
                                for name, m in ctx.pruned_modules()}}  # fmt: skip
    if ctx.draw_batches is None:
        return report
    inputs, _ = next(iter(ctx.scoring_batches(8)))
    inputs = inputs.to(ctx.device)
    plain = strip_masks(ctx.model).eval()
    with torch.no_grad():
        expected = plain(inputs)
        try:
            small = compact(plain, inputs)
        except Exception as exc:  # a model the trace cannot handle: report, do not fail the run
            report["compact_error"] = f"{type(exc).__name__}: {exc}"
            return report
        report["params"] = sum(p.numel() for p in plain.parameters())
        report["params_compact"] = sum(p.numel() for p in small.parameters())
        report["max_abs_difference"] = float((small(inputs) - expected).abs().max())
    return report


def store_compaction(ctx: Context) -> None:
    """The ``on_end`` hook of the structured methods: :func:`compaction_report` into the state."""
    ctx.state.method_state["compaction"] = compaction_report(ctx)


def group_shrinkage(norms: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """The group soft-threshold factors ``max(0, 1 - threshold / ||w_g||)``: multiplying group
    ``g`` by its factor is the proximal step of ``threshold x ||w_g||`` (a group of norm at most
    ``threshold`` becomes exactly zero).

    Examples
    --------
    >>> group_shrinkage(torch.tensor([0.5, 2.0, 0.0]), 1.0)
    tensor([0.0000, 0.5000, 0.0000])
    """
    return (1 - threshold / norms.clamp(min=1e-30)).clamp(min=0)


def _then_zero_biases(hook):
    def after_step(ctx: Context) -> None:
        if hook is not None:
            hook(ctx)
        zero_dead_channels(ctx)

    return after_step


@dataclass(frozen=True)
class FilterL1Config(ScoreConfig):
    granularity: str = hp("what is removed: whole filters (output channels or units)", "filter",
                          choices=("filter",))  # fmt: skip
    allocation: str = hp("how sparsity is spread: per layer (Li et al.'s per-layer ratios)",
                         "layer", choices=("layer", "uniform"))  # fmt: skip


@METHODS.register("filter-l1")
class FilterL1(ScoreMethod):
    """Prune the filters with the smallest sum of absolute kernel weights in each layer, remove
    the next layer's matching kernels, retrain (Li et al. 2017)."""

    Config = FilterL1Config
    paper = "Li et al. 2017, Pruning filters for efficient ConvNets"

    def scores(self, ctx: Context) -> dict[str, torch.Tensor]:
        # summed over each filter by the filter granularity: Li et al.'s s_j = sum |K|
        return {n: (m.weight_orig.detach() * m.weight_mask).abs() for n, m in ctx.pruned_modules()}

    def prune_to(self, ctx: Context, schedule) -> None:
        super().prune_to(ctx, schedule)
        zero_dead_channels(ctx)

    def stages(self):
        stages = super().stages()
        for stage in stages[1:]:  # biases of removed filters stay zero after every step
            stage.after_step = _then_zero_biases(stage.after_step)
        stages[-1].on_end = store_compaction
        return stages

    def report(self, state) -> dict:
        return dict(state.method_state.get("compaction", {}))


@dataclass(frozen=True)
class SlimmingConfig(TrainConfig):
    epochs: int = hp("epochs of training with the l1 penalty on BatchNorm scales", 10, low=0)
    penalty: float = hp("lambda of the l1 penalty on the BatchNorm scales gamma", 1e-4, low=0)
    percent: float = hp("share of the channels (over every BatchNorm) pruned, smallest |gamma| "
                        "first", 0.5, low=0, high=1, high_open=True)  # fmt: skip
    finetune_epochs: int = hp("epochs of fine-tuning after pruning", 5, low=0)
    finetune_lr_factor: float = hp("fine-tuning learning rate = lr x this", 0.1, low=0,
                                   low_open=True)  # fmt: skip


@METHODS.register("slimming")
class Slimming(Method):
    """Network slimming (Liu et al. 2017): train with an l1 penalty on every BatchNorm scale,
    prune the channels of smallest |gamma| by one threshold over the whole network, fine-tune.

    A pruned channel's producing filters are masked and their biases, gamma and beta held at
    zero, so the channel outputs zero and is removed exactly by compaction. Channels coupled by
    a residual addition are ranked by their largest |gamma| and go together; each layer keeps at
    least its strongest channel (the paper's guard against removing a whole layer).
    """

    Config = SlimmingConfig
    paper = "Liu et al. 2017, Learning efficient convolutional networks through network slimming"
    architecture = "batchnorm"

    def _penalty(self, ctx: Context) -> torch.Tensor:
        norms = [m for m in ctx.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        total = sum(m.weight.abs().sum() for m in norms if m.weight is not None)
        return self.config.penalty * total

    def _prune(self, ctx: Context) -> None:
        from topoprune.prune.masks import apply_masks, current_masks
        from topoprune.prune.structure import channel_groups

        inputs, _ = next(iter(ctx.scoring_batches(2)))
        modules = dict(ctx.model.named_modules())
        groups = [g for g in channel_groups(ctx.model, inputs.to(ctx.device))
                  if g.norms and not g.frozen]  # fmt: skip
        if not groups:
            raise TopopruneError("slimming needs BatchNorm layers after prunable layers")
        strength = [torch.stack([modules[n].weight.detach().abs().cpu() for n in g.norms]).amax(0)
                    for g in groups]  # fmt: skip
        every = torch.cat(strength)
        count = int(self.config.percent * every.numel())
        threshold = every.sort().values[count - 1] if count else every.min() - 1
        masks = current_masks(ctx.model)
        pruned = {}
        for group, gamma in zip(groups, strength, strict=True):
            dead = gamma <= threshold
            dead[gamma.argmax()] = False  # a layer keeps its strongest channel
            pruned[tuple(group.norms)] = dead.nonzero().squeeze(1).tolist()
            for name in group.producers + group.passthrough:
                if name in masks:
                    masks[name][dead] = 0
        apply_masks(ctx.model, masks)
        ctx.state.method_state["slimming"] = {
            "threshold": float(threshold),
            "pruned": {",".join(norms): channels for norms, channels in pruned.items()},
            "groups": [
                {"norms": g.norms, "producers": g.producers + g.passthrough} for g in groups
            ],
        }
        self._hold(ctx)

    def _hold(self, ctx: Context) -> None:
        """Pruned channels' gamma and beta (and the producers' biases) stay zero."""
        state = ctx.state.method_state.get("slimming")
        if not state:
            return
        for group in state["groups"]:
            dead = state["pruned"][",".join(group["norms"])]
            if dead:
                _hold_norms(ctx.model, group["norms"], dead)
        zero_dead_biases(ctx)

    def stages(self):
        c = self.config
        return [
            c.stage("sparsify", c.epochs, loss_term=self._penalty),
            c.stage("finetune", c.finetune_epochs, lr=c.lr * c.finetune_lr_factor,
                    on_start=self._prune, after_step=self._hold,
                    on_end=store_compaction),
        ]  # fmt: skip

    def report(self, state) -> dict:
        slimming = state.method_state.get("slimming", {})
        return {"threshold": slimming.get("threshold"),
                "channels_pruned": {k: len(v) for k, v in slimming.get("pruned", {}).items()},
                **state.method_state.get("compaction", {})}  # fmt: skip


@dataclass(frozen=True)
class TaylorFMConfig(PruneConfig):
    epochs: int = hp("epochs of the pruning stage (removals every --prune-every steps, then "
                     "fine-tuning)", 5, low=1)  # fmt: skip
    prune_every: int = hp("optimisation steps of fine-tuning between removals", 10, low=1)
    maps_per_removal: int = hp("feature maps removed at each removal", 1, low=1)
    budget: float = hp("stop removing when the compacted model has at most this share of the "
                       "original parameters", 0.5, low=0, high=1, low_open=True)  # fmt: skip
    scoring_examples: int = hp("training examples the Taylor criterion is averaged over", 256,
                               low=1)  # fmt: skip


@METHODS.register("taylor-fm")
class TaylorFeatureMaps(Method):
    """Molchanov et al. 2017: remove the convolutional feature maps of least first-order Taylor
    criterion ``|mean(z dL/dz)|`` (normalised per layer), a few at a time with fine-tuning
    between, until the compacted model is within a parameter budget."""

    Config = TaylorFMConfig
    paper = (
        "Molchanov et al. 2017, Pruning convolutional neural networks for resource "
        "efficient inference"
    )
    contract_overrides: ClassVar[dict] = {"prune_every": 1, "scoring_examples": 16}

    def _convs(self, ctx: Context) -> list[str]:
        return [n for n, m in ctx.pruned_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]

    def _maybe_remove(self, ctx: Context) -> None:
        c = self.config
        if ctx.step_in_stage % c.prune_every or ctx.state.method_state.get("done"):
            return
        from topoprune.prune.masks import apply_masks, current_masks
        from topoprune.prune.saliency import unit_taylor_scores

        names = self._convs(ctx)
        if not names:
            raise TopopruneError("taylor-fm prunes feature maps: the model has no pruned conv")
        batches = [(x.to(ctx.device), y.to(ctx.device))
                   for x, y in ctx.scoring_batches(c.scoring_examples)]  # fmt: skip
        scores = unit_taylor_scores(ctx.model, names, batches, ctx.loss_fn)
        modules = dict(ctx.pruned_modules())
        candidates = []
        for name in names:
            dead = dead_filters(modules[name])
            score = scores[name] / max(float(scores[name].norm()), 1e-12)  # per-layer L2
            alive = (~dead).nonzero().squeeze(1).tolist()
            if len(alive) > 1:  # a layer keeps at least one map
                candidates += [(float(score[j]), name, j) for j in alive]
        masks = current_masks(ctx.model)
        removed = ctx.state.method_state.setdefault("removed", [])
        for _, name, j in sorted(candidates)[: c.maps_per_removal]:
            masks[name][j] = 0
            removed.append([name, j, ctx.state.step])
        apply_masks(ctx.model, masks)
        zero_dead_channels(ctx)
        report = compaction_report(ctx)
        if "compact_error" in report:
            raise TopopruneError(f"taylor-fm cannot measure its budget: {report['compact_error']}")
        share = report["params_compact"] / max(report["params"], 1)
        ctx.state.method_state["share"] = share
        if share <= c.budget or not candidates:
            ctx.state.method_state["done"] = True

    def _step(self, ctx: Context) -> None:
        self._maybe_remove(ctx)
        zero_dead_channels(ctx)

    def stages(self):
        c = self.config
        stages = [c.stage("dense", c.dense_epochs)] if c.dense_epochs else []
        stages.append(c.stage("taylor", c.epochs, after_step=self._step,
                              on_end=store_compaction))  # fmt: skip
        return stages

    def report(self, state) -> dict:
        m = state.method_state
        return {"maps_removed": len(m.get("removed", [])), "budget_reached": bool(m.get("done")),
                **m.get("compaction", {})}  # fmt: skip


@dataclass(frozen=True)
class ChannelLassoConfig(PruneConfig):
    dense_epochs: int = hp("epochs of dense training before pruning (0: start from --init)", 0,
                           low=0)  # fmt: skip
    sparsity: tuple[float, ...] = hp("share of each prunable layer's input channels removed "
                                     "(one value: every layer)", (0.5,), low=0, high=1,
                                     high_open=True)  # fmt: skip
    selection: str = hp("lasso (He et al.'s channel selection on the layer's output) or "
                        "weight-norm (largest ||W_i||_F: the matrix-approximation baseline)",
                        "lasso", choices=("lasso", "weight-norm"))  # fmt: skip
    reconstruct: bool = hp("refit the kept channels' weights by least squares to the original "
                           "outputs", True)  # fmt: skip
    scoring_examples: int = hp("training examples whose input volumes are sampled", 128, low=1)
    positions: int = hp("positions sampled per example (the paper: 10)", 10, low=1)
    finetune_epochs: int = hp("epochs of fine-tuning after pruning", 1, low=0)
    finetune_lr_factor: float = hp("fine-tuning learning rate = lr x this", 0.1, low=0,
                                   low_open=True)  # fmt: skip


def select_channels_lasso(blocks: list[np.ndarray], target: np.ndarray, keep: int) -> list[int]:
    """He et al. 2017, eq. 1: the ``keep`` channels whose contributions ``blocks[i]`` (each
    ``(N, n)``, from unit-norm filters) best reproduce ``target`` under an l1 penalty on their
    coefficients beta: the first of a decreasing path of penalties that selects at least
    ``keep`` channels, its ``keep`` largest |beta|."""
    from topoprune.prune.regression import lasso_path

    design = np.stack([b.reshape(-1) for b in blocks], axis=1)
    y = target.reshape(-1)
    top = np.abs(design.T @ y).max() / y.size  # the smallest penalty that selects nothing
    beta = np.zeros(design.shape[1])
    for alphas in np.array_split(top * np.geomspace(1.0, 1e-6, 60), 6):
        for beta in lasso_path(design, y, alphas, max_iter=2000, tol=1e-8):
            if np.count_nonzero(beta) >= keep:
                break
        if np.count_nonzero(beta) >= keep:
            break
    # the keep largest |beta|; among equal ones (e.g. never selected, as collinear channels
    # can be) the larger contribution first
    sizes = np.linalg.norm(design, axis=0)
    order = np.lexsort((-sizes, -np.abs(beta)))
    return sorted(order[:keep].tolist())


@METHODS.register("channel-lasso")
class ChannelLasso(Method):
    """Channel pruning by LASSO regression and least-squares reconstruction (He et al. 2017):
    per convolution, the input channels whose removal the layer's output misses least go, with
    the producing filters of the previous layer; the kept weights are refit to the original
    model's outputs."""

    Config = ChannelLassoConfig
    paper = "He et al. 2017, Channel pruning for accelerating very deep neural networks"
    contract_overrides: ClassVar[dict] = {"scoring_examples": 16, "positions": 4}

    def _prune(self, ctx: Context) -> None:
        from topoprune.prune.curvature import layer_inputs
        from topoprune.prune.masks import apply_masks, current_masks
        from topoprune.prune.structure import channel_groups

        c = self.config
        batches = [(x.to(ctx.device), y.to(ctx.device))
                   for x, y in ctx.scoring_batches(c.scoring_examples)]  # fmt: skip
        modules = dict(ctx.model.named_modules())
        masked = dict(ctx.pruned_modules())
        targets = []
        for group in channel_groups(ctx.model, batches[0][0]):
            convs = [(n, f) for n, f in group.consumers if f == 1 and n in masked
                     and isinstance(modules[n], nn.Conv2d)]  # fmt: skip
            if group.frozen or len(convs) != 1 or len(group.consumers) != 1:
                continue
            targets.append((convs[0][0], group))
        if not targets:
            raise TopopruneError("channel-lasso found no convolution whose input channels can go")
        fractions = dict(zip([t for t, _ in targets],
                             per_layer(c.sparsity, [t for t, _ in targets], "sparsity").values(),
                             strict=True))  # fmt: skip
        original = {n: m.weight_orig.detach().clone() * m.weight_mask for n, m in masked.items()}
        from topoprune.prune.masks import strip_masks

        unpruned = strip_masks(ctx.model)  # Y comes from here: later layers make up for earlier
        generator = ctx.generator(1)
        report = {}
        for name, group in targets:  # forward order: later layers see earlier prunings
            conv = modules[name]
            patches = layer_inputs(ctx.model, [name], batches)[name]
            rows = torch.randperm(patches.shape[0], generator=generator)[
                : c.positions * c.scoring_examples
            ]
            x = patches[rows].double().cpu().numpy()
            weight = original[name].double().cpu().numpy()
            out, channels = weight.shape[:2]
            flat = weight.reshape(out, -1)
            # the original model's output of this layer on the same examples and positions
            x_original = layer_inputs(unpruned, [name], batches)[name][rows]
            y = x_original.double().cpu().numpy() @ flat.T
            keep = max(1, round((1 - fractions[name]) * channels))
            per = flat.shape[1] // channels
            if c.selection == "lasso":
                blocks = []
                for i in range(channels):
                    w_i = flat[:, i * per : (i + 1) * per]
                    norm = np.linalg.norm(w_i) or 1.0  # ||W_i||_F = 1, as the paper constrains
                    blocks.append(x[:, i * per : (i + 1) * per] @ (w_i / norm).T)
                kept = select_channels_lasso(blocks, y, keep)
            else:
                norms = np.linalg.norm(weight.reshape(out, channels, -1), axis=(0, 2))
                kept = sorted(np.argsort(-norms, kind="stable")[:keep].tolist())
            columns = np.concatenate([np.arange(i * per, (i + 1) * per) for i in kept])
            new = np.zeros_like(flat)
            if c.reconstruct:
                new[:, columns] = np.linalg.lstsq(x[:, columns], y, rcond=None)[0].T
            else:
                new[:, columns] = flat[:, columns]
            dead = torch.ones(channels, dtype=torch.bool)
            dead[kept] = False
            masks = current_masks(ctx.model)
            masks[name][:, dead] = 0
            for producer in group.producers + group.passthrough:
                if producer in masks:
                    masks[producer][dead] = 0
            with torch.no_grad():
                conv.weight_orig.copy_(torch.from_numpy(new.reshape(weight.shape)))
            apply_masks(ctx.model, masks)
            _hold_norms(ctx.model, group.norms, dead)
            report[name] = {"channels": channels, "kept": kept}
        zero_dead_biases(ctx)
        ctx.state.method_state["channels"] = report
        ctx.state.method_state["norms"] = {",".join(g.norms): report[n]["kept"]
                                           for n, g in targets if g.norms}  # fmt: skip

    def _hold(self, ctx: Context) -> None:
        modules = dict(ctx.model.named_modules())
        for norms, kept in ctx.state.method_state.get("norms", {}).items():
            names = norms.split(",")
            dead = torch.ones(modules[names[0]].num_features, dtype=torch.bool)
            dead[kept] = False
            _hold_norms(ctx.model, names, dead)
        zero_dead_biases(ctx)

    def stages(self):
        c = self.config
        stages = [c.stage("dense", c.dense_epochs)] if c.dense_epochs else []
        stages.append(c.stage("finetune", c.finetune_epochs, lr=c.lr * c.finetune_lr_factor,
                              on_start=self._prune, after_step=self._hold,
                              on_end=store_compaction))  # fmt: skip
        return stages

    def report(self, state) -> dict:
        channels = state.method_state.get("channels", {})
        return {"channels_kept": {n: len(r["kept"]) for n, r in channels.items()},
                **state.method_state.get("compaction", {})}  # fmt: skip


def _hold_norms(model: nn.Module, names: list[str], dead: torch.Tensor | list[int]) -> None:
    """Zero the BatchNorm scale and shift of removed channels."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in names:
            if modules[name].affine:
                modules[name].weight[dead] = 0
                modules[name].bias[dead] = 0


SSL_GROUPS = ("filters", "channels", "shapes", "depth")


@dataclass(frozen=True)
class SSLConfig(TrainConfig):
    epochs: int = hp("epochs of training with the group lasso", 10, low=0)
    penalty: float = hp("lambda of the group lasso (each group weighted by sqrt(its size))",
                        1e-3, low=0)  # fmt: skip
    groups: tuple[str, ...] = hp("group kinds: filters (output units), channels (input units), "
                                 "shapes (a kernel position across filters), depth (both "
                                 "convolutions of a ResidualCNN block: a zero block is removed, "
                                 "its shortcut stays)", ("filters", "channels"))  # fmt: skip
    finetune_epochs: int = hp("epochs of fine-tuning with the zeroed groups removed", 2, low=0)
    finetune_lr_factor: float = hp("fine-tuning learning rate = lr x this", 0.1, low=0,
                                   low_open=True)  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [g for g in self.groups if g not in SSL_GROUPS]
        if unknown or not self.groups:
            raise TopopruneError(f"groups must be among {', '.join(SSL_GROUPS)}, got {unknown}")


def _group_views(weight: torch.Tensor, kind: str) -> torch.Tensor:
    """``weight`` as ``(groups, members)`` for a group kind (a view where possible)."""
    if kind == "filters":
        return weight.reshape(weight.shape[0], -1)
    if kind == "channels":
        return weight.transpose(0, 1).reshape(weight.shape[1], -1)
    return weight.reshape(weight.shape[0], -1).transpose(0, 1)  # shapes: (in x k x k, filters)


@METHODS.register("ssl")
class StructuredSparsityLearning(Method):
    """Structured sparsity learning (Wen et al. 2016): train with a group lasso over filters,
    channels and/or filter shapes, applied as an exact proximal step after every optimizer step
    (groups shrink to exactly zero), then remove the zero groups, fine-tune and compact.

    A zero channel (input unit) of a layer also removes the previous layer's filter that feeds
    it, when that filter feeds nothing else, so that compaction takes both away.

    The ``depth`` groups (Wen et al.'s depth-wise sparsity) act on a
    :class:`~topoprune.models.residual.ResidualCNN`: one group per residual block, the weights of
    both its convolutions. A block whose group reaches zero is masked whole and marked dropped
    (it computes the identity through its shortcut, its BatchNorm no longer added), and the
    report's ``depth`` entry gives the model without those blocks
    (:func:`~topoprune.models.residual.drop_blocks`): its parameters and its largest output
    difference from the masked model.
    """

    Config = SSLConfig
    paper = "Wen et al. 2016, Learning structured sparsity in deep neural networks"
    contract_overrides: ClassVar[dict] = {"penalty": 50.0}

    def _proximal(self, ctx: Context) -> None:
        """``w_g <- max(0, 1 - lr lambda sqrt(|g|) / ||w_g||) w_g`` for every group."""
        with torch.no_grad():
            for _, module in ctx.pruned_modules():
                weight = module.weight_orig
                for kind in self.config.groups:
                    if kind == "depth" or (kind == "shapes" and weight.dim() == 2):
                        continue  # depth groups span layers; a linear layer's shape is a weight
                    groups = _group_views(weight * module.weight_mask, kind)
                    t = ctx.lr * self.config.penalty * groups.shape[1] ** 0.5
                    scale = group_shrinkage(groups.norm(dim=1, keepdim=True), t)
                    shrunk = (groups * scale).reshape(_group_views(weight, kind).shape)
                    if kind == "filters":
                        weight.copy_(shrunk.reshape(weight.shape))
                    elif kind == "channels":
                        rest = (weight.shape[0], *tuple(weight.shape[2:]))
                        weight.copy_(shrunk.reshape(weight.shape[1], *rest).transpose(0, 1))
                    else:
                        weight.copy_(shrunk.transpose(0, 1).reshape(weight.shape))
            if "depth" in self.config.groups:
                self._proximal_depth(ctx)

    def _blocks(self, ctx: Context):
        from topoprune.prune.epsilon_resnet import residual_model

        return residual_model(ctx.model, "ssl --groups depth")

    def _proximal_depth(self, ctx: Context) -> None:
        """The same soft thresholding with one group per residual block: both convolutions."""
        for block in self._blocks(ctx).blocks:
            convs = (block.conv1, block.conv2)
            weights = [m.weight_orig * m.weight_mask for m in convs]
            size = sum(w.numel() for w in weights)
            norm = torch.sqrt(sum(w.pow(2).sum() for w in weights))
            t = ctx.lr * self.config.penalty * size**0.5
            scale = group_shrinkage(norm, t)
            for module, weight in zip(convs, weights, strict=True):
                module.weight_orig.copy_(weight * scale)

    def _check(self, ctx: Context) -> None:
        if "depth" in self.config.groups:
            self._blocks(ctx)  # a model without residual blocks fails before training

    def _remove_zero_groups(self, ctx: Context) -> None:
        from topoprune.prune.masks import apply_masks, current_masks
        from topoprune.prune.structure import channel_groups

        masks = current_masks(ctx.model)
        modules = dict(ctx.pruned_modules())
        for name, module in modules.items():
            masks[name] = masks[name] * (module.weight_orig.detach() != 0)
        inputs, _ = next(iter(ctx.scoring_batches(2)))
        removed = {}
        for group in channel_groups(ctx.model, inputs.to(ctx.device)):
            consumers = [(n, f) for n, f in group.consumers if n in masks]
            if group.frozen or len(consumers) != 1 or len(group.consumers) != 1:
                continue
            name, features = consumers[0]
            mask = masks[name]
            if mask.shape[1] != group.size * (features if mask.dim() == 2 else 1):
                continue  # a grouped convolution reads a share of the channels
            # channel c's inputs to the consumer: its kernels (a convolution) or its `features`
            # flattened inputs c * features ... (a linear layer after a flatten)
            per_channel = mask.reshape(mask.shape[0], group.size, -1).transpose(0, 1)
            unused = per_channel.reshape(group.size, -1).eq(0).all(1)
            for producer in group.producers:
                if producer in masks and unused.any():
                    masks[producer][unused] = 0
            removed[name] = int(unused.sum())
        apply_masks(ctx.model, masks)
        if "depth" in self.config.groups:
            model = self._blocks(ctx)
            zero = [i for i, b in enumerate(model.blocks)
                    if not (b.conv1.weight_mask.any() or b.conv2.weight_mask.any())]  # fmt: skip
            model.set_dropped(sorted(set(model.dropped) | set(zero)))
        zero_dead_channels(ctx)
        ctx.state.method_state["unused_inputs"] = removed

    def _report(self, ctx: Context) -> None:
        store_compaction(ctx)
        if "depth" in self.config.groups:
            from topoprune.prune.epsilon_resnet import depth_report

            ctx.state.method_state["depth"] = depth_report(ctx, self._blocks(ctx))

    def stages(self):
        c = self.config
        return [
            c.stage("ssl", c.epochs, on_start=self._check, after_step=self._proximal),
            c.stage("remove", 0, on_start=self._remove_zero_groups),
            c.stage("finetune", c.finetune_epochs, lr=c.lr * c.finetune_lr_factor,
                    after_step=zero_dead_channels,
                    on_end=self._report),
        ]  # fmt: skip

    def report(self, state) -> dict:
        depth = state.method_state.get("depth")
        return {"input_channels_unused": state.method_state.get("unused_inputs", {}),
                **state.method_state.get("compaction", {}),
                **({"depth": depth} if depth is not None else {})}  # fmt: skip


@dataclass(frozen=True)
class LayerFoldConfig(TrainConfig):
    epochs: int = hp("epochs of training with the penalty pulling PReLU slopes to 1", 10, low=0)
    penalty: float = hp("lambda of the penalty sum (1 - slope)^2 over every PReLU", 1e-2, low=0)
    tolerance: float = hp("a PReLU whose slopes are all within this of 1 becomes the identity",
                          0.05, low=0)  # fmt: skip
    finetune_epochs: int = hp("epochs of fine-tuning with the folded activations at 1", 2, low=0)
    finetune_lr_factor: float = hp("fine-tuning learning rate = lr x this", 0.1, low=0,
                                   low_open=True)  # fmt: skip


@METHODS.register("layer-fold")
class LayerFold(Method):
    """Layer folding (the seed lecture's layer collapse): a penalty drives each PReLU's slopes
    towards 1; activations within ``--tolerance`` become exactly the identity (held there while
    fine-tuning), and the layers around them merge into one (:func:`topoprune.prune.folding.fold`:
    exact for linear layers and stride-1 unpadded convolutions). No weight is pruned."""

    Config = LayerFoldConfig
    paper = "layer folding through PReLU slopes (seed lecture: layer collapse)"

    @staticmethod
    def _prelus(model: nn.Module) -> list[tuple[str, nn.PReLU]]:
        return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.PReLU)]

    def _penalty(self, ctx: Context) -> torch.Tensor:
        terms = [((m.weight - 1) ** 2).sum() for _, m in self._prelus(ctx.model)]
        return self.config.penalty * sum(terms) if terms else torch.zeros((), device=ctx.device)

    def _snap(self, ctx: Context) -> None:
        folded = []
        with torch.no_grad():
            for name, module in self._prelus(ctx.model):
                if (module.weight - 1).abs().max() <= self.config.tolerance:
                    module.weight.fill_(1.0)
                    folded.append(name)
        ctx.state.method_state["folded"] = folded

    def _hold(self, ctx: Context) -> None:
        modules = dict(ctx.model.named_modules())
        with torch.no_grad():
            for name in ctx.state.method_state.get("folded", []):
                modules[name].weight.fill_(1.0)

    def _report(self, ctx: Context) -> None:
        from topoprune.prune.folding import fold
        from topoprune.prune.masks import strip_masks

        report: dict = {"folded": list(ctx.state.method_state.get("folded", []))}
        plain = strip_masks(ctx.model).eval()
        if isinstance(plain, nn.Sequential) and ctx.draw_batches is not None:
            inputs, _ = next(iter(ctx.scoring_batches(8)))
            inputs = inputs.to(ctx.device)
            merged, count = fold(plain)
            with torch.no_grad():
                difference = float((merged(inputs) - plain(inputs)).abs().max())
            report.update({
                "weight_layers": sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in plain),
                "weight_layers_folded": sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in merged),
                "params": sum(p.numel() for p in plain.parameters()),
                "params_folded": sum(p.numel() for p in merged.parameters()),
                "max_abs_difference": difference, "activations_folded": count,
            })  # fmt: skip
        ctx.state.method_state["fold_report"] = report

    def stages(self):
        c = self.config
        return [
            c.stage("penalised", c.epochs, loss_term=self._penalty),
            c.stage("finetune", c.finetune_epochs, lr=c.lr * c.finetune_lr_factor,
                    on_start=self._snap, after_step=self._hold, on_end=self._report),
        ]  # fmt: skip

    def target_kept(self) -> dict[str, float]:
        return dict.fromkeys(self.names, 1.0)  # folding removes layers, not weights

    def report(self, state) -> dict:
        return dict(state.method_state.get("fold_report", {}))
