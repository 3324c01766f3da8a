"""Unit pruning: remove whole neurons (Linear outputs) or feature maps (convolution channels).

A **unit** is an output of a pruned layer that feeds the next pruned layer: output feature ``k``
of a Linear layer is input column ``k`` of the next Linear layer; output channel ``c`` of a
convolution is input channel ``c`` of the next convolution; a convolution followed (after a
channel-first flatten) by a Linear layer with ``in_features = C x H x W`` sends channel ``c`` to
the columns ``c HW ... (c + 1) HW - 1``. :func:`unit_chain` builds this chain from the pruned
layers in order and checks the shapes; the last pruned layer's outputs (the classes) are never
units. Removing a unit masks all its incoming weights (row ``k`` / filter ``c`` of its layer)
and all its outgoing weights (its columns of the next layer): :func:`unit_masks`. The weights
stay in place, masked (physical removal is another step). Its bias, left alone, no longer
reaches anything.

A unit's **activation** is what it sends downstream: the input of the consuming layer, recorded
by a forward pre-hook (after the nonlinearity and any pooling); for a convolution followed by a
Linear layer the input is reshaped to ``(channels, H x W)``.

Registered methods (one-shot removal of ``--units`` of every hidden layer's units, the scores of
every layer computed on the dense network before anything is removed, then ``--retrain-epochs``
of fine-tuning):

- ``activation`` (Hu et al. 2016, *Network trimming*): ``--criterion apoz`` removes the units
  with the highest average percentage of zeros (APoZ) of their output over the scoring examples
  (and positions, for convolutions); ``--criterion mean`` removes the lowest mean ``|activation|``.
- ``skeletonization`` (Mozer and Smolensky 1988): the relevance of a unit is the increase of the
  error when it is removed. ``--relevance measured``: exactly that, one forward pass over the
  scoring examples per unit with the unit zeroed. ``--relevance gate``: Mozer and Smolensky's
  estimate, an attention gate ``alpha_k = 1`` multiplying the unit's output and ``rho_k ~
  -dE/d alpha_k`` (the first-order Taylor term of ``E(alpha_k = 0) - E(alpha_k = 1)``), one
  backward pass; the derivative is the sum over positions of the activation times the gradient
  of the error with respect to the consuming layer's input.
- ``nisp`` (Yu et al. 2018): neuron importance score propagation. The final responses are the
  inputs of the last pruned layer (the penultimate layer's units); their scores ``s_n`` are
  propagated backwards, ``s_k = |W_{k+1}|^T s_{k+1}``, and each hidden layer loses its least
  important units.
- ``units-random``: the baseline, the same number of units chosen at random.

Choices and where this module differs from the papers:

- **One shot, all layers.** Every criterion is computed for all hidden layers on the dense network
  and ``--units`` (a fraction per hidden layer, rounded to the nearest count, at least one unit
  kept) is removed at once, then fine-tuned. Hu et al. prune one layer at a time and iterate
  prune-retrain; Mozer and Smolensky remove one unit at a time and retrain in between. Ties
  (e.g. units that are always zero) are broken by the lower index.
- **Where activations are measured.** At the consuming layer's input: after ReLU and pooling.
  For APoZ this counts zeros of the pooled output when a max-pool follows the ReLU (Hu et al.
  count zeros of the ReLU output itself; pooling only hides zeros).
- **Scoring data.** ``--scoring-examples`` training examples (Hu et al. use a validation set),
  the model in ``eval`` mode.
- **Error for skeletonization.** ``--error loss`` (the run's loss, the default) or ``--error
  l1``: ``sum_j |softmax(o)_j - onehot(t)_j|`` averaged over examples, Mozer and Smolensky's
  linear error ``sum |t - o|`` on the softmax outputs (they used it for the estimate because the
  derivative of the quadratic error vanishes as the outputs approach their targets). Errors are
  averages over the scoring examples (the loss is taken to be a mean over its batch).
- **No smoothing.** Mozer and Smolensky estimated the relevance online during training, smoothed
  over time, ``rho(t + 1) = 0.8 rho(t) + 0.2 dE(t)/d alpha``; here the derivative is computed
  once, at the end of dense training, averaged over the scoring examples (the average plays the
  role of the smoothing).
- **NISP propagation.** ``|W|`` is the absolute masked weight; for a convolution it is summed over
  the kernel's positions (an ``(out, in)`` matrix), for a Linear layer after a convolution over
  each channel's ``H x W`` columns. Biases and nonlinearities are ignored, as in the paper's bound.
- **NISP final scores.** ``--final-scores inf-fs`` (the paper): Inf-FS (Roffo, Melzi and Cristani
  2015) on the final responses over the scoring examples (for convolutional units, each example's
  response is the mean over positions); see :func:`inf_fs`. ``--final-scores ones``: every output
  (class) of the last layer counts 1 and is propagated through it, ``s_n = |W_last|^T 1``
  (ones on the penultimate units themselves would tie them all and leave their ranking to the
  index order).

Each run's ``report`` (``state.method_state["units"]``) holds the criterion, the removed unit
indices per layer, and per layer the number of units, of removed units and a summary of the
importance (higher = kept): min, max, mean and ``cut`` (the highest importance removed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.prune.allocation import per_layer
from topoprune.prune.curvature import evaluating
from topoprune.prune.masks import apply_masks, masked_modules, weight_modules
from topoprune.prune.method import Context, Method, PruneConfig, Stage, TrainingState, hp
from topoprune.prune.methods import METHODS

__all__ = [
    "NISP",
    "ActivationConfig",
    "ActivationPruning",
    "ActivationStats",
    "NISPConfig",
    "RandomUnits",
    "SkeletonConfig",
    "Skeletonization",
    "UnitConfig",
    "UnitLayer",
    "UnitMethod",
    "activation_statistics",
    "average_ranks",
    "gate_relevance",
    "gated_error",
    "inf_fs",
    "l1_error",
    "lowest_units",
    "measured_relevance",
    "nisp_propagate",
    "removal_count",
    "spearman",
    "unit_chain",
    "unit_masks",
    "unit_responses",
    "unit_weights",
]

Batch = tuple[Any, Any]
Error = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CONVS = (nn.Conv1d, nn.Conv2d)


# ---- the chain of units -------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitLayer:
    """The units of one pruned layer, as inputs of the next pruned layer.

    Attributes
    ----------
    name : str
        The layer that produces the units (its rows / filters are their incoming weights).
    consumer : str
        The next pruned layer (its input columns / channels are their outgoing weights).
    units : int
        Output features of a Linear layer, output channels of a convolution.
    span : int
        Input columns of the consumer per unit: 1, or ``H x W`` for a convolution followed by a
        Linear layer.
    """

    name: str
    consumer: str
    units: int
    span: int = 1

    def columns(self, index: torch.Tensor) -> torch.Tensor:
        """The consumer's input columns (channels) of the units ``index``.

        >>> UnitLayer("0", "3", units=2, span=3).columns(torch.tensor([1]))
        tensor([3, 4, 5])
        """
        offsets = torch.arange(self.span, device=index.device)
        return (index[:, None] * self.span + offsets).flatten()


def _link(name: str, module: nn.Module, consumer: str, next_module: nn.Module) -> UnitLayer:
    """The units that ``module`` sends to ``next_module``, after checking that the shapes fit."""
    where = f"{name} -> {consumer}"
    if isinstance(module, nn.Linear):
        units = module.out_features
        if not isinstance(next_module, nn.Linear):
            raise TopopruneError(
                f"{where}: a Linear layer feeding a {type(next_module).__name__} has no units "
                "this module can chain"
            )
        if next_module.in_features != units:
            raise TopopruneError(
                f"{where}: {units} outputs do not feed {next_module.in_features} inputs"
            )
        return UnitLayer(name, consumer, units)
    if not isinstance(module, CONVS):
        raise TopopruneError(f"{name}: units of a {type(module).__name__} are not supported")
    units = module.out_channels
    if isinstance(next_module, CONVS):
        if next_module.groups != 1:
            raise TopopruneError(f"{where}: units feeding a grouped convolution are not supported")
        if next_module.in_channels != units:
            raise TopopruneError(
                f"{where}: {units} channels do not feed {next_module.in_channels} input channels"
            )
        return UnitLayer(name, consumer, units)
    if isinstance(next_module, nn.Linear):
        if next_module.in_features % units:
            raise TopopruneError(
                f"{where}: {next_module.in_features} inputs are not {units} channels of equal size"
            )
        return UnitLayer(name, consumer, units, next_module.in_features // units)
    raise TopopruneError(f"{where}: units feeding a {type(next_module).__name__}")


def unit_chain(model: nn.Module, names: Sequence[str] | None = None) -> list[UnitLayer]:
    """The units of consecutive pruned layers: one :class:`UnitLayer` per layer but the last.

    Parameters
    ----------
    model : nn.Module
        Its Linear/Conv layers in registration order are taken to be its data flow.
    names : sequence of str, optional
        The pruned layers, in order (default: the layers with masks). No other weight layer may
        lie between two of them (its units could not be masked), and each layer's outputs must
        be the next one's inputs (Linear -> Linear, conv -> conv, conv -> flatten -> Linear).

    Returns
    -------
    list of UnitLayer
        In order; the last named layer's outputs (the classes) are not units.

    Examples
    --------
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten(),
    ...                       nn.Linear(2 * 3 * 3, 5), nn.ReLU(), nn.Linear(5, 3))
    >>> for layer in unit_chain(model, ["0", "2", "4", "6"]):
    ...     print(layer)
    UnitLayer(name='0', consumer='2', units=4, span=1)
    UnitLayer(name='2', consumer='4', units=2, span=9)
    UnitLayer(name='4', consumer='6', units=5, span=1)
    """
    modules = dict(weight_modules(model))
    names = [n for n, _ in masked_modules(model)] if names is None else list(names)
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise TopopruneError(f"no Linear/Conv layer {', '.join(map(repr, unknown))}")
    if len(names) < 2:
        raise TopopruneError(
            f"unit pruning needs two or more consecutive pruned layers, got {names}: the last "
            "layer's outputs are not units"
        )
    order = list(modules)
    positions = [order.index(n) for n in names]
    chain = []
    for (a, b), (i, j) in zip(pairwise(names), pairwise(positions)):
        if j <= i:
            raise TopopruneError(f"pruned layers out of order: {b} is registered before {a}")
        between = order[i + 1 : j]
        if between:
            raise TopopruneError(
                f"{a} -> {b}: the weight layer(s) {', '.join(between)} between them are not "
                f"pruned, so the units of {a} cannot be chained (prune them too)"
            )
        chain.append(_link(a, modules[a], b, modules[b]))
    return chain


def unit_masks(
    model: nn.Module,
    chain: Sequence[UnitLayer],
    removed: Mapping[str, Sequence[int] | torch.Tensor],
) -> dict[str, torch.Tensor]:
    """The current masks with the ``removed`` units cut out: their incoming weights (rows or
    filters) and their outgoing weights (the consumer's columns or input channels) masked.

    Parameters
    ----------
    model : nn.Module
        With masks on every layer of ``chain``.
    chain : sequence of UnitLayer
        From :func:`unit_chain`.
    removed : mapping
        Layer name (a ``UnitLayer.name``) -> indices of its units to remove.

    Returns
    -------
    dict of str to torch.Tensor
        Boolean masks of the layers touched, for :func:`~topoprune.prune.masks.apply_masks`.

    Examples
    --------
    >>> from topoprune.prune.masks import add_masks
    >>> model = add_masks(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)))
    >>> masks = unit_masks(model, unit_chain(model), {"0": [1]})
    >>> masks["0"].int()
    tensor([[1, 1],
            [0, 0],
            [1, 1]], dtype=torch.int32)
    >>> masks["2"].int()
    tensor([[1, 0, 1],
            [1, 0, 1]], dtype=torch.int32)
    """
    by_name = {layer.name: layer for layer in chain}
    current = dict(masked_modules(model))
    out: dict[str, torch.Tensor] = {}
    for name, index in removed.items():
        layer = by_name.get(name)
        if layer is None:
            raise TopopruneError(f"{name!r} has no units; layers with units: {', '.join(by_name)}")
        for n in (layer.name, layer.consumer):
            if n not in out:
                out[n] = current[n].weight_mask.detach().bool().clone()
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1).to(out[name].device)
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= layer.units):
            raise TopopruneError(f"{name}: unit indices must be in [0, {layer.units})")
        out[layer.name][index] = False
        out[layer.consumer][:, layer.columns(index)] = False
    return out


# ---- activations at the consuming layers ------------------------------------------------------


def _unit_view(x: torch.Tensor, layer: UnitLayer, consumer: nn.Module) -> torch.Tensor:
    """The consumer's input ``x`` as ``(examples, units, positions)``."""
    if isinstance(consumer, nn.Linear):
        if x.shape[-1] != layer.units * layer.span:
            raise TopopruneError(f"{layer.consumer}: input of width {x.shape[-1]}, not a Linear's")
        return x.reshape(-1, layer.units, layer.span)
    if x.dim() < 2 or x.shape[1] != layer.units:
        raise TopopruneError(f"{layer.consumer}: input {tuple(x.shape)} has no {layer.units} maps")
    return x.reshape(x.shape[0], layer.units, -1)


@contextmanager
def _at_consumers(
    model: nn.Module,
    chain: Sequence[UnitLayer],
    fn: Callable[[UnitLayer, torch.Tensor], torch.Tensor | None],
) -> Iterator[None]:
    """Call ``fn(layer, view)`` on every forward pass of every consumer of ``chain``, with the
    input as ``(examples, units, positions)``; a tensor it returns replaces the input."""
    modules = dict(model.named_modules())

    def hook(layer: UnitLayer) -> Callable:
        consumer = modules[layer.consumer]

        def pre_hook(_module: nn.Module, args: tuple) -> tuple | None:
            x = args[0]
            new = fn(layer, _unit_view(x, layer, consumer))
            return None if new is None else (new.reshape(x.shape), *args[1:])

        return pre_hook

    handles = [modules[layer.consumer].register_forward_pre_hook(hook(layer)) for layer in chain]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class ActivationStats(NamedTuple):
    """Per-unit statistics over examples and positions."""

    mean_abs: torch.Tensor  # mean |activation|
    apoz: torch.Tensor  # average percentage (fraction) of zeros


@torch.no_grad()
def activation_statistics(
    model: nn.Module, chain: Sequence[UnitLayer], batches: Iterable[Batch]
) -> dict[str, ActivationStats]:
    """Mean ``|activation|`` and APoZ of every unit of ``chain``, over all examples and positions
    of ``batches`` (the model in ``eval`` mode).

    Examples
    --------
    >>> from topoprune.prune.masks import add_masks
    >>> model = add_masks(nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1)))
    >>> with torch.no_grad():
    ...     _ = model[0].weight_orig.copy_(torch.tensor([[1.0], [-1.0]]))
    ...     _ = model[0].bias.zero_()
    >>> x = torch.tensor([[1.0], [2.0], [-3.0]])
    >>> stats = activation_statistics(model, unit_chain(model), [(x, None)])["0"]
    >>> stats.mean_abs, stats.apoz
    (tensor([1., 1.]), tensor([0.3333, 0.6667]))
    """
    sums: dict[str, torch.Tensor] = {}
    zeros: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def record(layer: UnitLayer, view: torch.Tensor) -> None:
        v = view.detach().double()
        sums[layer.name] = sums.get(layer.name, 0) + v.abs().sum(dim=(0, 2))
        zeros[layer.name] = zeros.get(layer.name, 0) + (v == 0).sum(dim=(0, 2)).double()
        counts[layer.name] = counts.get(layer.name, 0) + v.shape[0] * v.shape[2]

    with evaluating(model), _at_consumers(model, chain, record):
        for inputs, _ in batches:
            model(inputs)
    if not counts:
        raise TopopruneError("no examples to measure the units' activations on")
    dtype = torch.get_default_dtype()
    return {
        name: ActivationStats(
            (sums[name] / counts[name]).to(dtype), (zeros[name] / counts[name]).to(dtype)
        )
        for name in counts
    }


@torch.no_grad()
def unit_responses(model: nn.Module, layer: UnitLayer, batches: Iterable[Batch]) -> torch.Tensor:
    """Every example's response of every unit of ``layer``, ``(examples, units)``: the consumer's
    input, averaged over positions for convolutional units (the model in ``eval`` mode)."""
    seen: list[torch.Tensor] = []
    with (
        evaluating(model),
        _at_consumers(model, [layer], lambda _, view: seen.append(view.detach().mean(dim=2))),
    ):
        for inputs, _ in batches:
            model(inputs)
    if not seen:
        raise TopopruneError("no examples to record the units' responses on")
    return torch.cat(seen)


# ---- skeletonization: relevance by removal and by the gate derivative -------------------------


def l1_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mozer and Smolensky's linear error on softmax outputs: ``sum_j |p_j - onehot(t)_j|``
    averaged over the examples.

    >>> l1_error(torch.tensor([[0.0, 0.0]]), torch.tensor([0]))
    tensor(1.)
    """
    probabilities = torch.softmax(outputs, dim=-1)
    onehot = nn.functional.one_hot(targets, probabilities.shape[-1]).to(probabilities.dtype)
    return (probabilities - onehot).abs().sum(dim=-1).mean()


def _gates_on(model: nn.Module, chain: Sequence[UnitLayer], gates: Mapping[str, torch.Tensor]):
    """Multiply each unit's output, as its consumer sees it, by its gate."""
    return _at_consumers(
        model,
        [layer for layer in chain if layer.name in gates],
        lambda layer, view: view * gates[layer.name].to(view.dtype).view(1, -1, 1),
    )


def _weighted_errors(
    model: nn.Module, batches: Sequence[Batch], error: Error
) -> Iterator[torch.Tensor]:
    """Each batch's error weighted by its share of the examples (their sum is the mean error)."""
    total = sum(len(targets) for _, targets in batches)
    if not total:
        raise TopopruneError("no examples to measure the error on")
    for inputs, targets in batches:
        yield error(model(inputs), targets) * (len(targets) / total)


def gated_error(
    model: nn.Module,
    chain: Sequence[UnitLayer],
    batches: Sequence[Batch],
    error: Error,
    gates: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """The mean error over ``batches`` with each unit's output multiplied by its gate (a vector
    per layer name; layers without one are ungated), differentiable in the gates; ``eval``
    mode."""
    with evaluating(model), _gates_on(model, chain, gates):
        return sum(_weighted_errors(model, batches, error))


@torch.no_grad()
def measured_relevance(
    model: nn.Module, chain: Sequence[UnitLayer], batches: Sequence[Batch], error: Error
) -> dict[str, torch.Tensor]:
    """The exact relevance of every unit: the mean error over ``batches`` with the unit's output
    zeroed minus the error of the intact model (one pass over the batches per unit)."""
    base = float(gated_error(model, chain, batches, error, {}))
    out = {}
    for layer in chain:
        weight = _weight(model, layer.consumer)
        relevance = torch.empty(layer.units, dtype=torch.float64)
        for k in range(layer.units):
            gate = torch.ones(layer.units, dtype=weight.dtype, device=weight.device)
            gate[k] = 0.0
            removed = gated_error(model, chain, batches, error, {layer.name: gate})
            relevance[k] = float(removed) - base
        out[layer.name] = relevance.to(torch.get_default_dtype())
    return out


def gate_relevance(
    model: nn.Module, chain: Sequence[UnitLayer], batches: Sequence[Batch], error: Error
) -> dict[str, torch.Tensor]:
    """Mozer and Smolensky's relevance estimate ``-dE/d alpha_k`` at ``alpha = 1``, the gate
    ``alpha_k`` multiplying unit ``k``'s output: the first-order estimate of the error increase
    when the unit is removed (one backward pass per batch; parameter gradients untouched)."""
    gates = {}
    for layer in chain:
        weight = _weight(model, layer.consumer)
        gates[layer.name] = torch.ones(
            layer.units, dtype=weight.dtype, device=weight.device, requires_grad=True
        )
    totals = {name: torch.zeros_like(gate) for name, gate in gates.items()}
    with evaluating(model), _gates_on(model, chain, gates):
        for weighted in _weighted_errors(model, batches, error):
            grads = torch.autograd.grad(weighted, list(gates.values()), allow_unused=True)
            for name, grad in zip(gates, grads):
                if grad is not None:
                    totals[name] += grad
    return {name: -total.detach() for name, total in totals.items()}


# ---- NISP: importance propagated back from the final responses --------------------------------


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    module = dict(model.named_modules())[name]
    weight = getattr(module, "weight_orig", None)
    if weight is None:
        return module.weight
    return weight * module.weight_mask


def unit_weights(model: nn.Module, layer: UnitLayer) -> torch.Tensor:
    """``|W|`` of ``layer``'s consumer as ``(consumer outputs, units)``: the absolute masked
    weights summed over a kernel's positions (convolutions) or a unit's ``span`` of columns.

    >>> from topoprune.prune.masks import add_masks
    >>> model = add_masks(nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(4, 1)))
    >>> with torch.no_grad():
    ...     _ = model[2].weight_orig.copy_(torch.tensor([[1.0, -2.0, 3.0, -4.0]]))
    >>> unit_weights(model, unit_chain(model)[0])
    tensor([[3., 7.]])
    """
    weight = _weight(model, layer.consumer).detach().abs()
    if weight.dim() == 2:  # a Linear consumer
        return weight.reshape(weight.shape[0], layer.units, layer.span).sum(dim=2)
    return weight.reshape(weight.shape[0], weight.shape[1], -1).sum(dim=2)


def nisp_propagate(
    model: nn.Module, chain: Sequence[UnitLayer], final: torch.Tensor
) -> dict[str, torch.Tensor]:
    """NISP's importance of every unit: ``final`` (the scores of the last layer of ``chain``,
    the final responses) propagated backwards, ``s_k = |W_{k+1}|^T s_{k+1}``.

    >>> from topoprune.prune.masks import add_masks
    >>> model = add_masks(nn.Sequential(nn.Linear(1, 2), nn.Linear(2, 1), nn.Linear(1, 1)))
    >>> with torch.no_grad():
    ...     _ = model[1].weight_orig.copy_(torch.tensor([[2.0, -3.0]]))
    >>> nisp_propagate(model, unit_chain(model), torch.tensor([1.0]))
    {'0': tensor([2., 3.]), '1': tensor([1.])}
    """
    last = chain[-1]
    if final.shape != (last.units,):
        raise TopopruneError(f"{last.name}: {last.units} final scores needed, got {final.shape}")
    scores = {last.name: final.detach()}
    for lower, upper in reversed(list(pairwise(chain))):
        matrix = unit_weights(model, lower).to(scores[upper.name])
        scores[lower.name] = matrix.T @ scores[upper.name]
    return {layer.name: scores[layer.name] for layer in chain}


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based) of every column of ``x`` ``(examples, features)``, ties sharing their
    average rank (as Spearman's correlation needs), in float64.

    >>> average_ranks(torch.tensor([[3.0], [1.0], [3.0], [0.0]])).flatten()
    tensor([3.5000, 2.0000, 3.5000, 1.0000], dtype=torch.float64)
    """
    ranks = torch.empty(x.shape, dtype=torch.float64)
    for j in range(x.shape[1]):
        _, inverse, counts = torch.unique(x[:, j].cpu(), return_inverse=True, return_counts=True)
        ends = torch.cumsum(counts, 0).double()
        ranks[:, j] = (ends - (counts.double() - 1) / 2)[inverse]
    return ranks


def spearman(x: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation between the columns of ``x`` ``(examples, features)``: the
    Pearson correlation of their average ranks. A constant column has no correlation (0) with
    the others; every column has 1 with itself.

    >>> x = torch.tensor([[1.0, 5.0, 2.0], [2.0, 4.0, 2.0], [3.0, 0.0, 2.0]])
    >>> spearman(x).round(decimals=4)
    tensor([[ 1., -1.,  0.],
            [-1.,  1.,  0.],
            [ 0.,  0.,  1.]], dtype=torch.float64)
    """
    ranks = average_ranks(x)
    centred = ranks - ranks.mean(dim=0)
    norms = centred.norm(dim=0)
    unit = torch.where(norms > 0, centred / torch.where(norms > 0, norms, 1.0), 0.0)
    corr = (unit.T @ unit).clamp(-1.0, 1.0)
    corr.fill_diagonal_(1.0)
    return corr


def inf_fs(features: torch.Tensor, alpha: float = 0.5, factor: float = 0.9) -> torch.Tensor:
    """Infinite feature selection (Roffo, Melzi and Cristani, ICCV 2015): one score per feature,
    higher = more important.

    The features ``(examples, features)`` are the nodes of a complete graph with weights
    ``a_ij = alpha max(sigma_i, sigma_j) + (1 - alpha) (1 - |rho_ij|)``, where ``sigma_i`` is the
    standard deviation of feature ``i`` over the examples divided by the largest one (so in
    [0, 1]) and ``rho_ij`` is Spearman's rank correlation. Paths of every length are summed,
    ``S = sum_{l >= 1} (r A)^l = (I - r A)^{-1} - I`` with ``r = factor / rho(A)`` (the spectral
    radius; ``factor`` < 1 makes the series converge), and the score of feature ``i`` is the
    energy of the paths starting from it, ``s_i = sum_j S_ij``.

    This is the paper's formula (``alpha`` weighting the dispersion, ``r = 0.9 / rho(A)``); the
    authors' later MATLAB release puts ``alpha`` on the correlation term, min-max normalises
    the ``max(sigma_i, sigma_j)`` matrix and uses ``0.99``. The diagonal ``a_ii = alpha sigma_i``
    is kept (the paper sums every path, loops included). A constant feature (a unit that never
    changes over the examples, e.g. a dead one) has no correlation with the others (the authors'
    code sets the undefined correlations to 0 too), so its decorrelation terms are maximal.
    Computed in float64.

    Examples
    --------
    The widest feature ranks first; two copies of a narrower one share the next rank:

    >>> x = torch.tensor([[0.0, 1.0, 1.0], [4.0, 2.0, 2.0], [1.0, 0.0, 0.0], [3.0, 3.0, 3.0]])
    >>> inf_fs(x).round(decimals=3)
    tensor([10.3890,  8.1150,  8.1150], dtype=torch.float64)
    """
    if features.dim() != 2 or features.shape[0] < 2:
        raise TopopruneError(f"inf_fs needs (examples >= 2, features), got {tuple(features.shape)}")
    if not 0.0 <= alpha <= 1.0 or not 0.0 < factor < 1.0:
        raise TopopruneError(f"inf_fs: alpha in [0, 1] and factor in (0, 1), got {alpha}, {factor}")
    x = features.detach().double().cpu()
    sigma = x.std(dim=0)
    sigma = sigma / sigma.max() if float(sigma.max()) > 0 else sigma
    dispersion = torch.maximum(sigma[:, None], sigma[None, :])
    adjacency = alpha * dispersion + (1 - alpha) * (1 - spearman(x).abs())
    radius = float(torch.linalg.eigvalsh(adjacency).abs().max())
    if radius == 0.0:
        return torch.zeros(x.shape[1], dtype=torch.float64)
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    paths = torch.linalg.solve(eye - (factor / radius) * adjacency, eye) - eye
    return paths.sum(dim=1)


# ---- ranking ----------------------------------------------------------------------------------


def removal_count(fraction: float, units: int) -> int:
    """Units to remove: ``fraction`` of ``units`` rounded to the nearest count (halves up), at
    least one unit kept.

    >>> removal_count(0.5, 24), removal_count(0.3, 5), removal_count(0.99, 10)
    (12, 2, 9)
    """
    return max(0, min(math.floor(fraction * units + 0.5), units - 1))


def lowest_units(importance: torch.Tensor, count: int) -> list[int]:
    """The ``count`` least important units, sorted; ties go to the lower index.

    >>> lowest_units(torch.tensor([0.5, 0.1, 0.5, 0.1, 0.9]), 3)
    [0, 1, 3]
    """
    order = torch.sort(importance.detach().cpu().double(), stable=True).indices
    return sorted(order[:count].tolist())


# ---- the methods ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitConfig(PruneConfig):
    """Shared hyper-parameters of the unit pruning methods."""

    units: tuple[float, ...] = hp(
        "fraction of units removed per hidden layer (one value: every hidden layer)",
        (0.5,),
        low=0,
        high=1,
        high_open=True,
    )
    scoring_examples: int = hp("training examples the unit scores are computed on", 1000, low=1)
    retrain_epochs: int = hp("epochs of fine-tuning after the removal (0: none)", 10, low=0)
    retrain_lr_factor: float = hp(
        "fine-tuning learning rate = lr x this", 0.1, low=0, low_open=True
    )


class UnitMethod(Method):
    """Base of the unit pruning methods: train densely, remove the least important units of
    every hidden layer at once, fine-tune; subclasses define :meth:`importance`."""

    Config = UnitConfig
    criterion: ClassVar[str] = "?"

    def __init__(self, config: UnitConfig, names: Sequence[str], seed: int) -> None:
        super().__init__(config, names, seed)
        if len(self.names) < 2:
            raise TopopruneError(
                f"unit pruning needs two or more pruned layers, got {self.names}: "
                "the last layer's outputs are not units"
            )
        self.fractions = per_layer(config.units, self.names[:-1], "units")

    def importance(self, ctx: Context, chain: list[UnitLayer]) -> dict[str, torch.Tensor]:
        """One score per unit of every layer of ``chain``; the lowest are removed."""
        raise NotImplementedError

    def describe(self) -> str:
        """The criterion, as the report names it."""
        return self.criterion

    def stages(self) -> list[Stage]:
        c = self.config
        return [
            c.stage("dense", c.dense_epochs, on_start=self._check),
            c.stage(
                "units", c.retrain_epochs, lr=c.lr * c.retrain_lr_factor, on_start=self._remove
            ),
        ]

    def _check(self, ctx: Context) -> None:
        unit_chain(ctx.model, self.names)  # an unchainable model fails before dense training

    def _batches(self, ctx: Context) -> list[Batch]:
        return list(ctx.scoring_batches(self.config.scoring_examples))

    def _remove(self, ctx: Context) -> None:
        chain = unit_chain(ctx.model, self.names)
        scores = self.importance(ctx, chain)
        removed = {
            layer.name: lowest_units(
                scores[layer.name], removal_count(self.fractions[layer.name], layer.units)
            )
            for layer in chain
        }
        apply_masks(ctx.model, unit_masks(ctx.model, chain, removed))
        ctx.state.method_state["units"] = {
            "criterion": self.describe(),
            "removed_units": removed,
            "importance": {
                layer.name: _summary(scores[layer.name], removed[layer.name]) for layer in chain
            },
        }

    def report(self, state: TrainingState) -> dict:
        return state.method_state.get("units", {})


def _summary(importance: torch.Tensor, removed: list[int]) -> dict:
    values = importance.detach().double().cpu()
    return {
        "units": len(values),
        "removed": len(removed),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "cut": float(values[removed].max()) if removed else None,
    }


@dataclass(frozen=True)
class ActivationConfig(UnitConfig):
    criterion: str = hp(
        "apoz: remove the units most often zero; mean: the lowest mean |activation|",
        "apoz",
        choices=("apoz", "mean"),
    )


@METHODS.register("activation")
class ActivationPruning(UnitMethod):
    """Remove the units most often zero (APoZ) or with the lowest mean |activation|."""

    Config = ActivationConfig
    paper = (
        "Hu et al. 2016, Network trimming: a data-driven neuron pruning approach towards "
        "efficient deep architectures"
    )

    def describe(self) -> str:
        return self.config.criterion

    def importance(self, ctx: Context, chain: list[UnitLayer]) -> dict[str, torch.Tensor]:
        stats = activation_statistics(ctx.model, chain, self._batches(ctx))
        if self.config.criterion == "mean":
            return {name: s.mean_abs for name, s in stats.items()}
        return {name: 1 - s.apoz for name, s in stats.items()}


@dataclass(frozen=True)
class SkeletonConfig(UnitConfig):
    relevance: str = hp(
        "gate: -dE/d alpha, one backward pass (Mozer and Smolensky); measured: the error "
        "increase with each unit zeroed, one forward pass per unit",
        "gate",
        choices=("gate", "measured"),
    )
    error: str = hp(
        "error E: the run's loss, or l1 = sum |softmax - onehot| (Mozer and Smolensky's)",
        "loss",
        choices=("loss", "l1"),
    )


@METHODS.register("skeletonization")
class Skeletonization(UnitMethod):
    """Remove the units whose removal increases the error least (measured or estimated)."""

    Config = SkeletonConfig
    paper = (
        "Mozer and Smolensky 1988, Skeletonization: a technique for trimming the fat from a "
        "network via relevance assessment"
    )

    def describe(self) -> str:
        return f"{self.config.relevance} relevance, {self.config.error} error"

    def importance(self, ctx: Context, chain: list[UnitLayer]) -> dict[str, torch.Tensor]:
        error = ctx.loss_fn if self.config.error == "loss" else l1_error
        relevance = measured_relevance if self.config.relevance == "measured" else gate_relevance
        return relevance(ctx.model, chain, self._batches(ctx), error)


@dataclass(frozen=True)
class NISPConfig(UnitConfig):
    final_scores: str = hp(
        "scores of the final responses (the last layer's inputs): inf-fs (Inf-FS on their "
        "activations) or ones (every output counts 1, through the last layer)",
        "inf-fs",
        choices=("inf-fs", "ones"),
    )
    inf_fs_alpha: float = hp(
        "Inf-FS mixing weight of the dispersion term (1 - it: of decorrelation)", 0.5, low=0, high=1
    )


@METHODS.register("nisp")
class NISP(UnitMethod):
    """Remove the units least important to the final responses, scores propagated by |W|^T."""

    Config = NISPConfig
    paper = "Yu et al. 2018, NISP: pruning networks using neuron importance score propagation"

    def describe(self) -> str:
        return f"nisp, final scores {self.config.final_scores}"

    def importance(self, ctx: Context, chain: list[UnitLayer]) -> dict[str, torch.Tensor]:
        last = chain[-1]
        if self.config.final_scores == "ones":
            weights = unit_weights(ctx.model, last)
            final = weights.T @ weights.new_ones(weights.shape[0])
        else:
            responses = unit_responses(ctx.model, last, self._batches(ctx))
            final = inf_fs(responses, self.config.inf_fs_alpha)
        return nisp_propagate(ctx.model, chain, final.double().cpu())


@METHODS.register("units-random")
class RandomUnits(UnitMethod):
    """The baseline: remove as many units per hidden layer as the other unit methods, at random."""

    Config = UnitConfig
    paper = "the random baseline (e.g. Mittal et al. 2018, Recovering from random pruning)"
    criterion: ClassVar[str] = "random"

    def importance(self, ctx: Context, chain: list[UnitLayer]) -> dict[str, torch.Tensor]:
        generator = ctx.generator(tag=0x756E)  # from (seed, step): the same after a resume
        return {layer.name: torch.rand(layer.units, generator=generator) for layer in chain}
