"""WoodFisher (Singh and Alistarh 2020): Optimal Brain Surgeon with a block-diagonal inverse of the
empirical Fisher, built by Woodbury (Sherman-Morrison) rank-one updates.

The loss near the trained weights ``w`` is modelled as ``L(w + d) ~ L(w) + 1/2 d^T F d`` with the
dampened empirical Fisher ``F = damp I + (1/m) sum_i g_i g_i^T`` of ``m`` gradients ``g_i``.
Removing weight ``q`` alone costs ``w_q^2 / (2 [F^-1]_qq)`` (its score: lowest removed first)
once the other weights move by the OBS step ``-w_q F^-1 e_q / [F^-1]_qq``. Removing a set ``Q``
at once, the paper's multi-weight update is ``d = -F^-1[:, Q] ([F^-1]_QQ)^-1 w_Q``: the minimiser
of ``d^T F d`` subject to ``(w + d)_Q = 0``.

Choices here (and where the paper and its reference code, IST-DASLab/WoodFisher, differ):

- Blocks: each pruned layer's flattened weights are cut into contiguous blocks of
  ``block_size``, the last block of a layer padded with coordinates whose gradients are zero (the
  code's ``--fittable-params`` chunks, whose last chunk is shorter instead). A zero-gradient
  coordinate is decoupled (its row of ``F^-1`` is ``e/damp``), so padding changes nothing, and
  padded coordinates are never ranked nor pruned. Blocks never cross layers.
- Already-pruned weights: their gradients are zeroed before the Fisher is built (as the code
  does), which makes each block's inverse the inverse of the Fisher of its surviving weights.
- Gradient averaging: the paper's rank-one terms are per-example gradients; the code's
  ``--fisher-mini-bsz`` averages the gradients of a mini-batch before each outer product (and
  still divides by the number of terms). ``fisher_batch`` is that mini-batch (1: the paper).
- The multi-weight update: the paper derives the joint update above; the code's block pruner
  adds the single-weight OBS steps of the removed weights, ``-sum_q w_q F^-1 e_q / [F^-1]_qq``,
  ignoring the correlations between them, then masks. Here: the joint update, per block.
- Scores: the code ranks by ``w^2 / ([F^-1]_qq + 1e-10)``, without the 1/2 (the same order).
- Damping: the code's default is 1e-3; its experiment scripts use 1e-5 (ours).
- Sizes: the code's scripts use 1000 gradients (ResNet-20) or 400 of 400-example mini-batches
  (ResNet-50) and chunks of 1000-2000 weights; ours default to 400 gradients and blocks of 100,
  which keep LeNet-sized models within a minute on a CPU.

Precision and memory: every inverse and update is computed in float64; the inverse blocks hold
``P x block_size`` float64 numbers for ``P`` pruned weights (8 P B bytes: 0.2 GiB for
LeNet-300-100 with blocks of 100); the update solves the blocks it touches a chunk at a time,
with about three copies of 2^25 float64 numbers (0.75 GiB) at most on top.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.prune.allocation import allocate, layer_sparsities
from topoprune.prune.curvature import Loss, per_example_gradients
from topoprune.prune.masks import apply_masks, current_masks
from topoprune.prune.method import Context, hp
from topoprune.prune.methods import METHODS
from topoprune.prune.scoring import ScoreConfig, ScoreMethod

__all__ = [
    "BlockLayout",
    "WoodFisher",
    "WoodFisherConfig",
    "block_fisher_inverse",
    "fisher_gradients",
    "mean_over_groups",
    "obs_block_update",
    "obs_scores",
    "prune_with_update",
    "woodbury_inverse",
]

UPDATE_CHUNK_NUMBERS = 2**25  # the OBS update copies at most this many block entries at once


def _pad_last(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` with its last dimension filled up to ``size`` with zeros (False for masks)."""
    missing = size - x.shape[-1]
    if missing < 0:
        raise TopopruneError(f"cannot pad a last dimension of {x.shape[-1]} down to {size}")
    return torch.cat([x, x.new_zeros(*x.shape[:-1], missing)], dim=-1) if missing else x


# ---- the inverse ----------------------------------------------------------------------------


def block_fisher_inverse(grads: torch.Tensor, block_size: int, damp: float) -> torch.Tensor:
    """The inverse of ``F = damp I + (1/m) sum_i g_i g_i^T`` on each contiguous block of the
    weight vector, by ``m`` Sherman-Morrison updates from ``I / damp`` (no dense inversion).

    All blocks are updated at once: update ``i`` is ``F^-1 <- F^-1 - u u^T / (m + g^T u)`` with
    ``u = F^-1 g`` and ``g`` the block's part of ``grads[i]``. Computed and returned in float64;
    memory ``P x block_size`` float64 numbers (``8 P B`` bytes). The last block is padded with
    zero gradients: its padded coordinates are decoupled (rows and columns ``e / damp``).

    Parameters
    ----------
    grads : torch.Tensor
        ``(m, P)``: the ``m`` gradients (rows) of the ``P`` weights, any float dtype.
    block_size : int
        ``B``, the weights per block.
    damp : float
        The dampening ``damp > 0`` added to the diagonal.

    Returns
    -------
    torch.Tensor
        ``(ceil(P / B), B, B)`` float64: block ``k`` is the inverse for weights
        ``k B, ..., k B + B - 1``.

    Examples
    --------
    >>> g = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    >>> inverse = block_fisher_inverse(g, 2, damp=0.5)
    >>> inverse.shape
    torch.Size([2, 2, 2])
    >>> fisher = 0.5 * torch.eye(2, dtype=torch.float64) + g[:, :2].T @ g[:, :2] / 2
    >>> torch.allclose(inverse[0] @ fisher, torch.eye(2, dtype=torch.float64))
    True
    >>> inverse[1, 1, 1].item()  # a padded coordinate: 1 / damp
    2.0
    """
    if grads.dim() != 2 or len(grads) == 0:
        raise TopopruneError(f"gradients must be (m >= 1, P), got shape {tuple(grads.shape)}")
    if block_size < 1:
        raise TopopruneError(f"block size must be >= 1, got {block_size}")
    if not damp > 0:
        raise TopopruneError(f"dampening must be > 0, got {damp}")
    count, size = grads.shape
    blocks = math.ceil(size / block_size)
    eye = torch.eye(block_size, dtype=torch.float64, device=grads.device) / damp
    inverse = eye.repeat(blocks, 1, 1)
    for row in grads:
        g = _pad_last(row.to(torch.float64), blocks * block_size).view(blocks, block_size, 1)
        u = torch.bmm(inverse, g)
        # m + g^T F^-1 g > 0 (F^-1 is positive definite): scale u so the update is -u u^T
        u /= (count + (g * u).sum(1, keepdim=True)).sqrt()
        inverse.baddbmm_(u, u.transpose(1, 2), alpha=-1.0)
    return inverse


def woodbury_inverse(grads: torch.Tensor, damp: float) -> torch.Tensor:
    """The inverse of the empirical Fisher ``damp I + (1/m) sum_i g_i g_i^T`` by ``m`` rank-one
    (Sherman-Morrison) updates from ``I / damp``, in float64: one block of
    :func:`block_fisher_inverse`.

    Parameters
    ----------
    grads : torch.Tensor
        ``(m, d)``: the gradients, one per row.
    damp : float
        The dampening ``damp > 0``.

    Returns
    -------
    torch.Tensor
        ``(d, d)`` float64.

    Examples
    --------
    >>> g = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    >>> fisher = 0.1 * torch.eye(2, dtype=torch.float64) + g.T @ g / 2
    >>> torch.allclose(woodbury_inverse(g, 0.1) @ fisher, torch.eye(2, dtype=torch.float64))
    True
    """
    if grads.dim() != 2:
        raise TopopruneError(f"gradients must be (m, d), got shape {tuple(grads.shape)}")
    return block_fisher_inverse(grads, grads.shape[1], damp)[0]


# ---- scores and the update ---------------------------------------------------------------------


def _blocked(flat: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``flat`` (``P`` entries) padded to the blocks of ``inverse`` and viewed ``(blocks, B)``."""
    blocks, size, _ = inverse.shape
    if not (blocks - 1) * size < flat.numel() <= blocks * size:
        raise TopopruneError(
            f"{flat.numel()} weights do not fill {blocks} blocks of {size} (the last one padded)"
        )
    return _pad_last(flat.flatten(), blocks * size).view(blocks, size)


def obs_scores(weights_flat: torch.Tensor, fisher_inv_blocks: torch.Tensor) -> torch.Tensor:
    """The OBS saliency ``w_q^2 / (2 [F^-1]_qq)`` of every weight: the rise of the quadratic
    model of the loss when ``w_q`` alone is removed and the others move optimally.

    Parameters
    ----------
    weights_flat : torch.Tensor
        ``(P,)`` weights, in the order of the blocks.
    fisher_inv_blocks : torch.Tensor
        ``(blocks, B, B)`` from :func:`block_fisher_inverse`.

    Returns
    -------
    torch.Tensor
        ``(P,)`` float64 scores (higher: keep).

    Examples
    --------
    >>> inverse = torch.tensor([[[2.0, 0.0], [0.0, 0.5]]], dtype=torch.float64)
    >>> obs_scores(torch.tensor([2.0, 1.0]), inverse).tolist()
    [1.0, 1.0]
    """
    diagonal = fisher_inv_blocks.diagonal(dim1=1, dim2=2).to(torch.float64)
    w = _blocked(weights_flat.to(torch.float64), fisher_inv_blocks)
    return (w.square() / (2 * diagonal)).flatten()[: weights_flat.numel()]


def _joint_step(inverse: torch.Tensor, w: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """``-F^-1[:, Q] ([F^-1]_QQ)^-1 w_Q`` for blocks ``(n, B, B)``, weights and masks ``(n, B)``."""
    q = removed.to(inverse.dtype)
    # [F^-1]_QQ x_Q = w_Q, completed by the identity off Q (x = 0 there): one batched solve
    system = inverse * q.unsqueeze(2) * q.unsqueeze(1) + torch.diag_embed(1 - q)
    x = torch.cholesky_solve((w * q).unsqueeze(2), torch.linalg.cholesky(system))
    return -torch.bmm(inverse, x).squeeze(2)


def obs_block_update(
    weights_flat: torch.Tensor, fisher_inv_blocks: torch.Tensor, prune_flat_mask: torch.Tensor
) -> torch.Tensor:
    """Remove the weights of ``prune_flat_mask`` and move the others of their block by the joint
    OBS update ``d = -F^-1[:, Q] ([F^-1]_QQ)^-1 w_Q`` (``Q``: the block's removed weights),
    the minimiser of ``d^T F d`` subject to ``(w + d)_Q = 0``.

    Blocks without removed weights are left as they are; removed weights are set to exactly 0.
    Computed in float64 (the ``Q x Q`` systems by Cholesky), returned in the weights' dtype.

    Parameters
    ----------
    weights_flat : torch.Tensor
        ``(P,)`` weights, in the order of the blocks.
    fisher_inv_blocks : torch.Tensor
        ``(blocks, B, B)`` from :func:`block_fisher_inverse`.
    prune_flat_mask : torch.Tensor
        ``(P,)`` booleans: the weights to remove.

    Returns
    -------
    torch.Tensor
        ``(P,)``: the updated weights.

    Examples
    --------
    >>> inverse = torch.tensor([[[2.0, 1.0], [1.0, 2.0]]], dtype=torch.float64)
    >>> obs_block_update(torch.tensor([1.0, 1.0]), inverse, torch.tensor([True, False]))
    tensor([0.0000, 0.5000])
    """
    if prune_flat_mask.shape != weights_flat.shape:
        raise TopopruneError(
            f"mask shape {tuple(prune_flat_mask.shape)} differs from the weights' "
            f"{tuple(weights_flat.shape)}"
        )
    w = _blocked(weights_flat.to(torch.float64), fisher_inv_blocks).clone()
    removed = _blocked(prune_flat_mask.bool(), fisher_inv_blocks)
    touched = removed.any(1).nonzero().squeeze(1)
    per_chunk = max(1, UPDATE_CHUNK_NUMBERS // fisher_inv_blocks[0].numel())
    for chunk in touched.split(per_chunk):
        inverse = fisher_inv_blocks[chunk].to(torch.float64)
        w[chunk] += _joint_step(inverse, w[chunk], removed[chunk])
    w[removed] = 0.0
    return w.flatten()[: weights_flat.numel()].to(weights_flat.dtype)


# ---- gradients ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockLayout:
    """The flattened weight vector of the pruned layers, in order, each layer padded to a
    multiple of ``block_size`` (so that no block crosses two layers).

    Examples
    --------
    >>> layout = BlockLayout({"a": torch.Size([2, 3]), "b": torch.Size([2])}, block_size=4)
    >>> flat = layout.flatten({"a": torch.ones(2, 3), "b": torch.full((2,), 2.0)})
    >>> flat.tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0]
    >>> layout.unflatten(flat)["b"].tolist()
    [2.0, 2.0]
    """

    shapes: dict[str, torch.Size]
    block_size: int

    def padded(self, name: str) -> int:
        return math.ceil(self.shapes[name].numel() / self.block_size) * self.block_size

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tensors shaped ``(..., *shape)`` by layer name to one ``(..., padded size)`` tensor."""
        parts = []
        for name, shape in self.shapes.items():
            t = tensors[name]
            lead = t.shape[: t.dim() - len(shape)]
            parts.append(_pad_last(t.reshape(*lead, shape.numel()), self.padded(name)))
        return torch.cat(parts, dim=-1)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A ``(padded size,)`` vector back to one tensor per layer, without the padding."""
        out, start = {}, 0
        for name, shape in self.shapes.items():
            out[name] = flat[start : start + shape.numel()].view(shape)
            start += self.padded(name)
        return out


def mean_over_groups(chunks: Iterable[torch.Tensor], group: int) -> torch.Tensor:
    """The means of consecutive groups of ``group`` rows of the concatenated ``chunks`` (groups
    may span chunks; an incomplete last group is dropped).

    Examples
    --------
    >>> rows = [torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([[7.0], [0.0]])]
    >>> mean_over_groups(rows, 2).tolist()
    [[2.0], [6.0]]
    """
    if group < 1:
        raise TopopruneError(f"group size must be >= 1, got {group}")
    means, pending = [], None
    for chunk in chunks:
        rows = chunk if pending is None else torch.cat([pending, chunk])
        full = len(rows) // group * group
        if full:
            means.append(rows[:full].view(-1, group, *rows.shape[1:]).mean(1))
        pending = rows[full:]
    if not means:
        raise TopopruneError(f"fewer than {group} examples: no gradient to build the Fisher from")
    return torch.cat(means)


def fisher_gradients(
    model: nn.Module,
    layout: BlockLayout,
    masks: dict[str, torch.Tensor],
    batches: Iterable,
    loss_fn: Loss,
    group: int = 1,
) -> torch.Tensor:
    """The rows of the empirical Fisher: per-example gradients of the layers of ``layout``,
    zero at pruned weights (``masks``), averaged over groups of ``group`` examples, flattened by
    ``layout``: ``(m, padded size)``."""
    names = list(layout.shapes)

    def rows() -> Iterable[torch.Tensor]:
        for inputs, targets in batches:
            grads = per_example_gradients(model, names, inputs, targets, loss_fn)
            yield layout.flatten({n: g * masks[n].to(g.dtype) for n, g in grads.items()})

    return mean_over_groups(rows(), group)


def prune_with_update(
    layout: BlockLayout,
    weights_flat: torch.Tensor,
    fisher_inv_blocks: torch.Tensor,
    masks: dict[str, torch.Tensor],
    sparsity: dict[str, float] | float,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The masks keeping the highest OBS scores (by :func:`allocate` from ``masks`` to
    ``sparsity``: per layer, or one value for one ranking) and every layer's weights after the
    joint OBS update of the removed ones (float64), by layer name."""
    scores = layout.unflatten(obs_scores(weights_flat, fisher_inv_blocks))
    kept = allocate(scores, masks, sparsity, granularity="element")
    removed = layout.flatten({n: masks[n] & ~kept[n] for n in masks})
    return kept, layout.unflatten(obs_block_update(weights_flat, fisher_inv_blocks, removed))


# ---- the method -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WoodFisherConfig(ScoreConfig):
    fisher_examples: int = hp(
        "rank-one terms m of the empirical Fisher, each from --fisher-batch examples", 400, low=1
    )
    fisher_batch: int = hp(
        "examples whose gradients are averaged into one rank-one term (1: per-example)", 1, low=1
    )
    block_size: int = hp(
        "weights per diagonal block of the Fisher inverse (memory: 8 x weights x this bytes)",
        100,
        low=1,
    )
    damp: float = hp("dampening lambda of F = lambda I + mean g g^T", 1e-5, low=0, low_open=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.granularity != "element":
            raise TopopruneError(
                f"woodfisher removes single weights: granularity must be element, "
                f"got {self.granularity}"
            )


@METHODS.register("woodfisher")
class WoodFisher(ScoreMethod):
    """Prune by the OBS saliency of a block-diagonal WoodFisher inverse; move the survivors."""

    Config = WoodFisherConfig
    paper = (
        "Singh and Alistarh 2020, WoodFisher: efficient second-order approximation for neural "
        "network compression"
    )
    contract_overrides: ClassVar[dict] = {"fisher_examples": 40}  # 600 examples in that run

    def _curvature(
        self, ctx: Context, masks: dict[str, torch.Tensor]
    ) -> tuple[BlockLayout, torch.Tensor, torch.Tensor]:
        """The layout, the flat (masked) weights in float64 and the Fisher inverse blocks."""
        c = self.config
        modules = dict(ctx.pruned_modules())
        layout = BlockLayout({n: modules[n].weight_orig.shape for n in self.names}, c.block_size)
        weights = layout.flatten(
            {n: modules[n].weight_orig.detach().double() * masks[n] for n in self.names}
        )
        batches = ctx.scoring_batches(c.fisher_examples * c.fisher_batch)
        grads = fisher_gradients(ctx.model, layout, masks, batches, ctx.loss_fn, c.fisher_batch)
        return layout, weights, block_fisher_inverse(grads, c.block_size, c.damp)

    def scores(self, ctx: Context) -> dict[str, torch.Tensor]:
        layout, weights, inverse = self._curvature(ctx, current_masks(ctx.model))
        return layout.unflatten(obs_scores(weights, inverse))

    def _goal(self, ctx: Context, schedule: Callable[[float], float]) -> dict[str, float] | float:
        """The sparsity this pruning step reaches (per layer, or of the network for global)."""
        c = self.config
        shapes = {n: tuple(m.weight_mask.shape) for n, m in ctx.pruned_modules()}
        final = layer_sparsities(shapes, c.sparsity, c.allocation)
        if isinstance(final, dict):
            return {n: schedule(s) for n, s in final.items()}
        return schedule(final)

    def prune_to(self, ctx: Context, schedule: Callable[[float], float]) -> None:
        """Score, choose the masks by allocation, apply the joint OBS update block by block."""
        masks = current_masks(ctx.model)
        layout, weights, inverse = self._curvature(ctx, masks)
        kept, updated = prune_with_update(layout, weights, inverse, masks,
                                          self._goal(ctx, schedule))  # fmt: skip
        modules = dict(ctx.pruned_modules())
        with torch.no_grad():
            for name in self.names:
                weight = modules[name].weight_orig
                weight.copy_(updated[name].to(weight.dtype))
        apply_masks(ctx.model, kept)
