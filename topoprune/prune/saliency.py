"""Removing what the loss least needs: Optimal Brain Damage, Optimal Brain Surgeon, first-order
Taylor saliency.

- ``obd`` (LeCun et al. 1990): saliency ``h_kk w_k^2 / 2`` from the diagonal of the Hessian of the
  training loss on ``scoring_examples`` examples: the Gauss-Newton (Levenberg-Marquardt) diagonal
  computed exactly, or as the paper backpropagates it (``lecun``), Hutchinson's unbiased
  estimate of the full Hessian's diagonal, or the empirical Fisher's diagonal (the "diagonal
  Fisher" baseline of WoodFisher).
- ``obs`` (Hassibi and Stork 1993): remove the weight of least saliency ``w_q^2 / (2 [H^-1]_qq)``,
  move the others by ``-(w_q / [H^-1]_qq) H^-1 e_q``, update the inverse, repeat. With
  ``--scope network`` ``H`` is the Gauss-Newton matrix of the loss over every pruned weight
  (exact, for small models: ``8 P^2`` bytes); with ``--scope layer`` (layer-wise OBS, Dong et al.
  2017) each layer's ``H = 2 X^T X / N`` is the Hessian of its own reconstruction error
  ``||W X - W' X||^2 / N``, the same for every row (output unit), so each row keeps its own inverse:
  ``8 rows d^2`` bytes for a layer with ``d`` inputs per row (1.5 GB for LeNet-300-100's first
  layer), one layer at a time.
- ``taylor``: first-order saliency ``|w dL/dw|`` averaged over the scoring batches (the absolute
  value taken per batch, so that gradients that cancel over the data still count); with
  ``--granularity filter`` a filter's score is the sum over its weights.
  :func:`unit_taylor_scores` is the per-unit form of Molchanov et al. (2017).

OBS and the layer-wise variant remove weights one at a time, exactly as published (no batched
approximation), and each removal is recorded with the increase of the objective it predicts.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.prune.allocation import layer_sparsities
from topoprune.prune.curvature import (
    Loss,
    batch_gradients,
    empirical_fisher_diagonal,
    evaluating,
    gauss_newton_diagonal,
    gauss_newton_matrix,
    hutchinson_diagonal,
    layer_inputs,
    lecun_diagonal,
    pruned_weights,
)
from topoprune.prune.masks import apply_masks
from topoprune.prune.method import Context, hp
from topoprune.prune.methods import METHODS
from topoprune.prune.scoring import ScoreConfig, ScoreMethod

HESSIAN_DIAGONALS = ("gauss-newton", "lecun", "hutchinson", "fisher")


def hessian_diagonal(
    model: nn.Module,
    names: list[str],
    batches: Iterable[Any],
    loss_fn: Loss,
    how: str = "gauss-newton",
    samples: int = 10,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The diagonal of the loss's curvature by ``how``: ``gauss-newton``, ``lecun`` (the same
    approximation backpropagated as in the paper, cross terms dropped), ``hutchinson`` (with
    ``samples`` Rademacher vectors per batch) or ``fisher`` (empirical)."""
    if how == "gauss-newton":
        return gauss_newton_diagonal(model, names, batches, loss_fn)
    if how == "lecun":
        return lecun_diagonal(model, names, batches, loss_fn)
    if how == "hutchinson":
        return hutchinson_diagonal(model, names, batches, loss_fn, samples, generator)
    if how == "fisher":
        return empirical_fisher_diagonal(model, names, batches, loss_fn)
    raise TopopruneError(f"hessian must be one of {', '.join(HESSIAN_DIAGONALS)}, got {how!r}")


def obd_saliency(weight: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """``h_kk w_k^2 / 2``: the loss increase a quadratic model with diagonal Hessian predicts
    for removing each weight alone.

    >>> obd_saliency(torch.tensor([1.0, -2.0]), torch.tensor([4.0, 0.5]))
    tensor([2., 1.])
    """
    return diagonal * weight.square() / 2


# ---- Optimal Brain Surgeon --------------------------------------------------------------------


def masked_inverse(hessian: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Per row of ``alive`` (rows, d), the inverse of ``hessian`` (d, d) restricted to that row's
    alive coordinates, embedded in a (rows, d, d) float64 tensor whose dead rows and columns are
    zero. Removed coordinates must not move the others: they are out of the problem.

    >>> h = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    >>> masked_inverse(h, torch.tensor([[True, False]]))[0]
    tensor([[0.5000, 0.0000],
            [0.0000, 0.0000]], dtype=torch.float64)
    """
    h = hessian.to(torch.float64)
    alive = alive.to(torch.bool)
    if bool(alive.all()):
        inverse = torch.linalg.inv(h)
        return inverse.expand(len(alive), *h.shape).clone()
    a = alive.to(torch.float64)
    restricted = h * a.unsqueeze(2) * a.unsqueeze(1) + torch.diag_embed(1 - a)
    return torch.linalg.inv(restricted) * a.unsqueeze(2) * a.unsqueeze(1)


def obs_row_sequence(
    weight: torch.Tensor, alive: torch.Tensor, hessian: torch.Tensor
) -> tuple[list[int], list[float]]:
    """The order in which Optimal Brain Surgeon removes one row's alive weights (each step the
    least ``w_q^2 / (2 [H^-1]_qq)``, then ``w -= (w_q / [H^-1]_qq) H^-1 e_q`` and the same
    rank-one update of ``H^-1``), and each removal's saliency, until none is left.

    The inverse is kept over the alive coordinates only and compacted when a quarter of them are
    gone: the cost is about ``0.43 d^3`` operations for ``d`` weights instead of ``d^3``.

    >>> h = torch.diag(torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64))
    >>> obs_row_sequence(torch.tensor([1.0, 1.0, 1.0]), torch.ones(3, dtype=torch.bool), h)
    ([0, 2, 1], [0.5, 1.0, 2.0])
    """
    index = torch.nonzero(alive.to(torch.bool)).flatten()
    h = hessian.to(torch.float64)
    inverse = torch.linalg.inv(h[index][:, index]).contiguous()
    with one_thread():
        return _greedy_removals(weight, index, inverse)


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the block: thousands of small rank-one updates run ~40x slower
    when each is split over threads (0.2 ms vs 8 ms for 784 x 784 on two cores, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _greedy_removals(
    weight: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor
) -> tuple[list[int], list[float]]:
    w = weight.detach().to(torch.float64)[index].clone()
    gone = torch.zeros(len(index), dtype=torch.bool)
    order: list[int] = []
    saliencies: list[float] = []
    left = len(index)
    while left:
        if left < 0.75 * len(index):  # compact: later updates touch only what is left
            keep = torch.nonzero(~gone).flatten()
            index, inverse, w = index[keep], inverse[keep][:, keep].contiguous(), w[keep]
            gone = torch.zeros(len(index), dtype=torch.bool)
        diagonal = inverse.diagonal()
        saliency = (w * w / (2 * diagonal.clamp_min(1e-300))).masked_fill(gone, float("inf"))
        q = int(saliency.argmin())
        column = inverse[:, q].clone()
        if not (math.isfinite(saliency[q]) and column[q] > 0):
            raise TopopruneError(
                "the Hessian's inverse lost positive definiteness: raise the dampening (--damp)"
            )
        w.sub_(column, alpha=float(w[q] / column[q]))
        inverse.addr_(column, column, alpha=-1.0 / float(column[q]))
        w[q], gone[q] = 0.0, True
        inverse[q], inverse[:, q] = 0.0, 0.0
        order.append(int(index[q]))
        saliencies.append(float(saliency[q]))
        left -= 1
    return order, saliencies


def merge_removals(saliencies: Sequence[Sequence[float]], counts: Sequence[int]) -> list[list[int]]:
    """How many weights each row has removed after ``counts`` removals of the layer-wise greedy:
    each step takes the row whose next removal has the least saliency (a row's sequence does
    not depend on the other rows, so this is the greedy over the whole layer).

    >>> merge_removals([[1.0, 5.0], [2.0, 3.0]], [1, 3, 4])
    [[1, 0], [1, 2], [2, 2]]
    """
    heap = [(seq[0], r) for r, seq in enumerate(saliencies) if seq]
    heapq.heapify(heap)
    taken, out, done = [0] * len(saliencies), [], 0
    for count in counts:
        while done < count:
            if not heap:
                raise TopopruneError(f"only {done} weights can be removed, not {count}")
            _, r = heapq.heappop(heap)
            taken[r] += 1
            done += 1
            if taken[r] < len(saliencies[r]):
                heapq.heappush(heap, (saliencies[r][taken[r]], r))
        out.append(list(taken))
    return out


def obs_weights(weight: torch.Tensor, kept: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """The weights after Optimal Brain Surgeon removed all but ``kept`` from a row: the
    minimiser of ``(w' - w)^T H (w' - w)`` with the others at zero,
    ``w'_S = w_S + H_SS^-1 H_SQ w_Q``, which is where the one-at-a-time updates lead.

    >>> h = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    >>> obs_weights(torch.tensor([1.0, 1.0]), torch.tensor([False, True]), h)
    tensor([0.0000, 1.5000], dtype=torch.float64)
    """
    w = weight.detach().to(torch.float64)
    kept = kept.to(torch.bool)
    out = torch.zeros_like(w)
    s, q = torch.nonzero(kept).flatten(), torch.nonzero(~kept).flatten()
    if len(s):
        h = hessian.to(torch.float64)
        out[s] = w[s] + torch.linalg.solve(h[s][:, s], h[s][:, q] @ w[q])
    return out


def obs_path(
    weight: torch.Tensor,
    alive: torch.Tensor,
    hessian: torch.Tensor,
    counts: Sequence[int],
) -> list[dict[str, Any]]:
    """Optimal Brain Surgeon, one weight at a time, over rows that share ``hessian`` (d, d) as
    their initial Hessian (layer-wise OBS; one row: OBS over a whole weight vector).

    Each step removes the alive weight of least saliency ``w_q^2 / (2 [H_r^-1]_qq)`` in the
    whole layer and applies the OBS update to its row. Returns, for each number of removals in
    ``counts`` (increasing), ``weight`` and ``alive`` (rows, d) and ``increase``, the sum of the
    removals' saliencies: the objective's increase under the quadratic model (exact for a
    quadratic objective).

    Examples
    --------
    A least-squares fit: removing a weight and applying the update gives the least-squares fit
    on the remaining inputs.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(100, 3, generator=g, dtype=torch.float64)
    >>> y = x @ torch.tensor([1.0, 0.1, 2.0], dtype=torch.float64)
    >>> w = torch.linalg.lstsq(x, y).solution
    >>> step = obs_path(w[None], torch.ones(1, 3, dtype=torch.bool), 2 * x.T @ x / 100, [1])[0]
    >>> step["alive"]
    tensor([[ True, False,  True]])
    >>> refit = torch.linalg.lstsq(x[:, [0, 2]], y).solution
    >>> torch.allclose(step["weight"][0, [0, 2]], refit)
    True
    """
    alive = alive.to(torch.bool)
    counts = list(counts)
    if counts != sorted(counts) or (counts and counts[-1] > int(alive.sum())):
        raise TopopruneError(f"removal counts must increase up to {int(alive.sum())}: {counts}")
    sequences = [obs_row_sequence(w, a, hessian) for w, a in zip(weight, alive, strict=True)]
    path = []
    for taken in merge_removals([s for _, s in sequences], counts):
        new_weight = torch.zeros(weight.shape, dtype=torch.float64)
        new_alive = alive.clone()
        increase = 0.0
        for r, (k, (order, saliency)) in enumerate(zip(taken, sequences, strict=True)):
            new_alive[r, order[:k]] = False
            if k:
                new_weight[r] = obs_weights(weight[r], new_alive[r], hessian)
            else:
                new_weight[r] = weight[r].detach()
            increase += sum(saliency[:k])
        path.append({"weight": new_weight, "alive": new_alive, "increase": increase})
    return path


def removal_goal(alive: torch.Tensor, sparsity: float) -> int:
    """How many more weights to remove for ``sparsity``, counted as :func:`allocate` counts the
    kept ones (``round(size x (1 - sparsity))``), so every criterion removes the same number.

    >>> removal_goal(torch.tensor([True, True, False, True]), 0.5)
    1
    """
    return alive.numel() - round(alive.numel() * (1 - sparsity)) - int((~alive).sum())


def layer_hessian(inputs: torch.Tensor, damp: float = 0.0) -> torch.Tensor:
    """``2 X^T X / N`` (float64), the Hessian of a layer's reconstruction error in one row's
    weights, plus ``damp`` x its mean diagonal on the diagonal (inputs that are always zero,
    like MNIST's border pixels, make it singular).

    >>> layer_hessian(torch.tensor([[1.0, 0.0], [1.0, 2.0]]))
    tensor([[2., 2.],
            [2., 4.]], dtype=torch.float64)
    """
    x = inputs.to(torch.float64)
    h = 2 * x.T @ x / len(x)
    if damp:
        eye = torch.eye(len(h), dtype=h.dtype, device=h.device)
        h += damp * h.diagonal().mean().clamp_min(1e-12) * eye
    return h


def rows_of(weight: torch.Tensor) -> torch.Tensor:
    """A layer's weights as (output units, inputs per unit): conv filters flattened."""
    return weight.reshape(weight.shape[0], -1)


# ---- first-order Taylor -----------------------------------------------------------------------


def taylor_scores(
    model: nn.Module, names: list[str], batches: Iterable[Any], loss_fn: Loss
) -> dict[str, torch.Tensor]:
    """``mean over batches of |w * dL_batch/dw|`` for each named layer's weights."""
    weights = pruned_weights(model, names)
    total = {n: torch.zeros_like(w) for n, w in weights.items()}
    count = 0
    for _, grads in batch_gradients(model, names, batches, loss_fn):
        for name, g in grads.items():
            total[name] += (weights[name].detach() * g).abs()
        count += 1
    if not count:
        raise TopopruneError("no batches to compute Taylor scores on")
    return {n: t / count for n, t in total.items()}


def unit_taylor_scores(
    model: nn.Module, names: list[str], batches: Iterable[Any], loss_fn: Loss
) -> dict[str, torch.Tensor]:
    """Molchanov et al. (2017): per output unit (feature map) of each named layer,
    ``mean over batches of |mean over examples and positions of z * dL/dz|`` with ``z`` the
    layer's output. After a ReLU, ``a dL/da = z dL/dz``, so this is the criterion on the
    activation the paper defines.

    >>> from topoprune.prune.masks import add_masks
    >>> model = add_masks(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)))
    >>> batch = (torch.randn(8, 2), torch.randint(0, 2, (8,)))
    >>> unit_taylor_scores(model, ["0"], [batch], nn.functional.cross_entropy)["0"].shape
    torch.Size([3])
    """
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            outputs[name] = output

        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in names]
    total: dict[str, torch.Tensor] = {}
    count = 0
    try:
        with evaluating(model):
            for inputs, targets in batches:
                loss = loss_fn(model(inputs), targets)
                grads = torch.autograd.grad(loss, [outputs[n] for n in names])
                for name, grad in zip(names, grads, strict=True):
                    product = (outputs[name] * grad).detach()
                    per_unit = product.transpose(0, 1).reshape(product.shape[1], -1).mean(1)
                    total[name] = total.get(name, 0) + per_unit.abs()
                count += 1
    finally:
        for h in handles:
            h.remove()
    if not count:
        raise TopopruneError("no batches to compute Taylor scores on")
    return {n: t / count for n, t in total.items()}


# ---- the methods ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OBDConfig(ScoreConfig):
    hessian: str = hp(
        "the Hessian diagonal: gauss-newton (the Levenberg-Marquardt approximation, exact), "
        "lecun (the same backpropagated as in the paper, cross terms dropped; Sequential "
        "models), hutchinson (unbiased estimate of the full Hessian's), fisher (empirical)",
        "gauss-newton",
        choices=HESSIAN_DIAGONALS,
    )
    scoring_examples: int = hp("training examples the Hessian diagonal is computed on", 1000, low=1)
    hutchinson_samples: int = hp("hutchinson: random vectors per batch", 10, low=1)


@METHODS.register("obd")
class OptimalBrainDamage(ScoreMethod):
    """Train, remove the weights of least ``h_kk w_k^2 / 2``, retrain; iterated or gradual."""

    Config = OBDConfig
    paper = "LeCun, Denker and Solla 1990, Optimal brain damage"
    contract_overrides: ClassVar[dict] = {"scoring_examples": 64}

    def scores(self, ctx: Context) -> dict[str, torch.Tensor]:
        c = self.config
        batches = list(ctx.scoring_batches(c.scoring_examples))
        generator = ctx.generator(tag=1)
        diagonal = hessian_diagonal(
            ctx.model, self.names, batches, ctx.loss_fn, c.hessian, c.hutchinson_samples, generator
        )
        modules = dict(ctx.pruned_modules())
        return {n: obd_saliency(modules[n].weight_orig.detach(), diagonal[n]) for n in self.names}


@dataclass(frozen=True)
class OBSConfig(ScoreConfig):
    scope: str = hp(
        "layer: each layer's reconstruction-error Hessian (layer-wise OBS); network: the "
        "Gauss-Newton matrix of the loss over all pruned weights (small models; needs "
        "--allocation global)",
        "layer",
        choices=("layer", "network"),
    )
    scoring_examples: int = hp("training examples the Hessian is computed on", 1000, low=1)
    damp: float = hp("added to the Hessian's diagonal, relative to its mean", 1e-4, low=0)


@METHODS.register("obs")
class OptimalBrainSurgeon(ScoreMethod):
    """Remove weights one at a time by ``w_q^2 / (2 [H^-1]_qq)`` and correct the others by the
    OBS update; layer-wise or over the network; retrain; iterated."""

    Config = OBSConfig
    paper = (
        "Hassibi and Stork 1993, Second order derivatives for network pruning: "
        "Optimal Brain Surgeon"
    )
    contract_overrides: ClassVar[dict] = {"scoring_examples": 64}

    def __init__(self, config: OBSConfig, names, seed: int) -> None:
        super().__init__(config, names, seed)
        if config.granularity != "element":
            raise TopopruneError("obs removes single weights: granularity must be element")
        if config.prune_schedule != "iterative":
            raise TopopruneError("obs prunes in rounds: prune-schedule must be iterative")
        if config.scope == "network" and config.allocation != "global":
            raise TopopruneError("obs over the network ranks all weights: use --allocation global")
        if config.scope == "layer" and config.allocation == "global":
            raise TopopruneError(
                "layer-wise OBS objectives are not comparable across layers: use --allocation "
                "layer, uniform or erk, or --scope network"
            )

    def scores(self, ctx: Context) -> dict[str, torch.Tensor]:
        """The single-removal saliency ``w_q^2 / (2 [H^-1]_qq)`` of the layer-wise Hessian
        (whatever ``scope``: what sensitivity analysis ranks by)."""
        inputs = layer_inputs(
            ctx.model, self.names, ctx.scoring_batches(self.config.scoring_examples)
        )
        out = {}
        for name, module in ctx.pruned_modules():
            w = rows_of(module.weight_orig.detach())
            alive = rows_of(module.weight_mask.bool())
            inverse = masked_inverse(layer_hessian(inputs[name], self.config.damp), alive)
            diagonal = torch.diagonal(inverse, dim1=1, dim2=2).clamp_min(1e-300)
            saliency = (w.double().square() / (2 * diagonal)).masked_fill(~alive, 0).float()
            out[name] = saliency.reshape(module.weight_orig.shape)
        return out

    @torch.no_grad()
    def prune_to(self, ctx: Context, schedule) -> None:
        c = self.config
        modules = dict(ctx.pruned_modules())
        shapes = {n: tuple(modules[n].weight_mask.shape) for n in self.names}
        final = layer_sparsities(shapes, c.sparsity, c.allocation)
        batches = list(ctx.scoring_batches(c.scoring_examples))
        if c.scope == "network":
            self._prune_network(ctx, modules, schedule(final), batches)
            return
        # on the CPU: thousands of tiny sequential updates gain nothing from an accelerator
        inputs = {n: x.cpu() for n, x in layer_inputs(ctx.model, self.names, batches).items()}
        increases = ctx.state.method_state.setdefault("obs_increase", {})
        for name in self.names:
            module = modules[name]
            alive = rows_of(module.weight_mask.bool())
            goal = removal_goal(alive, schedule(final[name]))
            if goal <= 0:
                continue
            hessian = layer_hessian(inputs[name], c.damp)
            weight = rows_of(module.weight_orig.detach()).cpu()
            step = obs_path(weight, alive.cpu(), hessian, [goal])[-1]
            module.weight_orig.copy_(step["weight"].reshape(module.weight_orig.shape))
            apply_masks(ctx.model, {name: step["alive"].reshape(module.weight_mask.shape)})
            increases[name] = increases.get(name, 0.0) + step["increase"]

    def _prune_network(self, ctx: Context, modules: dict, sparsity: float, batches) -> None:
        weights = torch.cat([modules[n].weight_orig.detach().flatten() for n in self.names]).cpu()
        alive = torch.cat([modules[n].weight_mask.bool().flatten() for n in self.names]).cpu()
        goal = removal_goal(alive, sparsity)
        if goal <= 0:
            return
        hessian = gauss_newton_matrix(ctx.model, self.names, batches, ctx.loss_fn).cpu()
        if self.config.damp:
            eye = torch.eye(len(hessian), dtype=hessian.dtype)
            hessian += self.config.damp * hessian.diagonal().mean() * eye
        step = obs_path(weights[None], alive[None], hessian, [goal])[-1]
        start, masks = 0, {}
        for name in self.names:
            module, size = modules[name], modules[name].weight_orig.numel()
            shape = module.weight_orig.shape
            module.weight_orig.copy_(step["weight"][0, start : start + size].reshape(shape))
            masks[name] = step["alive"][0, start : start + size].reshape(shape)
            start += size
        apply_masks(ctx.model, masks)
        total = ctx.state.method_state.get("obs_increase", {}).get("network", 0.0)
        ctx.state.method_state["obs_increase"] = {"network": total + step["increase"]}

    def report(self, state) -> dict:
        """The objective's increase each layer's removals predicted (layer-wise: of the layer's
        reconstruction error; network: of the loss)."""
        return {k: v for k, v in state.method_state.items() if k == "obs_increase"}


@dataclass(frozen=True)
class TaylorConfig(ScoreConfig):
    scoring_examples: int = hp("training examples the saliency is averaged over", 1000, low=1)


@METHODS.register("taylor")
class FirstOrderTaylor(ScoreMethod):
    """Remove the weights (or groups) of least ``|w dL/dw|``, averaged over scoring batches."""

    Config = TaylorConfig
    paper = (
        "Molchanov et al. 2017, Pruning convolutional neural networks for resource efficient "
        "inference (first-order Taylor expansion)"
    )
    contract_overrides: ClassVar[dict] = {"scoring_examples": 64}

    def scores(self, ctx: Context) -> dict[str, torch.Tensor]:
        batches = ctx.scoring_batches(self.config.scoring_examples)
        return taylor_scores(ctx.model, self.names, batches, ctx.loss_fn)
