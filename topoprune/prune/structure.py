"""Physical removal of channels and units: a structured result becomes a smaller dense model.

Removing output channel c of a convolution removes its filter and bias, its BatchNorm entries
and the matching input kernels of every consumer: the next convolution's input channel c, or
the flattened linear inputs of channel c. Channels that residual additions join are removed
together, and a depthwise convolution passes its input channels through to its outputs. The
dependencies come from a ``torch.fx`` trace with shapes (in the spirit of Torch-Pruning's
DepGraph, Fang et al. 2023): each producer's channels form a *channel space*; parameter-free
channel-wise operations (activations, pooling, dropout) keep a space, BatchNorm is attached to
it, additions merge spaces, flattening scales it by the spatial size for the linear consumer.
A space that reaches the model's output, a concatenation, a grouped (not depthwise) convolution
or any operation the trace does not know is frozen: never pruned.

:func:`channel_groups` lists the spaces; :func:`remove_channels` keeps chosen channels of
chosen spaces; :func:`zero_channels` finds channels whose producers are exactly zero (filters,
biases and BatchNorm affine terms), whose removal changes no output; :func:`compact` removes
them; :func:`save_compact` writes the result with ``torch.export``: it loads with
``torch.export.load`` alone, without topoprune.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from topoprune.errors import TopopruneError

# channel-wise operations that map a zero channel to zero (a sigmoid would make it 0.5)
CHANNELWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.LeakyReLU,
                       nn.ELU, nn.Hardswish, nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool1d,
                       nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                       nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)  # fmt: skip
CHANNELWISE_FUNCTIONS = {torch.relu, torch.tanh, nn.functional.relu,
                         nn.functional.gelu, nn.functional.silu, nn.functional.dropout,
                         nn.functional.max_pool2d, nn.functional.avg_pool2d,
                         nn.functional.adaptive_avg_pool2d}  # fmt: skip
ADDING_FUNCTIONS = {operator.add, torch.add, operator.sub, torch.sub, operator.iadd}
MERGING_FUNCTIONS = ADDING_FUNCTIONS | {operator.mul, torch.mul, operator.imul}
FLATTENING_FUNCTIONS = {torch.flatten}


@dataclass
class ChannelGroup:
    """Channels that are removed together: one channel space of ``size`` channels."""

    size: int
    producers: list[str] = field(default_factory=list)  # conv/linear writing these channels
    norms: list[str] = field(default_factory=list)  # BatchNorm over these channels
    passthrough: list[str] = field(default_factory=list)  # depthwise convs: in c -> out c
    consumers: list[tuple[str, int]] = field(default_factory=list)  # (module, features/channel)
    frozen: str = ""  # why the channels cannot be removed ("" if they can)


class _Spaces:
    """Union-find over channel spaces."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.groups: list[ChannelGroup] = []

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.groups.append(ChannelGroup(size))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        ga, gb = self.groups[a], self.groups[b]
        if ga.size != gb.size:
            ga.frozen = gb.frozen = f"joined spaces of {ga.size} and {gb.size} channels"
        self.parent[b] = a
        for name in ("producers", "norms", "passthrough", "consumers"):
            getattr(ga, name).extend(getattr(gb, name))
        ga.frozen = ga.frozen or gb.frozen
        return a

    def freeze(self, i: int, why: str) -> None:
        group = self.groups[self.find(i)]
        group.frozen = group.frozen or why


def _trace(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as exc:
        raise TopopruneError(
            f"{type(model).__name__} cannot be traced by torch.fx ({type(exc).__name__}): "
            "channel dependencies need a traceable model"
        ) from None
    from topoprune.prune.curvature import evaluating

    # eval mode and no gradients: tracing must not move BatchNorm statistics or draw dropout
    with evaluating(model), torch.no_grad():
        ShapeProp(traced).propagate(example)
    return traced


def channel_groups(model: nn.Module, example: torch.Tensor) -> list[ChannelGroup]:
    """The channel spaces of ``model`` (traced on ``example``, a batch of inputs)."""
    traced = _trace(model, example)
    modules = dict(traced.named_modules())
    spaces = _Spaces()
    space_of: dict[str, tuple[int, int]] = {}  # node -> (space, features per channel)

    def incoming(node: torch.fx.Node) -> list[tuple[int, int]]:
        return [space_of[a.name] for a in node.all_input_nodes if a.name in space_of]

    def freeze_inputs(node: torch.fx.Node, why: str) -> None:
        for space, _ in incoming(node):
            spaces.freeze(space, why)

    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    batch = next((n.meta["tensor_meta"].shape[0] for n in traced.graph.nodes
                  if n.op == "placeholder" and "tensor_meta" in n.meta), None)  # fmt: skip

    def ndim(node: torch.fx.Node) -> int:
        meta = node.meta.get("tensor_meta")
        return len(meta.shape) if meta is not None and hasattr(meta, "shape") else -1

    for node in traced.graph.nodes:
        if node.op == "call_module":
            module = modules[node.target]
            inputs = incoming(node)
            if calls[node.target] > 1:  # one module at two places: its widths are shared
                freeze_inputs(node, f"{node.target} is called more than once")
                if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                    space = spaces.new(getattr(module, "out_channels", None)
                                       or module.out_features)  # fmt: skip
                    spaces.groups[space].producers.append(node.target)
                    spaces.freeze(space, f"{node.target} is called more than once")
                    space_of[node.name] = (space, 1)
                continue
            if isinstance(module, nn.Linear) and ndim(node) != 2:
                # a linear layer on (N, ..., F) acts on the last axis, not the channel axis
                freeze_inputs(node, f"{node.target}: a linear layer on a {ndim(node)}-D tensor")
                space = spaces.new(module.out_features)
                spaces.groups[space].producers.append(node.target)
                spaces.freeze(space, f"{node.target}: its outputs are not on the channel axis")
                space_of[node.name] = (space, 1)
                continue
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                space_of[node.name] = _weight_module(node.target, module, inputs, spaces)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and incoming(node):
                space, factor = incoming(node)[0]
                if factor != 1:  # a BatchNorm over flattened features, not channels
                    freeze_inputs(node, f"{node.target}: a BatchNorm over flattened features")
                    continue
                spaces.groups[spaces.find(space)].norms.append(node.target)
                space_of[node.name] = (space, factor)
            elif isinstance(module, CHANNELWISE_MODULES) and incoming(node):
                space_of[node.name] = incoming(node)[0]
            elif isinstance(module, nn.Flatten) and incoming(node):
                _flatten(node, incoming(node)[0], space_of, spaces, batch)
            else:
                freeze_inputs(node, f"{node.target}: {type(module).__name__} is not understood")
        elif node.op == "call_function":
            inputs = incoming(node)
            if node.target in CHANNELWISE_FUNCTIONS and inputs:
                space_of[node.name] = inputs[0]
            elif node.target in MERGING_FUNCTIONS and inputs:
                tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
                constants = [a for a in node.args if not isinstance(a, torch.fx.Node)]
                if len(inputs) != len(tensors) or (node.target in ADDING_FUNCTIONS and constants):
                    # a tensor we do not follow, or a constant added (zero would not stay zero)
                    freeze_inputs(node, "an operation with an untracked tensor or a constant")
                    continue
                space = inputs[0][0]
                for other, _ in inputs[1:]:
                    space = spaces.union(space, other)
                if len({f for _, f in inputs}) > 1:
                    spaces.freeze(space, "an addition of tensors of different layouts")
                space_of[node.name] = (space, inputs[0][1])
            elif node.target in FLATTENING_FUNCTIONS and inputs:
                _flatten(node, inputs[0], space_of, spaces, batch)
            elif node.target is getattr and ndim(node) == -1:
                pass  # x.shape: reads the layout, computes nothing from the channels
            else:
                freeze_inputs(node, f"{getattr(node.target, '__name__', node.target)} is not "
                                    "understood (e.g. a concatenation)")  # fmt: skip
        elif node.op == "call_method":
            inputs = incoming(node)
            if node.target in ("flatten", "view", "reshape") and inputs:
                _flatten(node, inputs[0], space_of, spaces, batch)
            elif node.target in ("relu", "tanh", "contiguous") and inputs:
                space_of[node.name] = inputs[0]
            elif node.target in ("size", "dim") and ndim(node) == -1:
                pass  # x.size(0): a number, nothing computed from the channels
            else:
                freeze_inputs(node, f".{node.target}() is not understood")
        elif node.op == "output":
            freeze_inputs(node, "the model's output")
    roots = sorted({spaces.find(i) for i in range(len(spaces.parent))})
    return [spaces.groups[r] for r in roots if spaces.groups[r].producers]


def _weight_module(name: str, module: nn.Module, inputs: list, spaces: _Spaces) -> tuple[int, int]:
    """Register a conv/linear layer: it consumes its inputs' spaces and produces a new one (a
    depthwise convolution passes its input space through; a grouped one freezes both)."""
    groups = getattr(module, "groups", 1)
    if groups > 1:
        if groups == module.in_channels == module.out_channels and inputs:
            space = inputs[0][0]
            spaces.groups[spaces.find(space)].passthrough.append(name)
            return space, 1
        for space, _ in inputs:
            spaces.freeze(space, f"{name}: a grouped convolution")
    for space, factor in inputs:
        spaces.groups[spaces.find(space)].consumers.append((name, factor))
    size = module.out_features if isinstance(module, nn.Linear) else module.out_channels
    space = spaces.new(size)
    spaces.groups[space].producers.append(name)
    if groups > 1:
        spaces.freeze(space, f"{name}: a grouped convolution")
    return space, 1


def _flatten(
    node, source: tuple[int, int], space_of: dict, spaces: _Spaces, batch: int | None = None
) -> None:
    """A flatten (or view) to (batch, features): each channel becomes ``features / C`` features."""
    space, factor = source
    meta = node.meta.get("tensor_meta")
    group = spaces.groups[spaces.find(space)]
    shape = tuple(meta.shape) if meta is not None else ()
    if (
        factor != 1
        or len(shape) != 2
        or shape[1] % group.size
        or (batch is not None and shape[0] != batch)
    ):
        spaces.freeze(space, "a reshape that is not a flatten to (batch, features)")
        return
    space_of[node.name] = (space, shape[1] // group.size)


def _keep_rows(param: torch.Tensor | None, keep: torch.Tensor) -> nn.Parameter | None:
    return None if param is None else nn.Parameter(param.detach()[keep].clone())


def remove_channels(
    model: nn.Module, example: torch.Tensor, keep: dict[int, list[int]]
) -> nn.Module:
    """A copy of ``model`` keeping, in each group ``g`` of :func:`channel_groups` (by index),
    only the channels ``keep[g]``; groups not in ``keep`` are left whole."""
    groups = channel_groups(model, example)
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    for index, channels in keep.items():
        group = groups[index]
        if group.frozen:
            raise TopopruneError(f"channel group {index} cannot be pruned: {group.frozen}")
        kept = torch.as_tensor(sorted(set(channels)), dtype=torch.long)
        if kept.numel() == 0:
            raise TopopruneError(f"channel group {index}: keep at least one channel")
        if kept.min() < 0 or kept.max() >= group.size:
            raise TopopruneError(f"channel group {index} has {group.size} channels")
        with torch.no_grad():
            for name in group.producers:
                module = modules[name]
                module.weight = _keep_rows(module.weight, kept)
                module.bias = _keep_rows(module.bias, kept)
                if isinstance(module, nn.Linear):
                    module.out_features = kept.numel()
                else:
                    module.out_channels = kept.numel()
            for name in group.passthrough:  # depthwise: its filters follow its inputs
                module = modules[name]
                module.weight = _keep_rows(module.weight, kept)
                module.bias = _keep_rows(module.bias, kept)
                module.in_channels = module.out_channels = module.groups = kept.numel()
            for name in group.norms:
                module = modules[name]
                if module.affine:
                    module.weight = _keep_rows(module.weight, kept)
                    module.bias = _keep_rows(module.bias, kept)
                for buffer in ("running_mean", "running_var"):
                    if getattr(module, buffer, None) is not None:
                        setattr(module, buffer, getattr(module, buffer)[kept].clone())
                module.num_features = kept.numel()
            for name, factor in group.consumers:
                module = modules[name]
                columns = (kept[:, None] * factor + torch.arange(factor)).reshape(-1)
                module.weight = nn.Parameter(module.weight.detach()[:, columns].clone())
                if isinstance(module, nn.Linear):
                    module.in_features = columns.numel()
                else:
                    module.in_channels = columns.numel()
    return model


def zero_channels(model: nn.Module, example: torch.Tensor) -> dict[int, list[int]]:
    """Per prunable group, the channels to keep: those not exactly zero, where a zero channel is
    one whose every producer has an all-zero filter and bias, and whose BatchNorm entries make
    a zero input zero (beta 0). Removing the others changes no output."""
    groups = channel_groups(model, example)
    modules = dict(model.named_modules())
    keep = {}
    with torch.no_grad():
        for index, group in enumerate(groups):
            if group.frozen:
                continue
            device = modules[group.producers[0]].weight.device
            alive = torch.zeros(group.size, dtype=torch.bool, device=device)
            for name in group.producers + group.passthrough:
                module = modules[name]
                alive |= module.weight.reshape(group.size, -1).ne(0).any(dim=1)
                if module.bias is not None:
                    alive |= module.bias.ne(0)
            for name in group.norms:
                alive |= _normalised_zero(modules[name]).ne(0)
            if not alive.all() and alive.any():
                keep[index] = alive.nonzero().squeeze(1).tolist()
    return keep


def _normalised_zero(norm: nn.Module) -> torch.Tensor:
    """What a BatchNorm makes of an all-zero channel, in either mode: beta in training (batch
    statistics of a zero channel are zero), ``beta - gamma mean / sqrt(var + eps)`` in eval.
    Nonzero in either: the channel still matters."""
    size = norm.num_features
    gamma = norm.weight if norm.affine else torch.ones(size)
    beta = norm.bias if norm.affine else torch.zeros(size)
    out = beta.abs()
    if norm.track_running_stats and norm.running_mean is not None:
        scale = gamma / torch.sqrt(norm.running_var + norm.eps)
        out = out + (beta - scale * norm.running_mean).abs()
    return out


def compact(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` with its exactly-zero channels removed (:func:`zero_channels`)."""
    return remove_channels(model, example, zero_channels(model, example))


def save_compact(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Write ``model`` (put in eval mode) with ``torch.export``, the batch size free (give an
    ``example`` of at least 2 examples): ``torch.export.load(path).module()`` runs it with
    torch alone, its widths recorded in the program."""
    if example.shape[0] < 2:
        raise TopopruneError("save_compact needs an example batch of at least 2 inputs")
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path)
    return path
