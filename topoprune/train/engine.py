"""The training engine: stages of masked SGD, per-epoch checkpoints, exact resume.

A pruning method is a list of :class:`Stage` s (dense training, prune + retrain, ...). Data order
depends only on (seed, stage, epoch) and every random decision of a method on (seed, step), so
a run resumed from its last checkpoint reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from topoprune.data.images import ImageDataset, Split
from topoprune.errors import TopopruneError
from topoprune.prune.masks import current_masks, enforce_masks, set_straight_through


@dataclass
class TrainingState:
    """Where a run is: counters, the method's own state, history and mask snapshots."""

    step: int = 0  # optimisation steps so far, all stages together
    stage: int = 0  # index of the current stage
    epoch: int = 0  # epochs finished in the current stage
    started: bool = False  # the current stage's on_start has run
    method_state: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    mask_history: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def progress(self) -> dict:
        return {
            "step": self.step,
            "stage": self.stage,
            "epoch": self.epoch,
            "started": self.started,
        }


@dataclass
class Stage:
    """Epochs of SGD with fixed settings; ``on_start`` (e.g. prune) runs once before them and
    ``on_step`` (e.g. a DNS mask update) after every optimisation step."""

    name: str
    epochs: int
    lr: float
    weight_decay: float = 0.0
    straight_through: bool = False
    on_start: Callable[[nn.Module, TrainingState], None] | None = None
    on_step: Callable[[nn.Module, TrainingState], None] | None = None
    snapshot: bool = True  # keep the masks at the end of the stage
    lr_end: float | None = None  # cosine decay from lr to lr_end over the stage; None: constant

    def lr_at(self, step: int, total_steps: int) -> float:
        """The learning rate of the stage's ``step``-th step (0-based) of ``total_steps``."""
        if self.lr_end is None or total_steps < 1:
            return self.lr
        progress = min(step / total_steps, 1.0)
        return self.lr_end + (self.lr - self.lr_end) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainSettings:
    batch_size: int = 128
    momentum: float = 0.9
    seed: int = 0
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise TopopruneError(f"batch size must be >= 1, got {self.batch_size}")


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TopopruneError("CUDA was asked for but is not available; use --device cpu")
    return name


@torch.no_grad()
def error_rate(model: nn.Module, split: Split, device: str = "cpu", batch: int = 2000) -> float:
    """Fraction of misclassified examples of a split."""
    model.eval()
    wrong = 0
    for start in range(0, len(split), batch):
        images = split.images[start : start + batch].to(device)
        labels = split.labels[start : start + batch].to(device)
        wrong += int((model(images).argmax(1) != labels).sum())
    model.train()
    return wrong / max(len(split), 1)


def epoch_order(n: int, seed: int, stage: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(((seed * 1009 + stage) * 100_003 + epoch) % 2**63)
    return torch.randperm(n, generator=generator)


def run_stages(
    model: nn.Module,
    stages: list[Stage],
    data: ImageDataset,
    settings: TrainSettings,
    *,
    state: TrainingState | None = None,
    optimizer_state: dict | None = None,
    save: Callable[[nn.Module, torch.optim.Optimizer, TrainingState], None] | None = None,
) -> TrainingState:
    """Run (or resume) the stages; ``save`` is called after every epoch and every stage."""
    state = state or TrainingState()
    if not state.started:
        # a checkpoint written between stages holds the finished stage's optimiser: the next
        # stage starts a fresh one, as an uninterrupted run does
        optimizer_state = None
    device = settings.device
    model.to(device)
    train = data.train
    for index in range(state.stage, len(stages)):
        stage = stages[index]
        if stage.lr <= 0:
            raise TopopruneError(f"stage {stage.name}: learning rate must be > 0, got {stage.lr}")
        set_straight_through(model, stage.straight_through)
        if not state.started:
            if stage.on_start is not None:
                stage.on_start(model, state)
            state.started = True
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=stage.lr,
            momentum=settings.momentum,
            weight_decay=stage.weight_decay,
        )
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
            optimizer_state = None
        while state.epoch < stage.epochs:
            start = time.perf_counter()
            loss = _train_epoch(model, optimizer, train, stage, state, settings, index)
            state.epoch += 1
            record = {
                "stage": stage.name,
                "epoch": state.epoch,
                "step": state.step,
                "loss": loss,
                "val_error": error_rate(model, data.val, device),
                "seconds": time.perf_counter() - start,
            }
            state.history.append(record)
            if settings.progress:
                print(
                    f"  {stage.name} epoch {state.epoch}/{stage.epochs}: loss {loss:.4f}, "
                    f"val error {record['val_error']:.2%}",
                    file=sys.stderr,
                )
            if save is not None:
                save(model, optimizer, state)
        if stage.snapshot:
            state.mask_history[stage.name] = current_masks(model)
        state.history.append(
            {
                "stage": stage.name,
                "end": True,
                "step": state.step,
                "test_error": error_rate(model, data.test, device),
            }
        )
        state.stage, state.epoch, state.started = index + 1, 0, False
        if save is not None:
            save(model, optimizer, state)
    return state


def _train_epoch(
    model,
    optimizer,
    train: Split,
    stage: Stage,
    state: TrainingState,
    settings: TrainSettings,
    stage_index: int,
) -> float:
    model.train()
    order = epoch_order(len(train), settings.seed, stage_index, state.epoch)
    total, batches = 0.0, 0
    loss_fn = nn.functional.cross_entropy
    per_epoch = math.ceil(len(order) / settings.batch_size)
    for start in range(0, len(order), settings.batch_size):
        batch = order[start : start + settings.batch_size]
        # the rate follows from the position in the stage alone, so a resumed run matches
        lr = stage.lr_at(state.epoch * per_epoch + start // settings.batch_size,
                         stage.epochs * per_epoch)  # fmt: skip
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = train.images[batch].to(settings.device)
        labels = train.labels[batch].to(settings.device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        value = loss.item()
        if not math.isfinite(value):
            raise TopopruneError(
                f"stage {stage.name}: the loss diverged (lr {stage.lr:g} too large?)"
            )
        loss.backward()
        optimizer.step()
        if not stage.straight_through:
            enforce_masks(model)
        state.step += 1
        if stage.on_step is not None:
            stage.on_step(model, state)
        total += value
        batches += 1
    return total / max(batches, 1)


def checkpoint_path(folder: str | Path) -> Path:
    return Path(folder) / "checkpoint.pt"
