"""Sparse Evolutionary Training (Mocanu et al. 2018): a sparse network whose connections evolve.

Each pruned layer starts from an Erdos-Renyi mask of density ``epsilon (n_in + n_out) / (n_in
n_out)`` (fan-in and fan-out of the layer: a convolution's fan-in counts its kernel), drawn from
the run's seed. After every epoch but the last (as in the authors' code) each layer drops the
fraction ``zeta`` of its smallest positive weights and the fraction ``zeta`` of its largest
negative weights (those closest to zero), and grows as many connections at random among its
absent ones (the just-dropped included, as in the authors' code), their weights drawn from N(0,
``init_std``^2) (the new connections start with zero optimizer state). The layer's number of
connections never changes; a layer at density 1 (``epsilon`` large for its size, e.g. a small
output layer) is left dense and never rewired, as SET's code leaves its last layer. The masks
after every update are kept in the run's mask history (``set/epoch<k>``), for ``topoprune
attach`` between any two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from topoprune.prune.allocation import random_masks
from topoprune.prune.masks import (
    apply_masks,
    current_masks,
    rescale_to_kept_fan_in,
    weight_modules,
)
from topoprune.prune.method import (
    Context,
    Method,
    Stage,
    TrainConfig,
    TrainingState,
    hp,
    sparse_init_flag,
)
from topoprune.prune.methods import METHODS


@dataclass(frozen=True)
class SETConfig(TrainConfig):
    epsilon: float = hp(
        "Erdos-Renyi density parameter: density = eps (n_in + n_out) / (n_in n_out)",
        20.0,
        low=0,
        low_open=True,
    )
    zeta: float = hp("share of positive and of negative weights replaced after each epoch", 0.3,
                     low=0, high=1)  # fmt: skip
    epochs: int = hp("epochs of sparse evolutionary training", 20, low=0)
    init_std: float = hp("std of a regrown connection's initial weight", 0.01, low=0)
    sparse_init: bool = sparse_init_flag()


def erdos_renyi_density(shape: torch.Size, epsilon: float) -> float:
    """``min(1, epsilon (n_in + n_out) / (n_in n_out))`` with ``n_out = shape[0]`` and ``n_in``
    the rest of the weight's size (a convolution's kernel counts in its fan-in).

    >>> round(erdos_renyi_density(torch.Size([1000, 784]), 20), 6)
    0.04551
    >>> erdos_renyi_density(torch.Size([10, 10]), 20)
    1.0
    """
    n_out = shape[0]
    n_in = shape.numel() // n_out
    return min(1.0, epsilon * (n_in + n_out) / (n_in * n_out))


def erdos_renyi_densities(model: nn.Module, epsilon: float) -> dict[str, float]:
    """SET's density of every weight layer of ``model`` (by module name, in order).

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10))
    >>> {n: round(d, 4) for n, d in erdos_renyi_densities(net, 20).items()}
    {'0': 0.0922, '2': 1.0}
    """
    return {n: erdos_renyi_density(getattr(m, "weight_orig", m.weight).shape, epsilon)
            for n, m in weight_modules(model)}  # fmt: skip


def evolve(
    weight: torch.Tensor, mask: torch.Tensor, zeta: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SET update of a layer: drop ``round(zeta x count)`` of the smallest positive and of
    the largest negative alive weights, grow as many at random absent positions. Returns the new
    mask and the grown positions (both shaped like ``weight``).

    >>> w = torch.tensor([0.5, 0.1, -0.2, -0.9, 0.0, 0.0])
    >>> m = torch.tensor([True, True, True, True, False, False])
    >>> new, grown = evolve(w, m, 0.5, torch.Generator().manual_seed(0))
    >>> bool(new[0] and new[3])  # 0.1 (smallest positive) and -0.2 (largest negative) dropped
    True
    >>> int(new.sum()), int(grown.sum())  # two grown among positions 1, 2, 4, 5
    (4, 2)
    >>> full, regrown = evolve(w[:4], m[:4], 0.5, torch.Generator().manual_seed(0))
    >>> full.tolist(), regrown.tolist()  # nothing absent: the dropped two grow back, anew
    ([True, True, True, True], [False, True, True, False])
    """
    alive = mask.bool().flatten()
    w = weight.detach().flatten()
    drop = torch.zeros_like(alive)
    for sign in (1, -1):
        candidates = torch.nonzero(alive & (sign * w > 0)).flatten()
        count = round(zeta * len(candidates))
        if count:
            order = torch.argsort((sign * w[candidates]), stable=True)
            drop[candidates[order[:count]]] = True
    # as in SET's code, the just-dropped positions are empty again and may be drawn: a dense
    # layer (density 1 at small fan-in) keeps its size
    absent = torch.nonzero(~(alive & ~drop)).flatten()
    want = int(drop.sum())
    grown = torch.zeros_like(alive)
    if want and len(absent):
        grown[absent[torch.randperm(len(absent), generator=generator)[:want]]] = True
    new = (alive & ~drop) | grown
    return new.view_as(mask), grown.view_as(mask)


@torch.no_grad()
def _reset_state(optimizer, weight: torch.Tensor, positions: torch.Tensor) -> None:
    """Zero the optimizer's buffers (momentum, Adam's moments) of ``weight`` at ``positions``: a
    regrown connection may sit where a dropped one left its momentum."""
    if optimizer is None:
        return
    for buffer in optimizer.state.get(weight, {}).values():
        if torch.is_tensor(buffer) and buffer.shape == weight.shape:
            buffer.masked_fill_(positions.to(buffer.device), 0.0)


@METHODS.register("set")
class SparseEvolutionaryTraining(Method):
    """Erdos-Renyi sparse masks; after every epoch, the weights closest to zero replaced by
    random new connections."""

    Config = SETConfig
    paper = (
        "Mocanu et al. 2018, Scalable training of artificial neural networks with adaptive sparse "
        "connectivity inspired by network science"
    )
    contract_overrides: ClassVar[dict] = {"epsilon": 2.0}

    def stages(self) -> list[Stage]:
        c = self.config
        return [c.stage("set", c.epochs, on_start=self._start, on_epoch_end=self._evolve)]

    def _densities(self, ctx: Context) -> dict[str, float]:
        every = erdos_renyi_densities(ctx.model, self.config.epsilon)
        return {n: every[n] for n, _ in ctx.pruned_modules()}

    def _start(self, ctx: Context) -> None:
        shapes = {n: m.weight_mask.shape for n, m in ctx.pruned_modules()}
        generator = torch.Generator().manual_seed(self.seed + 15485863)
        apply_masks(ctx.model, random_masks(shapes, self._densities(ctx), generator))
        if self.config.sparse_init:
            rescale_to_kept_fan_in(ctx.model)
        ctx.state.mask_history["set/epoch0"] = current_masks(ctx.model)

    @torch.no_grad()
    def _evolve(self, ctx: Context) -> None:
        if ctx.state.epoch >= ctx.stage.epochs:
            return  # the trained network is the result: nothing grown untrained at the end
        generator = ctx.generator(tag=3)  # from (seed, step): the same after a resume
        masks, grown_count = {}, {}
        for name, module in ctx.pruned_modules():
            if bool(module.weight_mask.bool().all()):
                continue  # a dense layer (density 1) has nothing to rewire, as in SET's code
            new, grown = evolve(module.weight_orig, module.weight_mask, self.config.zeta, generator)
            fresh = torch.randn(module.weight_orig.shape, generator=generator)
            fresh = (fresh * self.config.init_std).to(module.weight_orig)
            module.weight_orig.copy_(torch.where(grown, fresh, module.weight_orig))
            _reset_state(ctx.optimizer, module.weight_orig, grown)
            masks[name] = new
            grown_count[name] = int(grown.sum())
        apply_masks(ctx.model, masks)
        ctx.state.mask_history[f"set/epoch{ctx.state.epoch}"] = current_masks(ctx.model)
        ctx.state.method_state.setdefault("grown", []).append(grown_count)

    def target_kept(self) -> dict[str, float] | None:
        return None  # Erdos-Renyi densities need the layer shapes: see the report

    def report(self, state: TrainingState) -> dict:
        """Connections replaced per layer after every epoch."""
        return {"grown": state.method_state.get("grown", [])}
