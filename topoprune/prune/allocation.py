"""Shared mask arithmetic of the pruning methods: per-layer values, scores to masks by allocation
(per layer, uniform, global, ERK) and granularity (element, kernel, filter, channel), sparsity
schedules (geometric, cubic), magnitude thresholds, random masks of exact size."""

from __future__ import annotations

import math
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
    """Among the entries where ``mask`` is set, keep the ``kept`` with the largest score (scores
    may be negative, as movement scores are: masked-out entries rank below every score).

    >>> keep_largest(torch.tensor([-3.0, -2.0, 5.0]), torch.tensor([True, True, False]), 1)
    tensor([False,  True, False])
    """
    flat = torch.where(mask.bool(), scores, torch.full_like(scores, -math.inf)).flatten()
    kept = max(0, min(kept, int(mask.sum())))
    out = torch.zeros_like(flat, dtype=torch.bool)
    if kept:
        out[torch.topk(flat, kept, sorted=False).indices] = True
    return out.view_as(mask)


ALLOCATIONS = ("layer", "uniform", "global", "erk")
GRANULARITIES = ("element", "kernel", "filter", "channel")


def group_scores(scores: torch.Tensor, granularity: str) -> torch.Tensor:
    """Sum element scores over groups: ``element`` (no grouping), ``kernel`` (one per
    output x input channel pair of a convolution), ``filter`` (one per output unit), ``channel``
    (one per input unit or channel).

    Examples
    --------
    >>> s = torch.arange(8.0).view(2, 2, 2)  # 2 filters, 2 input channels, kernels of 2
    >>> group_scores(s, "filter").tolist(), group_scores(s, "channel").tolist()
    ([6.0, 22.0], [10.0, 18.0])
    >>> group_scores(s, "kernel").tolist()
    [[1.0, 5.0], [9.0, 13.0]]
    """
    if granularity == "element" or (granularity == "kernel" and scores.dim() <= 2):
        return scores
    if granularity == "kernel":
        return scores.flatten(2).sum(2)
    if granularity == "filter":
        return scores.flatten(1).sum(1)
    if granularity == "channel":
        return scores.transpose(0, 1).flatten(1).sum(1)
    raise TopopruneError(
        f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}"
    )


def expand_groups(groups: torch.Tensor, shape: torch.Size, granularity: str) -> torch.Tensor:
    """A per-group mask broadcast back to the weight's ``shape`` (inverse of grouping)."""
    if granularity == "element" or (granularity == "kernel" and len(shape) <= 2):
        return groups.view(shape)
    trailing = [1] * (len(shape) - groups.dim())
    if granularity in ("kernel", "filter"):
        return groups.view(*groups.shape, *trailing).expand(shape)
    return groups.view(1, -1, *([1] * (len(shape) - 2))).expand(shape)  # channel


def erk_densities(shapes: dict[str, Sequence[int]], density: float) -> dict[str, float]:
    """Erdos-Renyi-Kernel densities (Evci et al. 2020): layer l's density is proportional to
    ``sum(shape) / prod(shape)`` with the total kept weights ``density x total``; a layer that
    would exceed density 1 is made dense and the rest rescaled (largest first, as RigL's code).

    Examples
    --------
    >>> d = erk_densities({"a": (300, 784), "b": (100, 300), "c": (10, 100)}, 0.1)
    >>> [round(d[n], 4) for n in "abc"]  # c would exceed 1: dense, the others rescaled
    [0.0796, 0.2302, 1.0]
    >>> round(sum(d[n] * s for n, s in {"a": 235200, "b": 30000, "c": 1000}.items()) / 266200, 9)
    0.1
    """
    check_fraction(1 - density, "sparsity")
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / sizes[n] for n, s in shapes.items()}
    total = sum(sizes.values())
    dense: set[str] = set()
    while True:
        budget = density * total - sum(sizes[n] for n in dense)
        divisor = sum(raw[n] * sizes[n] for n in sizes if n not in dense)
        if divisor == 0:
            break
        scale = budget / divisor
        free = [n for n in sizes if n not in dense]
        largest = max(raw[n] for n in free)
        if scale * largest <= 1:
            break
        dense |= {n for n in free if raw[n] == largest}
    return {n: 1.0 if n in dense else scale * raw[n] for n in sizes}


def check_network_sparsity(sparsity: Sequence[float], allocation: str) -> None:
    """Allocations other than ``layer`` take one sparsity for the whole network."""
    if allocation != "layer" and len(sparsity) != 1:
        raise TopopruneError(
            f"allocation {allocation} takes one sparsity for the whole network, got "
            f"{len(sparsity)} values (per-layer values need allocation 'layer')"
        )


def layer_sparsities(
    shapes: dict[str, Sequence[int]], sparsity: Sequence[float], allocation: str
) -> dict[str, float] | float:
    """Per-layer target sparsities (``layer``, ``uniform``, ``erk``) or, for ``global``, the one
    network-wide sparsity."""
    names = list(shapes)
    if allocation == "layer":
        values = per_layer(sparsity, names, "sparsity")
    elif allocation in ("uniform", "global", "erk"):
        check_network_sparsity(sparsity, allocation)
        target = check_fraction(float(sparsity[0]), "sparsity")
        if allocation == "global":
            return target
        if allocation == "uniform":
            values = dict.fromkeys(names, target)
        else:
            values = {n: 1 - d for n, d in erk_densities(shapes, 1 - target).items()}
    else:
        raise TopopruneError(
            f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}"
        )
    for name, value in values.items():
        check_fraction(value, f"sparsity of {name}")
    return values


def allocate(
    scores: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    sparsity: dict[str, float] | float,
    *,
    granularity: str = "element",
) -> dict[str, torch.Tensor]:
    """Masks keeping the highest-scoring surviving weights (or groups) so that each layer
    reaches its target sparsity, or, with one float, the network as a whole (one global
    ranking). Masks only shrink: a pruned weight stays pruned.

    Examples
    --------
    >>> w = {"a": torch.tensor([[3.0, -1.0], [0.5, 2.0]])}
    >>> m = {"a": torch.ones(2, 2, dtype=torch.bool)}
    >>> allocate({"a": w["a"].abs()}, m, {"a": 0.5})["a"].tolist()
    [[True, False], [False, True]]
    >>> allocate({"a": w["a"].abs()}, m, {"a": 0.5}, granularity="filter")["a"].tolist()
    [[True, True], [False, False]]
    """
    groups = {n: group_scores(scores[n].detach().float(), granularity) for n in scores}
    alive = {n: group_scores(masks[n].float(), granularity) > 0 for n in scores}
    if isinstance(sparsity, dict):
        kept = {}
        for name, group in groups.items():
            target = check_fraction(sparsity[name], f"sparsity of {name}")
            kept[name] = keep_largest(group, alive[name], round(group.numel() * (1 - target)))
    else:
        target = check_fraction(float(sparsity), "sparsity")
        total = sum(g.numel() for g in groups.values())
        flat = torch.cat([g.flatten() for g in groups.values()])
        flat_alive = torch.cat([a.flatten() for a in alive.values()])
        chosen = keep_largest(flat, flat_alive, round(total * (1 - target)))
        kept, start = {}, 0
        for name, group in groups.items():
            kept[name] = chosen[start : start + group.numel()].view_as(group)
            start += group.numel()
    return {
        n: masks[n].bool() & expand_groups(kept[n], masks[n].shape, granularity) for n in scores
    }


def geometric_sparsity(final: float, round_index: int, rounds: int) -> float:
    """Target after round ``round_index`` (0-based) of ``rounds`` when each round keeps the same
    fraction of the survivors (iterative pruning, Han et al. 2015; Frankle and Carbin 2019).

    >>> round(geometric_sparsity(0.99, 0, 2), 6)
    0.9
    """
    return 1 - (1 - final) ** ((round_index + 1) / rounds)


def cubic_sparsity(final: float, progress: float, initial: float = 0.0) -> float:
    """Zhu and Gupta's (2017) gradual schedule: ``s_f + (s_i - s_f) (1 - progress)^3``, with
    ``progress`` in [0, 1] the share of the pruning window elapsed.

    >>> cubic_sparsity(0.9, 0.0), round(cubic_sparsity(0.9, 0.5), 4), cubic_sparsity(0.9, 1.0)
    (0.0, 0.7875, 0.9)
    """
    progress = min(max(progress, 0.0), 1.0)
    return final + (initial - final) * (1 - progress) ** 3


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
