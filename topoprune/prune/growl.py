"""GrOWL: group ordered weighted l1 regularisation removes whole rows and ties similar ones.

Zhang, Wang, Figueiredo and Balzano (ICLR 2018), *Learning to share: simultaneous parameter tying
and sparsification in deep learning*, regularise each layer's weight matrix ``W`` with the group
ordered weighted l1 norm (GrOWL) of its rows,

    Omega(W) = sum_i lambda_i ||W_[i]||,   lambda_1 >= lambda_2 >= ... >= lambda_n >= 0,

where ``W_[i]`` is the row with the ``i``-th largest Euclidean norm. Equal weights give the group
lasso; OSCAR's linearly decreasing weights (Bondell and Reich 2008) ``lambda_i = lam1 + lam2 (n -
i)`` also pull the norms of the largest rows to a common value. The norm is minimised by
proximal gradient steps: after every optimizer step, ``W <- prox_{lr Omega}(W)``, the OWL prox of
the vector of row norms (a sorted soft threshold, then the pool-adjacent-violators projection
onto the non-increasing non-negative cone: Zeng and Figueiredo 2014; Bogdan et al. 2015, SLOPE)
with each row rescaled to its new norm. Rows the prox sets to exactly zero are units to remove;
rows that end up alike are tied to one shared value and the network is retrained so.

Stages of the registered method ``growl``:

- ``dense`` (``--dense-epochs``, omitted when 0): plain training;
- ``growl`` (``--epochs``): the GrOWL proximal step after every step, with threshold
  ``lr x lambda`` (``lr`` the step's learning rate); at the end, every row whose norm is exactly
  zero is removed (its mask becomes zero, for good);
- ``tied`` (``--retrain-epochs``, learning rate ``lr x --retrain-lr-factor``): the surviving rows
  of each layer are clustered by affinity propagation (below); each cluster of two or more rows is
  set to its mean row, and the tying is kept exact while retraining: the gradients of a cluster's
  rows are replaced by their mean before the optimizer's step (so SGD with momentum and weight
  decay, or Adam, moves identical rows identically), and the cluster's first row is copied to the
  others after the step (a no-op that guards against any optimizer that would not). The clusters
  live in ``state.method_state``, so a resumed run ties the same rows.

Choices and where this module differs from the paper and the authors' code
(github.com/Dejiao2018/GrOWL, TensorFlow):

- **Groups.** A group is a row of PyTorch's weight, shape ``(out, in)``: the *incoming* weights of
  one output unit, so removing a row silences the unit's inputs (its bias still trains, so it
  passes a constant on; tying rows makes units compute the same pre-activation up to their
  biases, which are not tied). The paper and its code group by the
  rows of TensorFlow's ``(in, out)`` matrix: the *outgoing* weights of an input neuron (removing
  it removes an input feature or a hidden unit's fan-out). Convolutions use their flattened
  filters ``(out, in x kh x kw)`` as rows (the authors' code offers several reshapings, by input
  channel in their VGG runs). The thresholds are not scaled by the row length (the authors' MNIST
  code scales convolution rows by ``sqrt(row length)``): PyTorch's default initialisation gives
  rows of norm about 0.58 whatever the fan-in, so one ``lambda`` suits every layer.
- **Weights.** ``--weights oscar``: ``lam1 + lam2 (n - i)``; ``pld`` (the authors' code's
  piecewise linear decay, used in their experiments): ``lam1 + lam2 (t - i)`` for ``i <= t`` and
  ``lam1`` after, with ``t = floor(--transition x n)`` (``--transition 1`` is OSCAR); ``spike``:
  ``lam1 + lam2`` for the largest row, ``lam1`` for the rest (the group lasso plus an extra
  penalty on the largest row). ``n`` counts every row of the layer.
- **Prox frequency.** After every optimizer step (the authors' code can also apply it once per
  epoch). Their code masks rows whose norm is at most float32's epsilon after every epoch; here
  only exact zeros are removed, once, at the end of the ``growl`` stage (the prox keeps them at
  zero while their gradient is weaker than their threshold).
- **Clustering.** As in the authors' code: affinity propagation (Frey and Dueck 2007) on the
  similarity ``s(i, j) = <w_i, w_j> / max(||w_i||, ||w_j||)^2`` of the surviving rows (1 for
  equal rows, lower for rows of different direction or norm), with the self-similarity
  ``--preference`` (their runs used 0.6 on MNIST and 0.8 on VGG; a higher value ties fewer rows,
  1 ties none). Their code calls scikit-learn (damping 0.5, 200 iterations, 15 iterations without
  change to converge, a tiny random jitter to break ties); :func:`affinity_propagation` here is
  a small numpy implementation of the same message passing with the same settings and a fixed
  jitter, so the clusters are deterministic (scikit-learn's final exemplar-refinement pass is
  left out); when it does not converge no row is tied (reported).
  "Rows whose norms fall in one cluster" is read as rows that GrOWL made alike: the prox ties row
  *norms* (equal PAV blocks; the report's ``equal_norm_groups`` counts the distinct norms,
  singletons included), but tying rows of equal norm and different direction to their mean
  would destroy them, so the clusters are found on whole rows as the authors do.
- **Tying during retraining.** The authors' code averages each cluster once per epoch during
  retraining (between epochs the tied rows drift apart); here the tying is exact at every step.
  Rows of a cluster share one mask (the intersection of theirs: masks only lose entries).

The run's ``report`` holds, per GrOWL layer: rows, rows removed, clusters (of two or more rows)
and rows in them, rows of equal norm groups at the end of the GrOWL stage, whether affinity
propagation converged, and the weight counts dense / kept after removal / unique after tying; and
over all GrOWL layers the compression from removal (dense / kept) and with tying (dense / unique).
Biases are not counted (as in the summary's ``compression``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from topoprune.errors import TopopruneError
from topoprune.prune.allocation import per_layer
from topoprune.prune.masks import apply_masks
from topoprune.prune.method import Context, Method, PruneConfig, Stage, TrainingState, hp
from topoprune.prune.methods import METHODS

__all__ = [
    "Growl",
    "GrowlConfig",
    "affinity_propagation",
    "growl_prox",
    "growl_weights",
    "oscar_weights",
    "owl_prox",
    "pld_weights",
    "pool_adjacent_violators",
    "row_similarity",
    "spike_weights",
]

WEIGHT_KINDS = ("oscar", "pld", "spike")


# ---- the proximal operator ----------------------------------------------------------------------


def pool_adjacent_violators(y: torch.Tensor) -> torch.Tensor:
    """The non-increasing least-squares fit of ``y``: ``argmin_x ||x - y||^2`` subject to
    ``x_1 >= x_2 >= ... >= x_n`` (isotonic regression by pool adjacent violators, O(n)).

    Parameters
    ----------
    y : torch.Tensor
        A vector.

    Returns
    -------
    torch.Tensor
        The fit, of ``y``'s dtype: each block of pooled entries holds their mean.

    Examples
    --------
    >>> pool_adjacent_violators(torch.tensor([3.0, 1.0, 2.0, 0.0]))
    tensor([3.0000, 1.5000, 1.5000, 0.0000])
    >>> pool_adjacent_violators(torch.tensor([1.0, 2.0, 3.0]))
    tensor([2., 2., 2.])
    """
    if y.dim() != 1:
        raise TopopruneError(f"pool_adjacent_violators takes a vector, got shape {tuple(y.shape)}")
    sums: list[float] = []
    counts: list[int] = []
    for value in y.double().tolist():
        total, count = value, 1
        # merge while the new block's mean exceeds the previous block's (a violation)
        while sums and total * counts[-1] >= sums[-1] * count:
            total += sums.pop()
            count += counts.pop()
        sums.append(total)
        counts.append(count)
    fit = [s / c for s, c in zip(sums, counts) for _ in range(c)]
    return torch.tensor(fit, dtype=torch.float64).to(y.dtype)


def owl_prox(v: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The proximal operator of the ordered weighted l1 norm: ``argmin_x 0.5 ||x - v||^2 +
    sum_i weights_i |x|_[i]``, with ``|x|_[i]`` the ``i``-th largest magnitude.

    Sort the magnitudes in decreasing order, subtract the weights, project onto the non-increasing
    cone (:func:`pool_adjacent_violators`), clip at zero, undo the sort and restore the signs
    (Zeng and Figueiredo 2014; Bogdan et al. 2015).

    Parameters
    ----------
    v : torch.Tensor
        A vector.
    weights : torch.Tensor
        Non-increasing, non-negative, as long as ``v``.

    Returns
    -------
    torch.Tensor
        The prox, of ``v``'s dtype (computed in float64).

    Examples
    --------
    Equal weights give soft thresholding; OSCAR's weights tie the two largest magnitudes:

    >>> owl_prox(torch.tensor([3.0, -2.0, 0.5]), torch.tensor([1.0, 1.0, 1.0]))
    tensor([ 2., -1.,  0.])
    >>> owl_prox(torch.tensor([3.0, -2.5, 0.1]), oscar_weights(3, 0.2, 1.0))
    tensor([ 1.0500, -1.0500,  0.0000])
    """
    if v.dim() != 1 or weights.shape != v.shape:
        raise TopopruneError(
            f"owl_prox takes a vector and as many weights, got {tuple(v.shape)} and "
            f"{tuple(weights.shape)}"
        )
    w = weights.detach().double().cpu()
    if len(w) and (bool((w < 0).any()) or bool((w[1:] > w[:-1]).any())):
        raise TopopruneError("OWL weights must be non-negative and non-increasing")
    magnitude = v.detach().double().cpu().abs()
    order = torch.argsort(magnitude, descending=True, stable=True)
    fit = pool_adjacent_violators(magnitude[order] - w).clamp_min(0.0)
    out = torch.empty_like(fit)
    out[order] = fit
    return (out * torch.sign(v.detach().double().cpu())).to(device=v.device, dtype=v.dtype)


def growl_prox(matrix: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The proximal operator of the group OWL norm of the rows of ``matrix`` (dimensions after
    the first are flattened into the row): the OWL prox of the vector of row norms, each row
    rescaled to its new norm (rows set to norm zero become exactly zero).

    Parameters
    ----------
    matrix : torch.Tensor
        At least two dimensions; rows along the first.
    weights : torch.Tensor
        Non-increasing, non-negative, one per row.

    Returns
    -------
    torch.Tensor
        A new tensor of ``matrix``'s shape and dtype.

    Examples
    --------
    >>> growl_prox(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), torch.tensor([1.0, 1.0]))
    tensor([[2.4000, 3.2000],
            [0.0000, 0.0000]])
    """
    if matrix.dim() < 2:
        raise TopopruneError(f"growl_prox takes a matrix, got shape {tuple(matrix.shape)}")
    rows = matrix.reshape(matrix.shape[0], -1)
    norms = rows.double().norm(dim=1)
    new = owl_prox(norms, weights.to(norms.device))
    scale = torch.where(norms > 0, new / norms.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return (rows * scale.to(rows.dtype)[:, None]).reshape(matrix.shape)


# ---- GrOWL weights -----------------------------------------------------------------------------


def oscar_weights(n: int, lam1: float, lam2: float) -> torch.Tensor:
    """OSCAR's weights (Bondell and Reich 2008): ``lam1 + lam2 (n - i)`` for ``i = 1..n``.

    >>> oscar_weights(4, 0.5, 1.0)
    tensor([3.5000, 2.5000, 1.5000, 0.5000], dtype=torch.float64)
    """
    return lam1 + lam2 * torch.arange(n - 1, -1, -1, dtype=torch.float64)


def pld_weights(n: int, lam1: float, lam2: float, transition: float) -> torch.Tensor:
    """Piecewise linear decay (the authors' code): ``lam1 + lam2 (t - i)`` for ``i <= t``, then
    ``lam1``, with ``t = floor(transition n)``; ``transition = 1`` gives OSCAR's weights.

    >>> pld_weights(5, 0.5, 1.0, 0.4)
    tensor([1.5000, 0.5000, 0.5000, 0.5000, 0.5000], dtype=torch.float64)
    """
    t = min(max(math.floor(transition * n), 0), n)
    slope = torch.arange(n, dtype=torch.float64).neg().add(t - 1).clamp_min(0.0)
    return lam1 + lam2 * slope


def spike_weights(n: int, lam1: float, lam2: float) -> torch.Tensor:
    """``lam1 + lam2`` for the largest row, ``lam1`` for the others.

    >>> spike_weights(3, 0.5, 1.0)
    tensor([1.5000, 0.5000, 0.5000], dtype=torch.float64)
    """
    weights = torch.full((n,), float(lam1), dtype=torch.float64)
    if n:
        weights[0] += lam2
    return weights


def growl_weights(kind: str, n: int, lam1: float, lam2: float, transition: float = 1.0):
    """The weights of ``kind`` (``oscar``, ``pld`` or ``spike``) for ``n`` rows.

    >>> growl_weights("oscar", 3, 0.0, 1.0).tolist()
    [2.0, 1.0, 0.0]
    """
    if lam1 < 0 or lam2 < 0:
        raise TopopruneError(f"GrOWL weights need lam1, lam2 >= 0, got {lam1:g}, {lam2:g}")
    if kind == "oscar":
        return oscar_weights(n, lam1, lam2)
    if kind == "pld":
        return pld_weights(n, lam1, lam2, transition)
    if kind == "spike":
        return spike_weights(n, lam1, lam2)
    raise TopopruneError(f"GrOWL weights must be one of {', '.join(WEIGHT_KINDS)}, got {kind!r}")


# ---- clustering ------------------------------------------------------------------------------


def row_similarity(rows: torch.Tensor) -> np.ndarray:
    """``<w_i, w_j> / max(||w_i||, ||w_j||)^2`` of non-zero rows (the authors' similarity): 1 for
    equal rows, below 1 for rows of another direction or norm.

    >>> row_similarity(torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]))
    array([[1. , 0.5, 0. ],
           [0.5, 1. , 0. ],
           [0. , 0. , 1. ]])
    """
    flat = rows.detach().double().cpu().reshape(rows.shape[0], -1).numpy()
    squared = np.einsum("ij,ij->i", flat, flat)
    if np.any(squared <= 0):
        raise TopopruneError("row_similarity takes non-zero rows")
    return (flat @ flat.T) / np.maximum.outer(squared, squared)


def affinity_propagation(
    similarity: np.ndarray,
    preference: float,
    *,
    damping: float = 0.5,
    max_iter: int = 200,
    convergence_iter: int = 15,
) -> list[int] | None:
    """Cluster labels by affinity propagation (Frey and Dueck 2007), or None when the messages do
    not converge. Deterministic: ties are broken by a fixed jitter far below the similarities'
    precision.

    Parameters
    ----------
    similarity : numpy.ndarray
        ``(n, n)``; ``similarity[i, k]``: how well ``k`` represents ``i``.
    preference : float
        The self-similarity: higher values give more clusters.
    damping, max_iter, convergence_iter
        scikit-learn's defaults.

    Returns
    -------
    list of int or None
        ``labels[i]``: the cluster of ``i``, numbered by first appearance.

    Examples
    --------
    >>> s = row_similarity(torch.tensor([[1.0, 0.0], [0.98, 0.1], [0.0, 1.0]]))
    >>> affinity_propagation(s, 0.8)
    [0, 0, 1]
    >>> affinity_propagation(s, 1.0)
    [0, 1, 2]
    """
    s = np.array(similarity, dtype=np.float64)
    n = s.shape[0]
    if s.shape != (n, n):
        raise TopopruneError(f"affinity_propagation takes a square matrix, got {s.shape}")
    if n == 0:
        return []
    if n == 1:
        return [0]
    np.fill_diagonal(s, preference)
    jitter = np.random.default_rng(0).standard_normal((n, n))
    s += (np.finfo(np.float64).eps * np.abs(s) + np.finfo(np.float64).tiny * 100) * jitter
    r = np.zeros((n, n))
    a = np.zeros((n, n))
    rows = np.arange(n)
    history: list[np.ndarray] = []
    converged = False
    for _ in range(max_iter):
        # responsibilities: s(i,k) - max_{k' != k} (a(i,k') + s(i,k'))
        total = a + s
        best = np.argmax(total, axis=1)
        first = total[rows, best]
        total[rows, best] = -np.inf
        second = total.max(axis=1)
        update = s - first[:, None]
        update[rows, best] = s[rows, best] - second
        r = damping * r + (1 - damping) * update
        # availabilities: min(0, r(k,k) + sum_{i' not in {i,k}} max(0, r(i',k)))
        positive = np.maximum(r, 0)
        positive[rows, rows] = r[rows, rows]
        column = positive.sum(axis=0)
        update = column[None, :] - positive
        diagonal = update[rows, rows].copy()
        update = np.minimum(update, 0)
        update[rows, rows] = diagonal
        a = damping * a + (1 - damping) * update
        exemplars = (np.diag(a) + np.diag(r)) > 0
        history.append(exemplars)
        if len(history) > convergence_iter:
            history.pop(0)
            if exemplars.any() and all(np.array_equal(h, exemplars) for h in history):
                converged = True
                break
    if not converged:
        return None
    centers = np.flatnonzero(exemplars)
    assignment = centers[np.argmax(s[:, centers], axis=1)]
    assignment[centers] = centers
    numbering: dict[int, int] = {}
    return [numbering.setdefault(int(c), len(numbering)) for c in assignment]


# ---- the method --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrowlConfig(PruneConfig):
    dense_epochs: int = hp("epochs of plain training before GrOWL (0: none)", 2, low=0)
    epochs: int = hp("epochs of training with the GrOWL proximal step after every step", 10, low=0)
    retrain_epochs: int = hp(
        "epochs of retraining with removed rows masked and clustered rows tied", 5, low=0
    )
    retrain_lr_factor: float = hp("retraining learning rate = lr x this", 0.1, low=0, low_open=True)
    weights: str = hp(
        "GrOWL weights: oscar (lam1 + lam2 (n - i)), pld (lam1 + lam2 (t - i) over the largest "
        "t = transition x n rows, then lam1), spike (lam1 + lam2 for the largest row, then lam1)",
        "pld",
        choices=WEIGHT_KINDS,
    )
    lam1: tuple[float, ...] = hp(
        "smallest GrOWL weight (the group-lasso part), per layer (one value: every layer)",
        (0.1,),
        low=0,
    )
    lam2: tuple[float, ...] = hp(
        "GrOWL weight slope (oscar, pld) or spike height, per layer (one value: every layer)",
        (1e-3,),
        low=0,
    )
    transition: float = hp(
        "pld: share of the rows over which the weights decrease", 0.5, low=0, high=1
    )
    tie: bool = hp("tie the rows that affinity propagation clusters (--no-tie: remove only)", True)
    preference: float = hp(
        "affinity-propagation preference: rows less similar than about this stay untied", 0.8
    )


@METHODS.register("growl")
class Growl(Method):
    """GrOWL proximal training removes whole rows (units), then ties similar rows and retrains."""

    Config = GrowlConfig
    contract_overrides: ClassVar[dict] = {"lam1": (10.0,)}  # six steps at lr 0.01 remove rows
    paper = (
        "Zhang, Wang, Figueiredo and Balzano 2018, Learning to share: simultaneous parameter "
        "tying and sparsification in deep learning (GrOWL); OSCAR weights: Bondell and Reich 2008"
    )

    def __init__(self, config: GrowlConfig, names, seed: int) -> None:
        super().__init__(config, names, seed)
        self.lam1 = per_layer(config.lam1, self.names, "lam1")
        self.lam2 = per_layer(config.lam2, self.names, "lam2")
        self._weights: dict[str, torch.Tensor] = {}
        self._tied_source: dict | None = None
        self._tied: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = {}

    def stages(self) -> list[Stage]:
        c = self.config
        growl = c.stage("growl", c.epochs, after_step=self._prox, on_end=self._remove)
        tied = c.stage(
            "tied",
            c.retrain_epochs,
            lr=c.lr * c.retrain_lr_factor,
            on_start=self._tie,
            after_backward=self._average_gradients,
            after_step=self._copy_tied,
        )
        dense = [c.stage("dense", c.dense_epochs)] if c.dense_epochs else []
        return [*dense, growl, tied]

    def layer_weights(self, name: str, rows: int) -> torch.Tensor:
        """The GrOWL weights of layer ``name`` (``rows`` rows), before the learning rate."""
        if name not in self._weights:
            c = self.config
            self._weights[name] = growl_weights(
                c.weights, rows, self.lam1[name], self.lam2[name], c.transition
            )
        return self._weights[name]

    @torch.no_grad()
    def _prox(self, ctx: Context) -> None:
        for name, module in ctx.pruned_modules():
            weight = module.weight_orig
            weights = ctx.lr * self.layer_weights(name, weight.shape[0])
            weight.copy_(growl_prox(weight, weights))

    @torch.no_grad()
    def _remove(self, ctx: Context) -> None:
        """Mask every row of exactly zero norm; record the rows and equal-norm groups."""
        masks, layers = {}, {}
        for name, module in ctx.pruned_modules():
            rows = (module.weight_orig * module.weight_mask).reshape(
                module.weight_orig.shape[0], -1
            )
            norms = rows.double().norm(dim=1)
            zero = norms == 0
            mask = module.weight_mask.clone()
            mask[zero] = 0
            masks[name] = mask
            layers[name] = {
                "rows": int(rows.shape[0]),
                "removed": int(zero.sum()),
                "equal_norm_groups": _equal_groups(norms[~zero].tolist()),
            }
        apply_masks(ctx.model, masks)
        ctx.state.method_state["growl"] = layers

    @torch.no_grad()
    def _tie(self, ctx: Context) -> None:
        """Cluster each layer's surviving rows; set each cluster to its mean, one shared mask."""
        clusters, converged = {}, {}
        for name, module in ctx.pruned_modules():
            weight, mask = module.weight_orig, module.weight_mask
            rows = (weight * mask).reshape(weight.shape[0], -1)
            alive = torch.nonzero(rows.double().norm(dim=1) > 0).flatten().tolist()
            groups: list[list[int]] = []
            labels = None
            if self.config.tie and len(alive) >= 2:
                labels = affinity_propagation(row_similarity(rows[alive]), self.config.preference)
                if labels is not None:
                    members: dict[int, list[int]] = {}
                    for row, label in zip(alive, labels):
                        members.setdefault(label, []).append(row)
                    groups = [g for g in members.values() if len(g) >= 2]
            converged[name] = labels is not None or not self.config.tie or len(alive) < 2
            flat_mask = mask.reshape(mask.shape[0], -1)
            new_mask = flat_mask.clone()
            flat = weight.reshape(weight.shape[0], -1)
            for group in groups:
                index = torch.tensor(group, device=weight.device)
                shared = flat_mask[index].amin(dim=0)
                new_mask[index] = shared
                flat[index] = (rows[index].mean(dim=0) * shared).to(flat.dtype)
            if groups:
                apply_masks(ctx.model, {name: new_mask.reshape(mask.shape)})
            clusters[name] = groups
        ctx.state.method_state["clusters"] = clusters
        ctx.state.method_state["ap_converged"] = converged

    def _tied_index(self, ctx: Context) -> dict[str, tuple[torch.Tensor, ...]]:
        """Per layer: the tied rows, their cluster numbers, cluster sizes, the first row of each
        tied row's cluster; rebuilt whenever ``method_state`` is another object (a resume)."""
        source = ctx.state.method_state.get("clusters", {})
        if self._tied_source is not source:
            self._tied = {}
            modules = dict(ctx.pruned_modules())
            for name, groups in source.items():
                if not groups:
                    continue
                device = modules[name].weight_orig.device
                rows = torch.tensor([r for g in groups for r in g], device=device)
                labels = torch.tensor([k for k, g in enumerate(groups) for _ in g], device=device)
                sizes = torch.tensor([len(g) for g in groups], device=device)
                first = torch.tensor([g[0] for g in groups for _ in g], device=device)
                self._tied[name] = (rows, labels, sizes, first)
            self._tied_source = source
        return self._tied

    @torch.no_grad()
    def _average_gradients(self, ctx: Context) -> None:
        modules = dict(ctx.pruned_modules())
        for name, (rows, labels, sizes, _) in self._tied_index(ctx).items():
            grad = modules[name].weight_orig.grad
            if grad is None:
                continue
            flat = grad.view(grad.shape[0], -1)
            sums = torch.zeros((len(sizes), flat.shape[1]), dtype=flat.dtype, device=flat.device)
            sums.index_add_(0, labels, flat[rows])
            flat[rows] = (sums / sizes[:, None].to(flat.dtype))[labels]

    @torch.no_grad()
    def _copy_tied(self, ctx: Context) -> None:
        modules = dict(ctx.pruned_modules())
        for name, (rows, _, _, first) in self._tied_index(ctx).items():
            weight = modules[name].weight_orig
            flat = weight.view(weight.shape[0], -1)
            flat[rows] = flat[first]

    def report(self, state: TrainingState) -> dict:
        growl = state.method_state.get("growl")
        if growl is None:
            return {}
        clusters = state.method_state.get("clusters", {})
        converged = state.method_state.get("ap_converged", {})
        layers: dict[str, dict] = {}
        dense = kept = unique = 0
        for name, info in growl.items():
            masks = state.mask_history.get("tied") or state.mask_history.get("growl") or {}
            mask = masks.get(name)
            groups = clusters.get(name, [])
            layer = dict(info)
            layer["clusters"] = len(groups)
            layer["tied_rows"] = sum(len(g) for g in groups)
            if name in converged:
                layer["ap_converged"] = bool(converged[name])
            if mask is not None:
                flat = mask.reshape(mask.shape[0], -1)
                per_row = flat.sum(dim=1)
                layer_dense = int(flat.numel())
                layer_kept = int(per_row.sum())
                shared = sum(int(per_row[g[0]]) * (len(g) - 1) for g in groups)
                layer.update(
                    dense_weights=layer_dense,
                    kept_weights=layer_kept,
                    unique_weights=layer_kept - shared,
                )
                dense, kept, unique = dense + layer_dense, kept + layer_kept, unique + layer_kept
                unique -= shared
            layers[name] = layer
        out: dict = {"layers": layers}
        if dense:
            out["dense_weights"] = dense
            out["kept_weights"] = kept
            out["unique_weights"] = unique
            out["compression_removed"] = dense / kept if kept else math.inf
            out["compression_tied"] = dense / unique if unique else math.inf
        return out


def _equal_groups(values: Sequence[float], rtol: float = 1e-5) -> int:
    """How many groups of (relatively) equal values: sorted, a new group starts where a value
    differs from the previous one by more than ``rtol``.

    >>> _equal_groups([1.0, 2.0, 1.0 + 1e-9, 3.0])
    3
    """
    ordered = sorted(values)
    return sum(
        1
        for i, v in enumerate(ordered)
        if i == 0 or abs(v - ordered[i - 1]) > rtol * max(abs(v), abs(ordered[i - 1]))
    )
