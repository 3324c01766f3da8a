"""``generated``: train, from this run's initialisation, masks made by a random process.

The null models of the topology atlas: Erdos-Renyi masks, bipartite preferential attachment and
the degree-preserving rewiring of another run's masks (the bipartite configuration model), at
given per-layer densities or those of a checkpoint. The generators are
:mod:`topoprune.topology.generators`; this method only installs their masks and trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from topoprune.errors import TopopruneError
from topoprune.prune.allocation import per_layer
from topoprune.prune.masks import apply_masks, rescale_to_kept_fan_in
from topoprune.prune.method import Context, Method, Stage, TrainConfig, hp, sparse_init_flag
from topoprune.prune.methods import METHODS, checkpoint_masks
from topoprune.topology.generators import GENERATORS, generated_mask


@dataclass(frozen=True)
class GeneratedConfig(TrainConfig):
    generator: str = hp("er: uniformly random pairs; pa: preferential attachment, each new "
                        "connection to a pair with probability ~ (d_out + 1)(d_in + 1); rewired: "
                        "the --like checkpoint's masks, every degree kept, pairs shuffled", "er",
                        choices=GENERATORS)  # fmt: skip
    kept: tuple[float, ...] = hp("kept fraction per layer for er and pa (one value: every layer)",
                                 (0.1,), low=0, high=1, low_open=True)  # fmt: skip
    like: str = hp("checkpoint whose masks are rewired (rewired), or whose per-layer kept "
                   "fractions er and pa copy (instead of --kept)", "")  # fmt: skip
    snapshot: str = hp("that checkpoint's mask snapshot: a stage name, STAGE/epochN or stepN "
                       "(empty: its final masks)", "")  # fmt: skip
    swaps: float = hp("rewired: double-edge swaps tried per connection", 10.0, low=0)
    epochs: int = hp("epochs of training with the generated masks", 20, low=0)
    sparse_init: bool = sparse_init_flag()


@METHODS.register("generated")
class GeneratedMasks(Method):
    """Masks from a random graph process (Erdos-Renyi, preferential attachment, or another run's
    masks rewired with every degree kept), trained from this run's initialisation."""

    Config = GeneratedConfig
    paper = ("null models: Erdos and Renyi 1959 (bipartite G(n, m)); preferential attachment "
             "after Barabasi and Albert 1999; the bipartite configuration model by double-edge "
             "swaps (Ryser 1957)")  # fmt: skip

    def __init__(self, config: GeneratedConfig, names, seed: int) -> None:
        super().__init__(config, names, seed)
        if config.generator == "rewired" and not config.like:
            raise TopopruneError("generator rewired needs like: the checkpoint whose masks are "
                                 "rewired")  # fmt: skip
        self.kept = None if config.like else per_layer(config.kept, self.names, "kept")

    def _install(self, ctx: Context) -> None:
        modules = dict(ctx.pruned_modules())
        c = self.config
        sources = checkpoint_masks(c.like, c.snapshot, modules) if c.like else {}
        masks = {}
        for index, (name, module) in enumerate(modules.items()):
            rng = np.random.default_rng([self.seed, 4099, index])  # one stream per layer
            shape = tuple(module.weight_mask.shape)
            if name in sources:  # its connection count, or its masks to rewire
                like, edges = sources[name].cpu().numpy().astype(bool), None
            else:
                like = np.zeros(shape, dtype=bool)
                edges = round(self.kept[name] * like.size)
            made = generated_mask(c.generator, like, rng, n_edges=edges, swaps_per_edge=c.swaps)
            masks[name] = torch.from_numpy(made)
        apply_masks(ctx.model, masks)
        if c.sparse_init:
            rescale_to_kept_fan_in(ctx.model)

    def stages(self) -> list[Stage]:
        return [self.config.stage("generated", self.config.epochs, on_start=self._install)]

    def target_kept(self) -> dict[str, float] | None:
        return dict(self.kept) if self.kept is not None else None  # else whatever --like keeps
