"""Masks on a live model: ``weight_orig`` parameters, ``weight_mask`` buffers, masked forward.

The same layout as ``torch.nn.utils.prune`` (so state_dicts read as torch-prune checkpoints), in
two modes:

- default: pruned entries of ``weight_orig``, their gradients and their optimizer state are kept
  at zero (the engine calls :func:`zero_pruned` around every step, :func:`mask_optimizer_state`
  when masks change), so the forward pass uses the weights as they are and costs what a dense
  step costs; pruned weights never come back.
- ``straight_through``: the forward uses ``W * M`` while the gradient reaches every weight, pruned
  ones included, as Dynamic Network Surgery requires (pruned weights keep learning and can be
  spliced back).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from topoprune.errors import TopopruneError

WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _masked_forward_hook(module: nn.Module, _inputs) -> None:
    weight = module.weight_orig
    if module.straight_through:
        # value W * M, gradient passed to W unmasked, with no Python-level backward
        module.weight = weight + (weight * module.weight_mask - weight).detach()
    else:
        module.weight = weight.view_as(weight)  # pruned entries are zero (enforce_masks)


def add_masks(
    model: nn.Module, *, straight_through: bool = False, names: Sequence[str] | None = None
) -> nn.Module:
    """Give every Linear/Conv1d/Conv2d layer (or those in ``names``) a mask of ones, in place;
    returns the model. Grouped and depthwise convolutions are masked like any other."""
    modules = dict(weight_modules(model))
    unknown = [n for n in names or () if n not in modules]
    if unknown:
        raise TopopruneError(
            f"no Linear/Conv layer {', '.join(map(repr, unknown))}; layers: {', '.join(modules)}"
        )
    for name, module in modules.items():
        if names is not None and name not in names:
            continue
        if hasattr(module, "weight_mask"):
            module.straight_through = straight_through
            continue
        weight = module.weight
        del module._parameters["weight"]
        module.register_parameter("weight_orig", nn.Parameter(weight.detach().clone()))
        module.register_buffer("weight_mask", torch.ones_like(weight))
        module.straight_through = straight_through
        module.register_forward_pre_hook(_masked_forward_hook)
        _masked_forward_hook(module, ())
    return model


def weight_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of every weight layer, in registration order."""
    for name, module in model.named_modules():
        if isinstance(module, WEIGHT_MODULES):
            yield name, module


def masked_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    modules = [(n, m) for n, m in weight_modules(model) if hasattr(m, "weight_mask")]
    if not modules:
        raise TopopruneError("the model has no masks: call add_masks(model) first")
    return modules


def set_straight_through(model: nn.Module, value: bool) -> None:
    """Switch the gradient mode; leaving straight-through zeroes the pruned weights."""
    for _, module in masked_modules(model):
        module.straight_through = value
    if not value:
        enforce_masks(model)


@torch.no_grad()
def enforce_masks(model: nn.Module) -> None:
    """Zero the pruned weights of the layers not in straight-through mode (after each step)."""
    for _, module in masked_modules(model):
        if not module.straight_through:
            module.weight_orig.mul_(module.weight_mask)


@torch.no_grad()
def apply_masks(
    model: nn.Module, masks: dict[str, torch.Tensor], *, zero_pruned: bool = True
) -> None:
    """Install new masks (by module name). Pruned weights are zeroed, except with
    ``zero_pruned=False`` on straight-through layers (whose pruned weights keep learning)."""
    modules = dict(masked_modules(model))
    for name, mask in masks.items():
        if name not in modules:
            raise TopopruneError(f"no masked layer {name!r}; layers: {', '.join(modules)}")
        module = modules[name]
        if mask.shape != module.weight_mask.shape:
            raise TopopruneError(
                f"{name}: mask shape {tuple(mask.shape)} differs from "
                f"weight shape {tuple(module.weight_mask.shape)}"
            )
        module.weight_mask.copy_(mask.to(module.weight_mask.dtype))
        if zero_pruned or not module.straight_through:
            module.weight_orig.mul_(module.weight_mask)


@torch.no_grad()
def rescale_to_kept_fan_in(model: nn.Module) -> None:
    """Multiply each masked layer's kept weights of output unit i by ``sqrt(fan_in / kept_i)``:
    the variance its initialisation had for ``fan_in`` inputs now holds for the ``kept_i`` it
    keeps (the sparsity-aware initialisation of Evci et al. 2022, "Gradient flow in sparse
    neural networks"). A very sparse layer at the dense scale shrinks the signal by the density
    at every layer. Units without inputs are left as they are.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> layer = add_masks(nn.Sequential(nn.Linear(4, 2, bias=False)))
    >>> _ = layer[0].weight_orig.data.fill_(1.0)
    >>> apply_masks(layer, {"0": torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])})
    >>> rescale_to_kept_fan_in(layer)
    >>> layer[0].weight_orig.tolist()
    [[2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    """
    for _, module in masked_modules(model):
        mask = module.weight_mask
        fan_in = mask[0].numel()
        kept = mask.flatten(1).sum(dim=1).clamp(min=1)
        scale = (fan_in / kept).sqrt().view(-1, *([1] * (mask.dim() - 1)))
        module.weight_orig.mul_(scale.to(module.weight_orig)).mul_(mask)


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Boolean copies of every mask, by module name."""
    return {name: m.weight_mask.detach().bool().clone() for name, m in masked_modules(model)}


def kept_fractions(model: nn.Module) -> dict[str, float]:
    return {name: float(m.weight_mask.mean()) for name, m in masked_modules(model)}


def compression(model: nn.Module) -> float:
    """Total weights / kept weights over every Linear/Conv layer (unmasked layers count as
    fully kept)."""
    total = kept = 0
    for _, module in weight_modules(model):
        mask = getattr(module, "weight_mask", None)
        total += module.weight_orig.numel() if mask is not None else module.weight.numel()
        kept += int(mask.sum()) if mask is not None else module.weight.numel()
    return total / kept if kept else float("inf")


def dense_modules(model: nn.Module) -> list[str]:
    """Names of the modules with parameters that are left dense: weight layers without masks
    and every other parametrised module (BatchNorm, Embedding, ...)."""
    out = []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if own and not hasattr(module, "weight_mask"):
            out.append(name or type(module).__name__)
    return out


@torch.no_grad()
def mask_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Zero every per-weight optimizer buffer (momentum, Adam moments) at pruned positions of
    layers not in straight-through mode: a weight pruned mid-stage (RigL, gradual pruning)
    otherwise keeps moving on its stale momentum."""
    for _, module in masked_modules(model):
        if module.straight_through:
            continue
        weight = module.weight_orig
        for value in optimizer.state.get(weight, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                value.mul_(module.weight_mask)


def held_at_zero(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(weight_orig, weight_mask)`` of every masked layer not in straight-through mode: the
    weights whose pruned entries, gradients and optimizer state are kept at zero."""
    return [
        (m.weight_orig, m.weight_mask) for _, m in masked_modules(model) if not m.straight_through
    ]


@torch.no_grad()
def zero_pruned(pairs: list[tuple[torch.Tensor, torch.Tensor]], *, grads: bool) -> None:
    """Multiply the weights (or, with ``grads``, their gradients) of ``pairs`` by their masks in
    one fused call per step (the per-layer Python loop costs more than the multiplication)."""
    if grads:
        pairs = [(w.grad, m) for w, m in pairs if w.grad is not None]
    if pairs:
        torch._foreach_mul_([w for w, _ in pairs], [m for _, m in pairs])


def masks_version(model: nn.Module) -> int:
    """A number that changes whenever any mask is modified in place (cheap change detection)."""
    return sum(m.weight_mask._version for _, m in masked_modules(model))


def strip_masks(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without masking machinery: each masked layer's ``weight`` is its
    ``weight_orig * weight_mask`` as a plain parameter (what the masked model computes with)."""
    import copy

    masked = [m for _, m in masked_modules(model)]
    # the masked weight a forward hook computes is no graph leaf: set it aside to copy
    computed = [m.__dict__.pop("weight", None) for m in masked]
    try:
        plain = copy.deepcopy(model)
    finally:
        for module, weight in zip(masked, computed, strict=True):
            if weight is not None:
                module.__dict__["weight"] = weight
    with torch.no_grad():
        for _, module in masked_modules(plain):
            weight = module.weight_orig.detach() * module.weight_mask
            del module._parameters["weight_orig"]
            del module._buffers["weight_mask"]
            module._forward_pre_hooks.clear()
            module.__dict__.pop("weight", None)
            module.weight = nn.Parameter(weight)
    return plain
