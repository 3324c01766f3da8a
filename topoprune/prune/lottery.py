"""Lottery tickets (Frankle and Carbin 2019): iterative magnitude pruning with rewinding.

Stages: ``round0`` trains the dense network for ``round_epochs`` epochs and keeps every
parameter's value at step ``rewind_step`` (0: the initialisation; k > 0: the "rewinding" of
Frankle et al. 2020). Each of the ``rounds`` further stages then removes the smallest-magnitude
``hidden_rate`` of each hidden layer's surviving weights (``output_rate`` of the output layer,
the last pruned one), puts every parameter back to its kept value (``--control reinit``: to a
fresh initialisation from the run's seed instead, the paper's random re-initialisation control)
and trains ``round_epochs`` epochs with a new optimizer. The validation error after every epoch
is in the run's history; the report gives, per round, the kept % and the epoch (and step) of the
lowest validation error: the paper's early-stopping iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.prune.allocation import allocate
from topoprune.prune.masks import apply_masks, current_masks
from topoprune.prune.method import Context, Method, PruneConfig, Stage, TrainingState, hp
from topoprune.prune.methods import METHODS


@dataclass(frozen=True)
class LotteryConfig(PruneConfig):
    rounds: int = hp("pruning rounds after the first training", 5, low=1)
    round_epochs: int = hp("epochs of training per round (the first included)", 10, low=0)
    hidden_rate: float = hp("share of each hidden layer's surviving weights pruned per round",
                            0.2, low=0, high=1, high_open=True)  # fmt: skip
    output_rate: float = hp("share of the output layer's surviving weights pruned per round",
                            0.1, low=0, high=1, high_open=True)  # fmt: skip
    rewind_step: int = hp("rewind to the parameters at this training step (0: initialisation)",
                          0, low=0)  # fmt: skip
    control: str = hp("none (the ticket), or reinit (random re-initialisation each round)",
                      "none", choices=("none", "reinit"))  # fmt: skip


def kept_after(rate: float, rounds: int) -> float:
    """The kept fraction of a layer after ``rounds`` rounds removing ``rate`` of the survivors.

    >>> round(kept_after(0.2, 3), 3)
    0.512
    """
    return (1 - rate) ** rounds


@METHODS.register("lottery")
class LotteryTicket(Method):
    """Train, prune the smallest weights per layer, rewind the rest, repeat."""

    Config = LotteryConfig
    paper = (
        "Frankle and Carbin 2019, The lottery ticket hypothesis: finding sparse, trainable "
        "neural networks"
    )
    contract_overrides: ClassVar[dict] = {"rounds": 2}

    def rates(self) -> dict[str, float]:
        c = self.config
        return {n: c.output_rate if n == self.names[-1] else c.hidden_rate for n in self.names}

    def stages(self) -> list[Stage]:
        c = self.config
        first = c.stage("round0", c.round_epochs, on_start=self._keep_at_start,
                        after_step=self._keep_at_step, on_end=self._check_kept)  # fmt: skip
        rounds = [c.stage(f"round{r}", c.round_epochs, on_start=self._round(r))
                  for r in range(1, c.rounds + 1)]  # fmt: skip
        return [first, *rounds]

    def target_kept(self) -> dict[str, float]:
        return {n: kept_after(rate, self.config.rounds) for n, rate in self.rates().items()}

    @torch.no_grad()
    def _keep(self, ctx: Context) -> None:
        ctx.state.method_state["rewind"] = {
            k: v.detach().clone() for k, v in ctx.model.named_parameters()
        }

    def _keep_at_start(self, ctx: Context) -> None:
        if self.config.rewind_step == 0:
            self._keep(ctx)

    def _keep_at_step(self, ctx: Context) -> None:
        if ctx.state.step == self.config.rewind_step:
            self._keep(ctx)

    def _check_kept(self, ctx: Context) -> None:
        if "rewind" not in ctx.state.method_state:
            raise TopopruneError(
                f"rewind step {self.config.rewind_step} is past the first round's "
                f"{ctx.state.step} steps"
            )

    def _round(self, r: int):
        def start(ctx: Context) -> None:
            modules = dict(ctx.pruned_modules())
            goal = {n: 1 - kept_after(rate, r) for n, rate in self.rates().items()}
            weights = {n: modules[n].weight_orig.detach().abs() for n in self.names}
            apply_masks(ctx.model, allocate(weights, current_masks(ctx.model), goal))
            self._rewind(ctx, r)

        return start

    @torch.no_grad()
    def _rewind(self, ctx: Context, r: int) -> None:
        if self.config.control == "reinit":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed * 7919 + r)  # a fresh init per round, from the seed
                for module in ctx.model.modules():
                    if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d):
                        _reset(module)
        else:
            saved = ctx.state.method_state["rewind"]
            for name, param in ctx.model.named_parameters():
                param.copy_(saved[name])
        for _, module in ctx.pruned_modules():
            module.weight_orig.mul_(module.weight_mask)

    def report(self, state: TrainingState) -> dict:
        """Per round: the epoch and step of the lowest validation error (early stopping)."""
        rounds = {}
        for record in state.history:
            if "val_error" not in record:
                continue
            best = rounds.get(record["stage"])
            if best is None or record["val_error"] < best["val_error"]:
                rounds[record["stage"]] = {k: record[k] for k in ("epoch", "step", "val_error")}
        return {"early_stopping": rounds, "control": self.config.control,
                "rewind_step": self.config.rewind_step}  # fmt: skip


def _reset(module: nn.Module) -> None:
    """A layer's default initialisation, into ``weight_orig`` when the layer is masked."""
    weight = getattr(module, "weight_orig", module.weight)
    nn.init.kaiming_uniform_(weight, a=5**0.5)
    if module.bias is not None:
        fan_in = weight[0].numel()
        bound = 1 / fan_in**0.5 if fan_in else 0
        nn.init.uniform_(module.bias, -bound, bound)
