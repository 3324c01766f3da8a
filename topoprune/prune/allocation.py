"""Shared mask arithmetic of the pruning methods: per-layer values, magnitude thresholds,
target sparsities (per layer or global), random masks of exact size."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from topoprune.errors import TopopruneError


def per_layer(values: Sequence[float], names: Sequence[str], what: str) -> dict[str, float]:
    """One value for every layer (a single value is broadcast)."""
    values = list(values)
    if len(values) == 1:
        values = values * len(names)
    if len(values) != len(names):
        raise TopopruneError(
            f"{what}: give 1 value or {len(names)} (one per layer: "
            f"{', '.join(names)}), got {len(values)}"
        )
    return dict(zip(names, (float(v) for v in values)))


def check_fraction(value: float, what: str) -> float:
    if not 0.0 <= value < 1.0:
        raise TopopruneError(f"{what} must be in [0, 1), got {value:g}")
    return value


def keep_largest(scores: torch.Tensor, mask: torch.Tensor, kept: int) -> torch.Tensor:
    """Among the entries where ``mask`` is set, keep the ``kept`` with the largest score."""
    flat = torch.where(mask.bool(), scores, torch.full_like(scores, -1.0)).flatten()
    kept = max(0, min(kept, int(mask.sum())))
    out = torch.zeros_like(flat, dtype=torch.bool)
    if kept:
        out[torch.topk(flat, kept, sorted=False).indices] = True
    return out.view_as(mask)


def magnitude_masks_by_sparsity(
    weights: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    sparsity: dict[str, float] | float,
    *,
    global_allocation: bool = False,
) -> dict[str, torch.Tensor]:
    """Keep the largest-magnitude surviving weights so that each layer (or the whole network,
    with ``global_allocation``) reaches the target sparsity. Masks only shrink."""
    if global_allocation:
        target = float(sparsity) if not isinstance(sparsity, dict) else None
        if target is None:
            raise TopopruneError("global allocation takes one sparsity for the whole network")
        check_fraction(target, "sparsity")
        scores = torch.cat([weights[n].abs().flatten()[masks[n].flatten().bool()] for n in weights])
        total = sum(m.numel() for m in masks.values())
        kept = round(total * (1 - target))
        if kept >= scores.numel():
            return {n: m.bool().clone() for n, m in masks.items()}
        threshold = torch.kthvalue(scores, scores.numel() - kept).values if kept else scores.max()
        return {n: masks[n].bool() & (weights[n].abs() > threshold) for n in weights}
    out = {}
    for name, weight in weights.items():
        target = sparsity[name] if isinstance(sparsity, dict) else float(sparsity)
        check_fraction(target, f"sparsity of {name}")
        kept = round(weight.numel() * (1 - target))
        out[name] = keep_largest(weight.abs(), masks[name], kept)
    return out


def magnitude_masks_by_quality(
    weights: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    quality: dict[str, float],
) -> dict[str, torch.Tensor]:
    """Han et al.: prune surviving weights below quality x std of the layer's surviving weights."""
    out = {}
    for name, weight in weights.items():
        alive = masks[name].bool()
        std = weight[alive].std() if alive.sum() > 1 else torch.tensor(0.0)
        out[name] = alive & (weight.abs() >= quality[name] * std)
    return out


def random_masks(
    shapes: dict[str, torch.Size], kept: dict[str, float], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Masks with exactly round(kept x size) ones per layer, uniformly at random."""
    out = {}
    for name, shape in shapes.items():
        size = int(torch.Size(shape).numel())
        count = round(size * kept[name])
        flat = torch.zeros(size, dtype=torch.bool)
        flat[torch.randperm(size, generator=generator)[:count]] = True
        out[name] = flat.view(shape)
    return out
