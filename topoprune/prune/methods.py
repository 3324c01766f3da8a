"""The registry of pruning methods. Each is a frozen dataclass of hyper-parameters (from which
the CLI flags are generated) and a few lines that turn it into training stages."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.prune.allocation import (
    check_fraction,
    magnitude_masks_by_quality,
    magnitude_masks_by_sparsity,
    per_layer,
    random_masks,
)
from topoprune.prune.masks import apply_masks, current_masks, masked_modules
from topoprune.registry import Registry
from topoprune.train.engine import Stage, TrainingState

METHODS: Registry[type] = Registry("pruning method")


def _help(text: str, default=None, **kwargs):
    if isinstance(default, tuple | list):
        return field(default=tuple(default), metadata={"help": text}, **kwargs)
    return field(default=default, metadata={"help": text}, **kwargs)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight_orig.detach() * m.weight_mask for name, m in masked_modules(model)}


SCHEDULES = ("constant", "cosine")


def _schedule_help():
    return _help(
        "learning rate within each stage: 'constant' or 'cosine' (decays to 0)", "constant"
    )


def _lr_end(config) -> float | None:
    """Where each stage's learning rate ends: 0 for the cosine schedule, None for constant."""
    return 0.0 if config.schedule == "cosine" else None


def _check_common(config) -> None:
    if config.schedule not in SCHEDULES:
        raise TopopruneError(
            f"schedule must be one of {', '.join(SCHEDULES)}, got {config.schedule!r}"
        )
    if config.lr <= 0:
        raise TopopruneError(f"learning rate must be > 0, got {config.lr:g}")
    if config.weight_decay < 0:
        raise TopopruneError(f"weight decay must be >= 0, got {config.weight_decay:g}")


@dataclass(frozen=True)
class DenseConfig:
    epochs: int = _help("epochs of dense training", 20)
    lr: float = _help("learning rate", 0.01)
    weight_decay: float = _help("L2 weight decay", 5e-4)
    schedule: str = _schedule_help()


@METHODS.register("dense")
class Dense:
    """No pruning: the dense model that pruning methods start from (``--init``)."""

    Config = DenseConfig

    def __init__(self, config: DenseConfig, names: list[str], seed: int) -> None:
        _check_common(config)
        self.config = config

    def stages(self) -> list[Stage]:
        c = self.config
        return [Stage("dense", c.epochs, c.lr, c.weight_decay, lr_end=_lr_end(c))]


@dataclass(frozen=True)
class MagnitudeConfig:
    dense_epochs: int = _help("epochs of dense training before pruning", 10)
    lr: float = _help("learning rate of dense training", 0.01)
    weight_decay: float = _help("L2 weight decay (dense training and retraining)", 5e-4)
    iterations: int = _help("prune-retrain iterations (sparsity grows geometrically)", 1)
    retrain_epochs: int = _help("epochs of retraining after each pruning", 10)
    retrain_lr_factor: float = _help("retraining learning rate = lr x this (0.1: LeNets)", 0.1)
    sparsity: tuple[float, ...] = _help(
        "target sparsity per layer (one value: every layer)", (0.9,)
    )
    quality: tuple[float, ...] = _help(
        "prune below quality x std of the layer's weights (overrides --sparsity)", ()
    )
    allocation: str = _help("'layer' (per-layer targets) or 'global' (one threshold)", "layer")
    schedule: str = _schedule_help()


@METHODS.register("magnitude")
class Magnitude:
    """Han et al. (2015): train, prune the smallest weights, retrain; iterated."""

    Config = MagnitudeConfig

    def __init__(self, config: MagnitudeConfig, names: list[str], seed: int) -> None:
        _check_common(config)
        if config.allocation not in ("layer", "global"):
            raise TopopruneError(
                f"allocation must be 'layer' or 'global', got {config.allocation!r}"
            )
        if config.iterations < 1:
            raise TopopruneError("iterations must be >= 1")
        self.config, self.names = config, names
        self.quality = per_layer(config.quality, names, "quality") if config.quality else None
        self.sparsity = per_layer(config.sparsity, names, "sparsity")
        for name, value in self.sparsity.items():
            check_fraction(value, f"sparsity of {name}")

    def _prune(self, iteration: int):
        def prune(model: nn.Module, state: TrainingState) -> None:
            weights, masks = _weights(model), current_masks(model)
            if self.quality is not None:
                new = magnitude_masks_by_quality(weights, masks, self.quality)
            else:
                share = (iteration + 1) / self.config.iterations
                target = {n: 1 - (1 - s) ** share for n, s in self.sparsity.items()}
                if self.config.allocation == "global":
                    new = magnitude_masks_by_sparsity(
                        weights, masks, target[self.names[0]], global_allocation=True
                    )
                else:
                    new = magnitude_masks_by_sparsity(weights, masks, target)
            apply_masks(model, new)

        return prune

    def stages(self) -> list[Stage]:
        c = self.config
        stages = [Stage("dense", c.dense_epochs, c.lr, c.weight_decay, lr_end=_lr_end(c))]
        for i in range(c.iterations):
            stages.append(
                Stage(
                    f"prune{i + 1}",
                    c.retrain_epochs,
                    c.lr * c.retrain_lr_factor,
                    c.weight_decay,
                    on_start=self._prune(i),
                    lr_end=_lr_end(c),
                )
            )
        return stages


@dataclass(frozen=True)
class DNSConfig:
    dense_epochs: int = _help("epochs of dense training before surgery", 5)
    epochs: int = _help("epochs of training with surgery", 20)
    lr: float = _help("learning rate", 0.01)
    weight_decay: float = _help("L2 weight decay", 5e-4)
    c: tuple[float, ...] = _help("threshold factor per layer: t = mean|w| + c std|w|", (1.0,))
    gamma: float = _help("mask-update probability (1 + gamma iter)^(-power)", 1e-4)
    power: float = _help("see --gamma", 1.0)
    iter_stop: int = _help("no mask updates after this many surgery steps", 20000)
    schedule: str = _schedule_help()


@METHODS.register("dns")
class DynamicNetworkSurgery:
    """Guo et al. (2016): prune |w| < a, splice back |w| >= b, every weight keeps learning."""

    Config = DNSConfig

    def __init__(self, config: DNSConfig, names: list[str], seed: int) -> None:
        _check_common(config)
        if config.gamma < 0 or config.power < 0:
            raise TopopruneError("gamma and power must be >= 0")
        self.config, self.names, self.seed = config, names, seed
        self.c = per_layer(config.c, names, "c")

    def _start(self, model: nn.Module, state: TrainingState) -> None:
        a, b = {}, {}
        for name, module in masked_modules(model):
            magnitude = module.weight_orig.detach().abs()
            threshold = max(float(magnitude.mean() + self.c[name] * magnitude.std()), 0.0)
            a[name], b[name] = 0.9 * threshold, 1.1 * threshold
        state.method_state.update({"a": a, "b": b, "start_step": state.step})
        self._update(model, state)

    def _update(self, model: nn.Module, state: TrainingState) -> None:
        a, b = state.method_state["a"], state.method_state["b"]
        with torch.no_grad():
            for name, module in masked_modules(model):
                magnitude = module.weight_orig.abs()
                mask = module.weight_mask
                mask.copy_(
                    torch.where(
                        magnitude < a[name],
                        torch.zeros_like(mask),
                        torch.where(magnitude >= b[name], torch.ones_like(mask), mask),
                    )
                )

    def _step(self, model: nn.Module, state: TrainingState) -> None:
        local = state.step - state.method_state["start_step"]
        if local >= self.config.iter_stop:
            return
        probability = (1 + self.config.gamma * local) ** (-self.config.power)
        # one draw per step, from (seed, step): the same decisions after a resume
        draw = torch.rand(
            1, generator=torch.Generator().manual_seed((self.seed * 1_000_003 + state.step) % 2**63)
        ).item()
        if draw < probability:
            self._update(model, state)

    def stages(self) -> list[Stage]:
        c = self.config
        return [
            Stage("dense", c.dense_epochs, c.lr, c.weight_decay, lr_end=_lr_end(c)),
            Stage(
                "surgery",
                c.epochs,
                c.lr,
                c.weight_decay,
                straight_through=True,
                on_start=self._start,
                on_step=self._step,
                lr_end=_lr_end(c),
            ),
        ]


@dataclass(frozen=True)
class RandomConfig:
    kept: tuple[float, ...] = _help("kept fraction per layer (one value: every layer)", (0.1,))
    like: str = _help("copy the per-layer kept fractions of this checkpoint", "")
    dense_epochs: int = _help("epochs of dense training before masking (0: from scratch)", 0)
    epochs: int = _help("epochs of training with the random masks", 20)
    lr: float = _help("learning rate", 0.01)
    weight_decay: float = _help("L2 weight decay", 5e-4)
    schedule: str = _schedule_help()


@METHODS.register("random")
class RandomMasks:
    """The baseline: random masks with given (or another run's) per-layer kept fractions."""

    Config = RandomConfig

    def __init__(self, config: RandomConfig, names: list[str], seed: int) -> None:
        _check_common(config)
        self.config, self.names, self.seed = config, names, seed
        if config.like:
            from topoprune.io import load_network

            other = load_network(config.like)
            fractions = {
                layer.name.removesuffix(".weight"): layer.density for layer in other.layers
            }
            missing = [n for n in names if n not in fractions]
            if missing:
                raise TopopruneError(
                    f"{config.like} has no layers {', '.join(missing)}: it is another architecture"
                )
            self.kept = {n: fractions[n] for n in names}
        else:
            self.kept = per_layer(config.kept, names, "kept")
            for name, value in self.kept.items():
                if not 0 < value <= 1:
                    raise TopopruneError(
                        f"kept fraction of {name} must be in (0, 1], got {value:g}"
                    )

    def _mask(self, model: nn.Module, state: TrainingState) -> None:
        shapes = {name: m.weight_mask.shape for name, m in masked_modules(model)}
        generator = torch.Generator().manual_seed(self.seed + 7919)
        apply_masks(model, random_masks(shapes, self.kept, generator))

    def stages(self) -> list[Stage]:
        c = self.config
        end = _lr_end(c)
        stages = [Stage("dense", c.dense_epochs, c.lr, c.weight_decay, lr_end=end)]
        masked = Stage("random", c.epochs, c.lr, c.weight_decay, on_start=self._mask, lr_end=end)
        return [*(stages if c.dense_epochs else []), masked]
