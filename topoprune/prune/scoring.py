"""Score-based pruning: a method supplies one score per weight (higher = keep) and this base class
turns scores into masks by allocation, granularity and schedule.

- allocation: ``layer`` (a target per layer), ``uniform``, ``global`` (one ranking over all
  pruned layers), ``erk`` (Erdos-Renyi-Kernel densities);
- granularity: ``element``, ``kernel``, ``filter``, ``channel`` (scores summed over the group);
- schedule: ``iterative`` (``iterations`` prune-retrain rounds, each keeping the same fraction of
  the survivors; 1 round is one-shot) or ``gradual`` (Zhu and Gupta's cubic ramp, a pruning step
  every ``prune_every`` optimisation steps during the first ``ramp`` share of the stage).

A new score-based method is a config subclass of :class:`ScoreConfig` and a ``scores`` method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from topoprune.errors import TopopruneError
from topoprune.prune.allocation import (
    ALLOCATIONS,
    GRANULARITIES,
    allocate,
    check_network_sparsity,
    cubic_sparsity,
    geometric_sparsity,
    layer_sparsities,
    per_layer,
)
from topoprune.prune.masks import apply_masks, current_masks
from topoprune.prune.method import Context, Method, PruneConfig, Stage, hp


@dataclass(frozen=True)
class ScoreConfig(PruneConfig):
    """Shared hyper-parameters of score-based methods."""

    sparsity: tuple[float, ...] = hp(
        "target sparsity per pruned layer (one value: every layer)",
        (0.9,),
        low=0,
        high=1,
        high_open=True,
    )
    allocation: str = hp(
        "how sparsity is spread: layer (per-layer targets), uniform, global (one ranking), erk",
        "layer",
        choices=ALLOCATIONS,
    )
    granularity: str = hp(
        "what is removed: element, kernel, filter or channel", "element", choices=GRANULARITIES
    )
    prune_schedule: str = hp(
        "iterative (prune-retrain rounds) or gradual (cubic ramp)",
        "iterative",
        choices=("iterative", "gradual"),
    )
    iterations: int = hp("prune-retrain rounds (iterative; 1: one-shot)", 1, low=1)
    retrain_epochs: int = hp(
        "epochs of training after each pruning round (gradual: of the ramp stage)", 10, low=0
    )
    retrain_lr_factor: float = hp("retraining learning rate = lr x this", 0.1, low=0, low_open=True)
    prune_every: int = hp("gradual: optimisation steps between pruning steps", 100, low=1)
    ramp: float = hp(
        "gradual: share of the stage over which sparsity ramps up",
        0.75,
        low=0,
        high=1,
        low_open=True,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_network_sparsity(self.sparsity, self.allocation)


class ScoreMethod(Method):
    """Base of score-based methods; subclasses define :meth:`scores`."""

    Config = ScoreConfig

    def __init__(self, config: ScoreConfig, names, seed: int) -> None:
        super().__init__(config, names, seed)
        if config.allocation == "layer":  # a wrong count is an error now, not at the first prune
            per_layer(config.sparsity, self.names, "sparsity")

    def scores(self, ctx: Context) -> dict[str, torch.Tensor]:
        """One score per weight of every pruned layer, by name; higher scores are kept."""
        raise NotImplementedError

    def prune_to(self, ctx: Context, schedule: Callable[[float], float]) -> None:
        """Prune to ``schedule(final sparsity)`` of every layer (or of the network, for global
        allocation), keeping the highest-scoring surviving weights or groups."""
        c = self.config
        shapes = {n: tuple(m.weight_mask.shape) for n, m in ctx.pruned_modules()}
        final = layer_sparsities(shapes, c.sparsity, c.allocation)
        goal = (
            {n: schedule(s) for n, s in final.items()}
            if isinstance(final, dict)
            else schedule(final)
        )
        masks = allocate(
            self.scores(ctx), current_masks(ctx.model), goal, granularity=c.granularity
        )
        apply_masks(ctx.model, masks)

    def stages(self) -> list[Stage]:
        c = self.config
        stages = [c.stage("dense", c.dense_epochs)]
        retrain_lr = c.lr * c.retrain_lr_factor
        if c.prune_schedule == "gradual":
            stages.append(
                c.stage("gradual", c.retrain_epochs, lr=retrain_lr, after_step=self._gradual_step)
            )
            return stages
        for i in range(c.iterations):
            stages.append(
                c.stage(f"prune{i + 1}", c.retrain_epochs, lr=retrain_lr, on_start=self._round(i))
            )
        return stages

    def _round(self, index: int) -> Callable[[Context], None]:
        rounds = self.config.iterations
        return lambda ctx: self.prune_to(ctx, lambda s: geometric_sparsity(s, index, rounds))

    def _gradual_step(self, ctx: Context) -> None:
        c, step = self.config, ctx.step_in_stage
        if not ctx.total_stage_steps:
            raise TopopruneError("gradual pruning needs training data with a length")
        window = max(round(c.ramp * ctx.total_stage_steps), 1)
        # prune every prune_every steps, and always at the ramp's end (the final sparsity)
        if step > window or (step % c.prune_every and step != window):
            return
        self.prune_to(ctx, lambda s: cubic_sparsity(s, step / window))

    def target_kept(self) -> dict[str, float] | None:
        c = self.config
        if c.allocation != "layer" or c.granularity != "element":
            return None
        return {n: 1 - s for n, s in per_layer(c.sparsity, self.names, "sparsity").items()}
