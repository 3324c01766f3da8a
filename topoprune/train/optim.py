"""Optimizers by name (the ``--optimizer`` flag) and evaluation of a model on any batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from topoprune.data.images import Split
from topoprune.registry import Registry
from topoprune.train.data import to_device

OptimizerFactory = Callable[[Iterable, float, float, float], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(params, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@OPTIMIZERS.register("adam")
def adam(params, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    """Adam with L2 weight decay in the gradient (``momentum`` is not used)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    """AdamW: decoupled weight decay (``momentum`` is not used)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


# A weight whose gradient and optimizer state are zero stays exactly zero under these: SGD (with
# momentum, Nesterov and L2 decay: every term is a multiple of the weight, its gradient or its
# buffer), Adam (zero moments give a zero update; its L2 decay enters the gradient) and AdamW
# (decay multiplies the weight). The engine then skips re-zeroing pruned weights after the step.
KEEP_ZEROS = frozenset({"sgd", "adam", "adamw"})


def keeps_zeros(spec: str | Callable) -> bool:
    """Whether the optimizer leaves a weight with zero gradient and zero state at exactly zero."""
    return isinstance(spec, str) and spec in KEEP_ZEROS


def make_optimizer(
    spec: str | Callable, params, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    factory = OPTIMIZERS[spec] if isinstance(spec, str) else spec
    return factory(params, lr, weight_decay, momentum)


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


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    device: str = "cpu",
) -> dict[str, float]:
    """Mean loss over the examples of ``batches`` and, when outputs are ``(N, C)`` scores and
    targets class indices, the error rate.

    Examples
    --------
    >>> model = nn.Linear(2, 2, bias=False)
    >>> _ = model.weight.data.copy_(torch.eye(2))
    >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    >>> evaluate(model, [(x, y)], nn.functional.cross_entropy)["error"]
    0.5
    """
    was_training = model.training
    model.eval()
    total_loss, wrong, count, classify = 0.0, 0, 0, True
    for batch in batches:
        inputs, targets = to_device(batch[0], device), to_device(batch[1], device)
        outputs = model(inputs)
        size = len(targets)
        total_loss += float(loss_fn(outputs, targets)) * size
        count += size
        is_class = (
            isinstance(outputs, torch.Tensor)
            and outputs.dim() == 2
            and isinstance(targets, torch.Tensor)
            and targets.dim() == 1
            and not targets.is_floating_point()
        )
        classify = classify and is_class
        if is_class:
            wrong += int((outputs.argmax(1) != targets).sum())
    model.train(was_training)
    result = {"loss": total_loss / max(count, 1)}
    if classify and count:
        result["error"] = wrong / count
    return result
