"""The training engine: runs a method's stages with its hooks, checkpoints, exact resume.

Each step: forward, the loss (plus the stage's ``loss_term``), backward, ``after_backward`` (which
sees every gradient), pruned gradients zeroed, the optimizer's step, pruned weights held at zero,
``after_step`` (and, when a hook changed masks, the optimizer state of newly pruned weights zeroed).
Data order depends only on (seed, stage, epoch) and every random decision of a method on (seed,
step), so a run resumed from its last checkpoint reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from topoprune.data.images import ImageDataset
from topoprune.errors import TopopruneError
from topoprune.prune.masks import (
    current_masks,
    held_at_zero,
    mask_optimizer_state,
    masks_version,
    set_straight_through,
    zero_pruned,
)
from topoprune.prune.method import Context, Stage, TrainingState
from topoprune.train.data import epoch_order, training_batches
from topoprune.train.optim import error_rate, keeps_zeros, make_optimizer

__all__ = ["Stage", "TrainSettings", "TrainingState", "epoch_order", "error_rate", "run_stages"]

Evaluator = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class TrainSettings:
    """Run-level settings (not hyper-parameters of a method).

    ``snapshot_every``: keep the masks every that many steps (0: never); ``snapshot_epochs``:
    keep them after every epoch. Stage ends are always kept (unless a stage says otherwise).
    """

    batch_size: int = 128
    seed: int = 0
    device: str = "cpu"
    progress: bool = False
    snapshot_every: int = 0
    snapshot_epochs: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise TopopruneError(f"batch size must be >= 1, got {self.batch_size}")
        if self.snapshot_every < 0:
            raise TopopruneError(f"snapshot-every must be >= 0, got {self.snapshot_every}")


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TopopruneError("CUDA was asked for but is not available; use --device cpu")
    return name


def split_evaluator(split, device: str) -> Evaluator:
    return lambda model: {"error": error_rate(model, split, device)}


def run_stages(
    model: nn.Module,
    stages: list[Stage],
    data: Any,
    settings: TrainSettings,
    *,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    validation: Evaluator | None = None,
    test: Evaluator | None = None,
    state: TrainingState | None = None,
    optimizer_state: dict | None = None,
    save: Callable[[nn.Module, torch.optim.Optimizer, TrainingState], None] | None = None,
) -> TrainingState:
    """Run (or resume) the stages; ``save`` is called after every epoch and every stage.

    ``data`` is an :class:`ImageDataset` (its validation split is evaluated after every epoch and
    its test split after every stage, unless ``validation``/``test`` are given), a ``Split``, or
    any re-iterable of ``(inputs, targets)`` batches. History records hold ``val_<metric>`` per
    epoch and ``test_<metric>`` per stage.
    """
    state = state or TrainingState()
    if not state.started:
        # a checkpoint written between stages holds the finished stage's optimiser: the next
        # stage starts a fresh one, as an uninterrupted run does
        optimizer_state = None
    device = settings.device
    if isinstance(data, ImageDataset):
        validation = validation or split_evaluator(data.val, device)
        test = test or split_evaluator(data.test, device)
    batches = training_batches(data, settings.batch_size, device)
    loss_fn = loss_fn or nn.functional.cross_entropy
    model.to(device)
    for index in range(state.stage, len(stages)):
        stage = stages[index]
        if stage.lr <= 0:
            raise TopopruneError(f"stage {stage.name}: learning rate must be > 0, got {stage.lr}")
        if stage.lr_end is not None and not len(batches):
            raise TopopruneError(
                f"stage {stage.name}: the cosine schedule needs training data "
                "with a length (len(loader))"
            )
        set_straight_through(model, stage.straight_through)
        optimizer = make_optimizer(
            stage.optimizer, model.parameters(), stage.lr, stage.weight_decay, stage.momentum
        )
        ctx = Context(
            model,
            state,
            stage,
            settings.seed,
            device,
            loss_fn,
            optimizer,
            lr=stage.lr,
            steps_per_epoch=len(batches) or None,
            draw_batches=lambda n, step: batches.draw(n, settings.seed * 1_000_003 + step),
        )
        if not state.started:
            state.stage_start_step = state.step
            if stage.on_start is not None:
                stage.on_start(ctx)
            state.started = True
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
            optimizer_state = None
        while state.epoch < stage.epochs:
            start = time.perf_counter()
            loss = _train_epoch(ctx, batches, settings, index)
            state.epoch += 1
            _call(stage.on_epoch_end, ctx)
            record = {"stage": stage.name, "epoch": state.epoch, "step": state.step, "loss": loss}
            if validation is not None:
                record.update({f"val_{k}": v for k, v in validation(model).items()})
            record["seconds"] = time.perf_counter() - start
            state.history.append(record)
            if settings.snapshot_epochs:
                state.mask_history[f"{stage.name}/epoch{state.epoch}"] = current_masks(model)
            if settings.progress:
                _print_epoch(stage, record)
            if save is not None:
                save(model, optimizer, state)
        _call(stage.on_end, ctx)
        if stage.snapshot:
            state.mask_history[stage.name] = current_masks(model)
        end = {"stage": stage.name, "end": True, "step": state.step}
        if test is not None:
            end.update({f"test_{k}": v for k, v in test(model).items()})
        state.history.append(end)
        state.stage, state.epoch, state.started = index + 1, 0, False
        if save is not None:
            save(model, optimizer, state)
    return state


def _call(hook: Callable[[Context], None] | None, ctx: Context) -> None:
    """Run a hook that may change masks; newly pruned weights lose their optimizer state."""
    if hook is None:
        return
    before = masks_version(ctx.model)
    hook(ctx)
    if ctx.optimizer is not None and masks_version(ctx.model) != before:
        mask_optimizer_state(ctx.model, ctx.optimizer)


def _print_epoch(stage: Stage, record: dict) -> None:
    metrics = ", ".join(
        f"{k.removeprefix('val_').replace('_', ' ')} {v:.2%}"
        if k.endswith("error")
        else f"{k} {v:.4f}"
        for k, v in record.items()
        if k.startswith("val_")
    )
    print(
        f"  {stage.name} epoch {record['epoch']}/{stage.epochs}: loss {record['loss']:.4f}"
        + (f", val {metrics}" if metrics else "")
        + f" ({record['seconds']:.1f} s)",
        file=sys.stderr,
    )


def _train_epoch(ctx: Context, batches, settings: TrainSettings, stage_index: int) -> float:
    model, optimizer, stage, state = ctx.model, ctx.optimizer, ctx.stage, ctx.state
    model.train()
    total, count = 0.0, 0
    for inputs, targets in batches.epoch(settings.seed, stage_index, state.epoch):
        # the rate follows from the position in the stage alone, so a resumed run matches
        ctx.step_in_stage = state.step - state.stage_start_step
        ctx.lr = stage.lr_at(ctx.step_in_stage, ctx.total_stage_steps)
        for group in optimizer.param_groups:
            group["lr"] = ctx.lr
        value = train_step(ctx, inputs, targets)
        state.step += 1
        ctx.step_in_stage += 1
        _call(stage.after_step, ctx)
        if settings.snapshot_every and state.step % settings.snapshot_every == 0:
            state.mask_history[f"step{state.step}"] = current_masks(model)
        total += value
        count += 1
    ctx.batch = ctx.outputs = ctx.loss = None
    return total / max(count, 1)


def train_step(ctx: Context, inputs: Any, targets: Any) -> float:
    """One optimisation step with the stage's hooks (all but ``after_step``); returns the loss.

    Pruned weights of layers not in straight-through mode stay zero: their gradients are zeroed
    before the step, so their optimizer state stays zero and the built-in optimizers leave them at
    zero (see :data:`~topoprune.train.optim.KEEP_ZEROS`); after any other optimizer's step the
    weights are zeroed again."""
    model, optimizer, stage = ctx.model, ctx.optimizer, ctx.stage
    if ctx.held_at_zero is None:
        ctx.held_at_zero = held_at_zero(model)
    optimizer.zero_grad(set_to_none=True)
    outputs = model(inputs)
    loss = ctx.loss_fn(outputs, targets)
    ctx.batch, ctx.outputs, ctx.loss = (inputs, targets), outputs, loss
    if stage.loss_term is not None:
        loss = loss + stage.loss_term(ctx)
        ctx.loss = loss
    value = loss.item()
    if not math.isfinite(value):
        raise TopopruneError(f"stage {stage.name}: the loss diverged (lr {stage.lr:g} too large?)")
    loss.backward()
    if stage.after_backward is not None:
        stage.after_backward(ctx)  # sees every gradient, pruned weights' too (RigL grows by them)
    zero_pruned(ctx.held_at_zero, grads=True)
    optimizer.step()
    if not keeps_zeros(stage.optimizer):
        zero_pruned(ctx.held_at_zero, grads=False)
    return value


def checkpoint_path(folder: str | Path) -> Path:
    return Path(folder) / "checkpoint.pt"
