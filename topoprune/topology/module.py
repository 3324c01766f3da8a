"""SparseNetwork from a live ``torch.nn.Module``: weight layers, masks and chaining.

Chaining is read from the module's computation: a ``torch.fx`` trace links each weight layer to the
weight layers that feed it through parameter-free operations (activations, pooling, flatten,
dropout). Two consecutive layers chain when each is the other's only neighbour; branches, sums and
concatenations break the chain there. A module fx cannot trace falls back to an ``nn.Sequential``
reading, else no chaining (with a note).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from topoprune.topology.layers import weight_layer
from topoprune.topology.network import SparseNetwork

WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _weight_and_mask(module: nn.Module) -> tuple[np.ndarray, np.ndarray | None]:
    weight = module.weight.detach().cpu().float().numpy()
    mask = getattr(module, "weight_mask", None)  # torch.nn.utils.prune and topoprune's engine
    if isinstance(mask, torch.Tensor):
        return weight, mask.detach().cpu().numpy()
    return weight, None


def _fx_chain(module: nn.Module, names: list[str]) -> tuple[list[str], list[bool]] | str:
    """The weight layers in graph order and whether each pair chains, or why they cannot be
    ordered."""
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # fx cannot trace data-dependent control flow; fall back
        return "the module could not be traced"
    weight_nodes = {
        n.name: n.target for n in graph.nodes if n.op == "call_module" and n.target in names
    }
    upstream: dict[str, set[str]] = {}

    def feeders(node: torch.fx.Node, seen: set[str]) -> set[str]:
        found: set[str] = set()
        for arg in node.all_input_nodes:
            if arg.name in seen:
                continue
            seen.add(arg.name)
            if arg.name in weight_nodes:
                found.add(weight_nodes[arg.name])
            elif arg.op != "get_attr":
                found |= feeders(arg, seen)
        return found

    order = []
    for node in graph.nodes:
        if node.name in weight_nodes:
            target = weight_nodes[node.name]
            if target in upstream:  # a recurrent layer, a shared layer: no single graph position
                return f"{target} is called more than once (a recurrence or a shared layer)"
            order.append(target)
            upstream[target] = feeders(node, set())
    downstream: dict[str, set[str]] = {name: set() for name in order}
    for target, sources in upstream.items():
        for source in sources:
            downstream[source].add(target)
    chain = [upstream[b] == {a} and downstream[a] == {b} for a, b in itertools.pairwise(order)]
    return order, chain


def network_from_module(module: nn.Module, *, keep_weights: bool = True) -> SparseNetwork:
    """The weight layers (Linear, Conv1d, Conv2d) of a module with their masks and chaining.

    Masks are a module's ``weight_mask`` buffer when present (torch.nn.utils.prune, topoprune's
    masked training), else its nonzero weights. Layer names are ``<module path>.weight``.

    Examples
    --------
    >>> net = network_from_module(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    >>> net.names, net.chain
    (['0.weight', '2.weight'], (True,))
    """
    modules = {name: m for name, m in module.named_modules() if isinstance(m, WEIGHT_MODULES)}
    if not modules:
        from topoprune.topology.layers import TopologyError

        raise TopologyError(f"{type(module).__name__} has no Linear or Conv1d/Conv2d layers")
    notes = []
    traced = _fx_chain(module, list(modules))
    if not isinstance(traced, str) and set(traced[0]) == set(modules):
        order, chain = traced
    else:
        order = list(modules)
        if isinstance(module, nn.Sequential):
            chain = [True] * (len(order) - 1)
        else:
            chain = [False] * (len(order) - 1)
            reason = traced if isinstance(traced, str) else "not every weight layer is in its graph"
            notes.append(f"{reason}: layers are not chained")
    layers = [
        weight_layer(
            f"{name}.weight",
            *_weight_and_mask(modules[name]),
            keep_weights=keep_weights,
            groups=getattr(modules[name], "groups", 1),
        )
        for name in order
    ]
    return SparseNetwork(layers, chain, source=type(module).__name__, notes=notes)
