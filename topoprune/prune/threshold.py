"""Threshold pruning after a sparsifying phase: the shared tail of the regularisation methods.

A method that pushes weights towards zero during training (l1, l2, re-weighting) still needs a
threshold to make them exactly zero (Han et al. 2015; Fedorov and Rao, section 2.3). Its stages
are its own training stages, then

- ``threshold``: no training; each layer keeps the weights above ``quality`` x the std of its
  surviving weights, or its largest ``1 - sparsity`` share; the engine's test error at the end
  of this stage is the error after pruning, before retraining;
- ``retrain``: ``retrain_epochs`` with the masks fixed (Han et al.'s retraining).

What the weights looked like just before the threshold (exact zeros, near-zeros) goes to the
run's ``report``: the subgradient step leaves almost no exact zeros, the proximal step many.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from topoprune.prune.allocation import (
    allocate,
    check_network_sparsity,
    layer_sparsities,
    magnitude_masks_by_quality,
    per_layer,
)
from topoprune.prune.masks import apply_masks, current_masks
from topoprune.prune.method import Context, Method, PruneConfig, Stage, TrainingState, hp

NEAR_ZERO = 1e-4  # |w| below this counts as near zero in the report (absolute: MNIST-scale nets)
SMALL = 1e-3  # and below this as small


@dataclass(frozen=True)
class ThresholdConfig(PruneConfig):
    """Shared hyper-parameters of methods that end in a magnitude threshold and retraining."""

    sparsity: tuple[float, ...] = hp(
        "sparsity per layer after the threshold (one value: every layer)",
        (0.9,),
        low=0,
        high=1,
        high_open=True,
    )
    quality: tuple[float, ...] = hp(
        "threshold at quality x std of each layer's surviving weights (overrides --sparsity)",
        (),
        low=0,
    )
    retrain_epochs: int = hp("epochs of retraining after the threshold", 5, low=0)
    retrain_lr_factor: float = hp("retraining learning rate = lr x this", 0.1, low=0, low_open=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_network_sparsity(self.sparsity, "layer")


def weight_census(weights: torch.Tensor, mask: torch.Tensor) -> dict[str, int]:
    """Counts among the surviving weights: all, exactly zero, below :data:`NEAR_ZERO` and below
    :data:`SMALL`.

    >>> weight_census(torch.tensor([0.0, 1e-6, 5e-4, 0.0]), torch.tensor([1.0, 1.0, 1.0, 0.0]))
    {'weights': 3, 'exact_zeros': 1, 'near_zeros': 2, 'small': 3}
    """
    alive = weights[mask.bool()]
    return {
        "weights": int(alive.numel()),
        "exact_zeros": int((alive == 0).sum()),
        "near_zeros": int((alive.abs() < NEAR_ZERO).sum()),
        "small": int((alive.abs() < SMALL).sum()),
    }


class ThresholdMethod(Method):
    """Base of methods that sparsify by training, then threshold and retrain. Subclasses define
    :meth:`sparsify_stages`."""

    Config = ThresholdConfig

    def __init__(self, config: ThresholdConfig, names, seed: int) -> None:
        super().__init__(config, names, seed)
        self.quality = per_layer(config.quality, self.names, "quality") if config.quality else None
        per_layer(config.sparsity, self.names, "sparsity")  # a wrong count fails now

    def sparsify_stages(self) -> list[Stage]:
        """The training stages before the threshold."""
        raise NotImplementedError

    def retrain_stage(self) -> Stage:
        """Retraining with the masks fixed (override to keep a regulariser on)."""
        c = self.config
        return c.stage("retrain", c.retrain_epochs, lr=c.lr * c.retrain_lr_factor)

    def stages(self) -> list[Stage]:
        threshold = self.config.stage("threshold", 0, on_start=self.threshold)
        return [*self.sparsify_stages(), threshold, self.retrain_stage()]

    @torch.no_grad()
    def threshold(self, ctx: Context, names: list[str] | None = None) -> None:
        """Record the census of the layers' weights, then prune them (``names``: some layers
        only, the others keep their masks) by quality or sparsity."""
        names = self.names if names is None else names
        modules = dict(ctx.pruned_modules())
        weights = {n: modules[n].weight_orig.detach() * modules[n].weight_mask for n in names}
        masks = {n: m.bool() for n, m in current_masks(ctx.model).items() if n in weights}
        census = ctx.state.method_state.setdefault("before_threshold", {})
        census.update({n: weight_census(w, masks[n]) for n, w in weights.items()})
        if self.quality is not None:
            new = magnitude_masks_by_quality(weights, masks, self.quality)
        else:
            shapes = {n: tuple(w.shape) for n, w in weights.items()}
            sparsity = per_layer(self.config.sparsity, self.names, "sparsity")
            goal = layer_sparsities(shapes, [sparsity[n] for n in names], "layer")
            new = allocate({n: w.abs() for n, w in weights.items()}, masks, goal)
        apply_masks(ctx.model, new)

    def target_kept(self) -> dict[str, float] | None:
        if self.quality is not None:
            return None
        sparsity = per_layer(self.config.sparsity, self.names, "sparsity")
        return {n: 1 - s for n, s in sparsity.items()}

    def report(self, state: TrainingState) -> dict:
        return {k: v for k, v in state.method_state.items() if k == "before_threshold"}
