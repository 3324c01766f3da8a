"""Epsilon-ResNet (Yu et al. 2018): residual blocks whose responses stay below a threshold become
strict identities and are removed.

The model is the zoo's :class:`~topoprune.models.residual.ResidualCNN`: each block adds
``S(F(x))`` to its shortcut, where the sparsity-promoting function
:func:`~topoprune.models.residual.sparsify` outputs zero for an example whose every residual
response ``|F(x)|`` is below ``epsilon``. A block that is zero for every example of a check set
is dropped: its two convolutions are masked to zero (whole layers, so the masks stay binary and
the engine holds the weights and their optimizer state at zero) and the block is marked dropped
(it then computes the identity, whatever its BatchNorm holds).
:func:`~topoprune.models.residual.drop_blocks` builds the smaller model without those blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.models.residual import ResidualCNN, drop_blocks
from topoprune.prune.method import Context, Method, Stage, TrainConfig, hp
from topoprune.prune.methods import METHODS


def residual_model(model: nn.Module, method: str) -> ResidualCNN:
    """``model`` if it is a :class:`ResidualCNN` whose block convolutions are all masked."""
    if not isinstance(model, ResidualCNN):
        raise TopopruneError(
            f"{method} removes residual blocks of a ResidualCNN (topoprune.models.residual, the "
            f"zoo's resnet_mnist), got {type(model).__name__}"
        )
    if len(model.blocks) == 0:
        raise TopopruneError(f"{method}: the ResidualCNN has no residual block")
    unmasked = [f"blocks.{i}.{conv}" for i, block in enumerate(model.blocks)
                for conv in ("conv1", "conv2")
                if not hasattr(getattr(block, conv), "weight_mask")]  # fmt: skip
    if unmasked:
        raise TopopruneError(
            f"{method} masks the convolutions of removed blocks; {', '.join(unmasked)} must be "
            "pruned too (leave them out of --dense-layers)"
        )
    return model


def block_masks(model: ResidualCNN, blocks: list[int]) -> dict[str, torch.Tensor]:
    """All-zero masks of both convolutions of each block in ``blocks``."""
    return {f"blocks.{i}.{conv}": torch.zeros_like(getattr(model.blocks[i], conv).weight_mask)
            for i in blocks for conv in ("conv1", "conv2")}  # fmt: skip


def depth_report(ctx: Context, model: ResidualCNN) -> dict:
    """The blocks dropped, the parameters with and without them (:func:`drop_blocks`) and the
    largest output difference between the two models on a scoring batch, both in eval mode."""
    from topoprune.prune.curvature import evaluating

    dropped = model.dropped
    small = drop_blocks(model, dropped).eval()
    report = {
        "blocks": len(model.blocks),
        "blocks_dropped": dropped,
        "params": sum(p.numel() for p in model.parameters()),
        "params_compact": sum(p.numel() for p in small.parameters()),
    }
    if ctx.draw_batches is not None:
        inputs, _ = next(iter(ctx.scoring_batches(8)))
        inputs = inputs.to(ctx.device)
        with evaluating(model), torch.no_grad():
            report["max_abs_difference"] = float((small(inputs) - model(inputs)).abs().max())
    return report


@dataclass(frozen=True)
class EpsilonResnetConfig(TrainConfig):
    epsilon: float = hp("threshold: a block whose every residual response |F(x)| to an example "
                        "is below it gives that example its shortcut alone", 2.5, low=0,
                        low_open=True)  # fmt: skip
    plain_epochs: int = hp("epochs as a plain ResNet (epsilon 0) first, as the reference code's "
                           "epsilon schedule does", 0, low=0)  # fmt: skip
    epochs: int = hp("epochs of training with the sparsifier at --epsilon", 10, low=0)
    check_examples: int = hp("training examples (eval mode) a block must give a zero residual "
                             "on, every one, to be dropped", 1024, low=1)  # fmt: skip
    finetune_epochs: int = hp("epochs of fine-tuning with the dropped blocks held as identities",
                              2, low=0)  # fmt: skip
    finetune_lr_factor: float = hp("fine-tuning learning rate = lr x this", 0.1, low=0,
                                   low_open=True)  # fmt: skip


@METHODS.register("epsilon-resnet")
class EpsilonResnet(Method):
    """Epsilon-ResNet (Yu et al. 2018): train a ResNet whose blocks pass their residual through
    the sparsifier S at ``--epsilon``, drop the blocks that are zero on every check example,
    fine-tune with them held as identities.

    Stages: ``plain`` (``--plain-epochs`` at epsilon 0, omitted at 0), ``epsilon``
    (``--epochs`` at ``--epsilon``; after every epoch the share of check examples on which each
    block is zero goes to the report), ``finetune`` (its start drops the blocks, then
    ``--finetune-epochs`` at ``lr x --finetune-lr-factor``, the sparsifier still on). Each stage's
    start sets the blocks' epsilon; epsilon and the dropped flags travel in the model's state
    dict, so a resumed run (even in a freshly built model) continues bit-identical.

    Where this differs from the paper and its reference code (github yuxwind/epsilonResnet,
    TensorFlow/tensorpack):

    - S is per example, as the paper defines it (``S(F(x)) = 0`` when every ``|F(x)_i| <
      epsilon``); the reference code's ``strict_identity`` takes the maximum over the whole
      batch tensor, so a block is zero for a whole batch or for none of it. The four ReLUs and
      ``L = 1e6`` follow the reference code.
    - The block is the post-activation basic block (conv-BN-ReLU-conv-BN, ReLU after the
      addition) with S on the second BatchNorm's output, so epsilon is in units of normalised
      responses; the paper's CIFAR networks are pre-activation blocks ending in a convolution.
    - Side supervision (the reference code adds a BN-ReLU-GAP-FC classifier in the middle of the
      network, loss weight 0.1) is not used: it helps very deep networks train as layers
      disappear, and is no part of which blocks go; the six-block zoo model trains without it.
    - The adaptive learning rate (the reference's ``LearningRateSetter`` restarts its step
      schedule whenever more blocks were discarded over the last epoch) is not used: a stage
      has a constant or cosine rate here.
    - The reference code later holds epsilon at 0 for the first 150 CIFAR epochs:
      ``--plain-epochs``.
    - The reference removes the blocks whose training-time discard indicator averaged 1 and
      evaluates the smaller model without retraining; here a block must be zero on every check
      example in eval mode, and the smaller network is fine-tuned.
    """

    Config = EpsilonResnetConfig
    paper = (
        "Yu et al. 2018, Learning strict identity mappings in deep residual networks "
        "(epsilon-ResNet)"
    )
    architecture = "residual"
    # the tiny run has six steps: only a threshold above every response drops a block
    contract_overrides: ClassVar[dict] = {"epsilon": 100.0, "check_examples": 64}

    def _set_epsilon(self, epsilon: float):
        def on_start(ctx: Context) -> None:
            residual_model(ctx.model, "epsilon-resnet").set_epsilon(epsilon)

        return on_start

    def _zero_share(self, ctx: Context) -> list[float]:
        """Per block, the share of the check examples on which its residual ``S(F)`` is zero
        (the model in eval mode: what inference computes)."""
        from topoprune.prune.curvature import evaluating

        model = residual_model(ctx.model, "epsilon-resnet")
        active = torch.zeros(len(model.blocks))
        count = 0
        with evaluating(model):
            for inputs, _ in ctx.scoring_batches(self.config.check_examples):
                activity = model.block_activity(inputs.to(ctx.device))
                active += activity.sum(dim=0).cpu()
                count += activity.shape[0]
        return (1 - active / max(count, 1)).tolist()

    def _record(self, ctx: Context) -> None:
        ctx.state.method_state.setdefault("zero_share_per_epoch", []).append(self._zero_share(ctx))

    def _drop(self, ctx: Context) -> None:
        from topoprune.prune.masks import apply_masks

        model = residual_model(ctx.model, "epsilon-resnet")
        model.set_epsilon(self.config.epsilon)
        share = self._zero_share(ctx)
        zero = [i for i, s in enumerate(share) if s == 1.0]
        dropped = sorted(set(model.dropped) | set(zero))
        apply_masks(model, block_masks(model, dropped))
        model.set_dropped(dropped)
        ctx.state.method_state["zero_share"] = share

    def _report(self, ctx: Context) -> None:
        model = residual_model(ctx.model, "epsilon-resnet")
        ctx.state.method_state["depth"] = depth_report(ctx, model)

    def stages(self) -> list[Stage]:
        c = self.config
        stages = []
        if c.plain_epochs:
            stages.append(c.stage("plain", c.plain_epochs, on_start=self._set_epsilon(0.0)))
        stages += [
            c.stage("epsilon", c.epochs, on_start=self._set_epsilon(c.epsilon),
                    on_epoch_end=self._record),
            c.stage("finetune", c.finetune_epochs, lr=c.lr * c.finetune_lr_factor,
                    on_start=self._drop, on_end=self._report),
        ]  # fmt: skip
        return stages

    def report(self, state) -> dict:
        m = state.method_state
        return {"epsilon": self.config.epsilon, **m.get("depth", {}),
                "zero_share_at_drop": m.get("zero_share"),
                "zero_share_per_epoch": m.get("zero_share_per_epoch", [])}  # fmt: skip
