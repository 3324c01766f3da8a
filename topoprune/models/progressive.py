"""Progressive networks (Rusu et al. 2016) with sparse lateral connections sampled by node degree.

Column 1 is trained on task A (and pruned), then frozen; column k >= 2 learns a new task. Column
k's layer i >= 1 receives, besides its own previous layer, lateral connections from layer i's
input nodes in every earlier column (their hidden units). In the standard network every such
pair is connected; here a lateral adapter is a masked linear map whose mask comes from a sampler
of the registry ``LATERAL_SAMPLERS``: ``dense``, ``none`` (separate networks), ``random``
(uniform source nodes), ``preferential`` (source chosen with probability proportional to its
degree in the pruned column) and ``anti-preferential`` (proportional to 1 / degree, a control).
Target units are uniform. Masks use the shared mask machinery, so training keeps them fixed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.prune.masks import add_masks
from topoprune.registry import Registry
from topoprune.topology.layers import WeightLayer
from topoprune.topology.network import SparseNetwork

# A sampler: (source degrees, number of targets, fraction, generator) -> mask (targets, sources).
Sampler = Callable[[np.ndarray, int, float, np.random.Generator], np.ndarray]
LATERAL_SAMPLERS: Registry[Sampler] = Registry("lateral sampler")


def sample_pairs(
    source_weight: np.ndarray, n_target: int, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """A ``(n_target, n_source)`` mask with exactly ``round(fraction x n_source x n_target)``
    connections, each pair drawn without replacement with probability proportional to its
    source's weight (targets uniform). Sources of weight 0 are never drawn.

    Weighted sampling without replacement by exponential keys (Efraimidis and Spirakis 2006):
    the pairs with the smallest Exp(1) / weight.
    """
    if not 0 <= fraction <= 1:
        raise TopopruneError(f"the lateral fraction must be in [0, 1], got {fraction:g}")
    weight = np.asarray(source_weight, float)
    n_source = weight.size
    total = n_source * n_target
    count = round(fraction * total)
    available = int(np.count_nonzero(weight > 0)) * n_target
    if count > available:
        raise TopopruneError(
            f"{count} lateral connections asked for but only {available} pairs have a source "
            "that can be drawn (degree-0 sources never are): lower the fraction"
        )
    grid = np.broadcast_to(weight, (n_target, n_source)).ravel()
    with np.errstate(divide="ignore"):
        keys = rng.exponential(size=total) / grid  # weight 0 -> inf, never among the smallest
    mask = np.zeros(total, bool)
    if count:
        mask[np.argpartition(keys, count - 1)[:count]] = True
    return mask.reshape(n_target, n_source)


@LATERAL_SAMPLERS.register("dense")
def dense_sampler(degree, n_target, fraction, rng):
    return np.ones((n_target, np.asarray(degree).size), bool)


@LATERAL_SAMPLERS.register("none")
def no_sampler(degree, n_target, fraction, rng):
    return np.zeros((n_target, np.asarray(degree).size), bool)


@LATERAL_SAMPLERS.register("random")
def random_sampler(degree, n_target, fraction, rng):
    return sample_pairs(np.ones(np.asarray(degree).size), n_target, fraction, rng)


@LATERAL_SAMPLERS.register("preferential")
def preferential_sampler(degree, n_target, fraction, rng):
    return sample_pairs(np.asarray(degree, float), n_target, fraction, rng)


@LATERAL_SAMPLERS.register("anti-preferential")
def anti_preferential_sampler(degree, n_target, fraction, rng):
    degree = np.asarray(degree, float)
    weight = np.zeros_like(degree)
    weight[degree > 0] = 1.0 / degree[degree > 0]
    return sample_pairs(weight, n_target, fraction, rng)


def mlp_column(sizes: Sequence[int]) -> nn.Sequential:
    """An MLP laid out as the zoo's (Flatten, Linear, ReLU, ..., Linear), so a ``lenet300``
    checkpoint loads into ``mlp_column([784, 300, 100, 10])``."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _linears(column: nn.Sequential) -> list[nn.Linear]:
    return [m for m in column if isinstance(m, nn.Linear)]


class ProgressiveMLP(nn.Module):
    """Columns of MLPs; earlier columns frozen, the last one learning, with masked laterals.

    Parameters
    ----------
    columns : sequence of nn.Sequential
        MLPs built by :func:`mlp_column` (masked or not), all with the same depth; every column
        but the last is frozen.
    laterals : dict
        ``{(k, i, j): mask}``: a boolean ``(width of column k's layer i output, width of column
        j's layer i input)`` mask of the lateral adapter from column j (< k) into column k's
        weight layer i (i >= 1). Missing keys or all-zero masks mean no adapter.
    """

    def __init__(self, columns: Sequence[nn.Sequential], laterals: dict) -> None:
        super().__init__()
        self.columns = nn.ModuleList(columns)
        depths = {len(_linears(c)) for c in self.columns}
        if len(depths) != 1:
            raise TopopruneError(f"columns of different depths {sorted(depths)}")
        self.adapters = nn.ModuleDict()
        for (k, i, j), mask in laterals.items():
            mask = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
            if not 0 <= j < k < len(self.columns) or i < 1:
                raise TopopruneError(f"lateral {(k, i, j)}: needs 0 <= j < k and layer i >= 1")
            source = _linears(self.columns[j])[i].in_features
            target = _linears(self.columns[k])[i].out_features
            if tuple(mask.shape) != (target, source):
                raise TopopruneError(
                    f"lateral {(k, i, j)}: mask of shape {tuple(mask.shape)}, expected "
                    f"({target}, {source})"
                )
            if not mask.any():
                continue
            adapter = add_masks(nn.Linear(source, target, bias=False))
            with torch.no_grad():
                adapter.weight_orig.mul_(mask)
                adapter.weight_mask.copy_(mask)
            self.adapters[f"c{k}_l{i}_from{j}"] = adapter
        for column in self.columns[:-1]:
            column.requires_grad_(False)

    def train(self, mode: bool = True) -> ProgressiveMLP:
        super().train(mode)
        for column in self.columns[:-1]:
            column.eval()  # frozen columns stay in evaluation mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs: list[list[torch.Tensor]] = []  # per column, the input of each weight layer
        out = x
        for k, column in enumerate(self.columns):
            h = column[0](x)  # flatten
            seen = []
            linears = _linears(column)
            for i, linear in enumerate(linears):
                seen.append(h)
                z = linear(h)
                for j in range(k):
                    name = f"c{k}_l{i}_from{j}"
                    if name in self.adapters:
                        z = z + self.adapters[name](inputs[j][i])
                h = torch.relu(z) if i < len(linears) - 1 else z
            inputs.append(seen)
            out = h
        return out

    def lateral_network(self) -> SparseNetwork:
        """The lateral adapters as weight layers (unchained), for topology and fits."""
        layers = []
        for name, m in self.adapters.items():
            mask = m.weight_mask.detach().cpu().numpy().astype(bool)
            weight = (m.weight_orig * m.weight_mask).detach().cpu().numpy()
            layers.append(WeightLayer(f"{name}.weight", mask, weight))
        if not layers:
            raise TopopruneError("this progressive network has no lateral connections")
        return SparseNetwork(layers, chain=False)


def source_degrees(column_network: SparseNetwork, kind: str = "total") -> list[np.ndarray]:
    """Degrees of the input nodes of each weight layer of a (pruned) column: the sources of the
    laterals into the next column's layer i. ``kind``: ``in``, ``out`` or ``total``."""
    nodes = column_network.node_layers()
    return [n.degrees(kind) for n in nodes[:-1]]


def lateral_masks(
    column_degrees: list[np.ndarray],
    widths: Sequence[int],
    sampler: str,
    fraction: float,
    seed: int,
    *,
    column: int = 1,
    source_column: int = 0,
) -> dict:
    """Masks of the laterals from ``source_column`` into ``column``'s layers 1.. (``widths``:
    the new column's layer sizes, input first), drawn by ``sampler`` at ``fraction``."""
    draw = LATERAL_SAMPLERS[sampler]
    rng = np.random.default_rng(seed)
    masks = {}
    for i in range(1, len(widths) - 1):
        masks[(column, i, source_column)] = draw(column_degrees[i], widths[i + 1], fraction, rng)
    return masks
