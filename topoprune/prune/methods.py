"""The registry of pruning methods. Each is a frozen dataclass of hyper-parameters (from which the
CLI flags are generated) and a few lines over the shared machinery of :mod:`topoprune.prune.method`
(stages and hooks) and :mod:`topoprune.prune.scoring` (scores to masks)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from topoprune.errors import TopopruneError
from topoprune.prune.allocation import magnitude_masks_by_quality, per_layer, random_masks
from topoprune.prune.masks import apply_masks, current_masks, rescale_to_kept_fan_in
from topoprune.prune.method import (
    Context,
    Method,
    PruneConfig,
    Stage,
    TrainConfig,
    hp,
    sparse_init_flag,
)
from topoprune.prune.scoring import ScoreConfig, ScoreMethod
from topoprune.registry import Registry

METHODS: Registry[type[Method]] = Registry("pruning method")


@dataclass(frozen=True)
class DenseConfig(TrainConfig):
    epochs: int = hp("epochs of dense training", 20, low=0)


@METHODS.register("dense")
class Dense(Method):
    """No pruning: the dense model that pruning methods start from (``--init``)."""

    Config = DenseConfig
    paper = "-"

    def stages(self) -> list[Stage]:
        return [self.config.stage("dense", self.config.epochs)]

    def target_kept(self) -> dict[str, float]:
        return dict.fromkeys(self.names, 1.0)


@dataclass(frozen=True)
class MagnitudeConfig(ScoreConfig):
    quality: tuple[float, ...] = hp(
        "prune below quality x std of the layer's surviving weights (overrides --sparsity)",
        (),
        low=0,
    )


@METHODS.register("magnitude")
class Magnitude(ScoreMethod):
    """Train, prune the smallest-magnitude weights, retrain; iterated or gradual."""

    Config = MagnitudeConfig
    paper = "Han et al. 2015, Learning both weights and connections for efficient neural networks"

    def __init__(self, config: MagnitudeConfig, names, seed: int) -> None:
        super().__init__(config, names, seed)
        self.quality = per_layer(config.quality, self.names, "quality") if config.quality else None

    def scores(self, ctx: Context) -> dict[str, torch.Tensor]:
        return {n: (m.weight_orig.detach() * m.weight_mask).abs() for n, m in ctx.pruned_modules()}

    def prune_to(self, ctx: Context, schedule) -> None:
        if self.quality is None:
            return super().prune_to(ctx, schedule)
        weights = {n: m.weight_orig.detach() * m.weight_mask for n, m in ctx.pruned_modules()}
        apply_masks(
            ctx.model, magnitude_masks_by_quality(weights, current_masks(ctx.model), self.quality)
        )

    def target_kept(self) -> dict[str, float] | None:
        return None if self.quality is not None else super().target_kept()


@dataclass(frozen=True)
class DNSConfig(PruneConfig):
    dense_epochs: int = hp("epochs of dense training before surgery", 5, low=0)
    epochs: int = hp("epochs of training with surgery", 20, low=0)
    c: tuple[float, ...] = hp("threshold factor per layer: t = mean|w| + c std|w|", (1.0,))
    gamma: float = hp("mask-update probability (1 + gamma iter)^(-power)", 1e-4, low=0)
    power: float = hp("see --gamma", 1.0, low=0)
    iter_stop: int = hp("no mask updates after this many surgery steps", 20000, low=0)


@METHODS.register("dns")
class DynamicNetworkSurgery(Method):
    """Prune |w| < a, splice back |w| >= b, while every weight keeps learning."""

    Config = DNSConfig
    paper = "Guo et al. 2016, Dynamic network surgery for efficient DNNs"

    def __init__(self, config: DNSConfig, names, seed: int) -> None:
        super().__init__(config, names, seed)
        self.c = per_layer(config.c, self.names, "c")

    def _start(self, ctx: Context) -> None:
        a, b = {}, {}
        for name, module in ctx.pruned_modules():
            magnitude = module.weight_orig.detach().abs()
            threshold = max(float(magnitude.mean() + self.c[name] * magnitude.std()), 0.0)
            a[name], b[name] = 0.9 * threshold, 1.1 * threshold
        ctx.state.method_state.update({"a": a, "b": b, "start_step": ctx.state.step})
        self._update(ctx)

    @torch.no_grad()
    def _update(self, ctx: Context) -> None:
        a, b = ctx.state.method_state["a"], ctx.state.method_state["b"]
        for name, module in ctx.pruned_modules():
            magnitude, mask = module.weight_orig.abs(), module.weight_mask
            spliced = torch.where(magnitude >= b[name], torch.ones_like(mask), mask)
            mask.copy_(torch.where(magnitude < a[name], torch.zeros_like(mask), spliced))

    def _step(self, ctx: Context) -> None:
        local = ctx.state.step - ctx.state.method_state["start_step"]
        if local >= self.config.iter_stop:
            return
        probability = (1 + self.config.gamma * local) ** (-self.config.power)
        # one draw per step from (seed, step): the same decisions after a resume
        if torch.rand(1, generator=ctx.generator()).item() < probability:
            self._update(ctx)

    def stages(self) -> list[Stage]:
        c = self.config
        surgery = c.stage("surgery", c.epochs, on_start=self._start, after_step=self._step)
        surgery.straight_through = True
        return [c.stage("dense", c.dense_epochs), surgery]


@dataclass(frozen=True)
class RandomConfig(PruneConfig):
    kept: tuple[float, ...] = hp(
        "kept fraction per layer (one value: every layer)", (0.1,), low=0, high=1, low_open=True
    )
    like: str = hp("copy the per-layer kept fractions of this checkpoint", "")
    dense_epochs: int = hp("epochs of dense training before masking (0: from scratch)", 0, low=0)
    epochs: int = hp("epochs of training with the random masks", 20, low=0)
    sparse_init: bool = sparse_init_flag()


@METHODS.register("random")
class RandomMasks(Method):
    """The baseline: random masks with given (or another run's) per-layer kept fractions."""

    Config = RandomConfig
    paper = "the random baseline (e.g. Lu and Kwok 2018; Frankle and Carbin 2019)"

    def __init__(self, config: RandomConfig, names, seed: int) -> None:
        super().__init__(config, names, seed)
        if config.like:
            from topoprune.io import load_network

            other = load_network(config.like)
            fractions = {
                layer.name.removesuffix(".weight"): layer.density for layer in other.layers
            }
            missing = [n for n in self.names if n not in fractions]
            if missing:
                raise TopopruneError(
                    f"{config.like} has no layers {', '.join(missing)}: it is another architecture"
                )
            self.kept = {n: fractions[n] for n in self.names}
        else:
            self.kept = per_layer(config.kept, self.names, "kept")

    def _mask(self, ctx: Context) -> None:
        shapes = {name: m.weight_mask.shape for name, m in ctx.pruned_modules()}
        generator = torch.Generator().manual_seed(self.seed + 7919)
        apply_masks(ctx.model, random_masks(shapes, self.kept, generator))
        if self.config.sparse_init:
            rescale_to_kept_fan_in(ctx.model)

    def stages(self) -> list[Stage]:
        c = self.config
        masked = c.stage("random", c.epochs, on_start=self._mask)
        return [c.stage("dense", c.dense_epochs), masked] if c.dense_epochs else [masked]

    def target_kept(self) -> dict[str, float]:
        return dict(self.kept)


@dataclass(frozen=True)
class FixedMasksConfig(TrainConfig):
    masks: str = hp("checkpoint whose masks are trained (empty: the masks the model has, as "
                    "given by --init)", "")  # fmt: skip
    snapshot: str = hp("that checkpoint's mask snapshot: a stage name, STAGE/epochN or stepN "
                       "(empty: its final masks)", "")  # fmt: skip
    epochs: int = hp("epochs of training with the fixed masks", 20, low=0)
    sparse_init: bool = sparse_init_flag()


@METHODS.register("fixed-masks")
class FixedMasks(Method):
    """Train given masks from this run's initialisation (its seed): a lottery ticket's mask from
    a new initialisation (Frankle and Carbin's random re-initialisation control), or any mask
    from scratch."""

    Config = FixedMasksConfig
    paper = "the re-initialisation control of Frankle and Carbin 2019"

    def _install(self, ctx: Context) -> None:
        if self.config.masks:
            modules = dict(ctx.pruned_modules())
            apply_masks(ctx.model, checkpoint_masks(self.config.masks, self.config.snapshot,
                                                    modules))  # fmt: skip
        if self.config.sparse_init:
            rescale_to_kept_fan_in(ctx.model)

    def stages(self) -> list[Stage]:
        return [self.config.stage("fixed", self.config.epochs, on_start=self._install)]

    def target_kept(self) -> dict[str, float] | None:
        return None  # whatever the given masks keep


def checkpoint_masks(path: str, snapshot: str, modules: dict) -> dict[str, torch.Tensor]:
    """The masks a checkpoint holds (its final ones, or the mask snapshot ``snapshot``) for each
    of ``modules`` (name -> masked module), shaped as the module's mask."""
    from topoprune.io import load_network

    network = load_network(path, snapshot=snapshot or None, keep_weights=False)
    found = {layer.name.removesuffix(".weight"): layer.mask for layer in network.layers}
    missing = [n for n in modules if n not in found]
    if missing:
        raise TopopruneError(
            f"{path} has no masks for layers {', '.join(missing)}: it is another architecture"
        )
    masks = {}
    for name, module in modules.items():
        mask = torch.as_tensor(found[name])
        if mask.numel() != module.weight_mask.numel():
            raise TopopruneError(
                f"{path}: layer {name} has {mask.numel()} mask entries, the model "
                f"{module.weight_mask.numel()}"
            )
        masks[name] = mask.reshape(module.weight_mask.shape)
    return masks
