"""Grouped and depthwise convolutions: output channel o of a conv with g groups connects only to
its group's input channels. Degrees are checked against the same network with every grouped
conv expanded into the equivalent dense conv (zeros outside the groups), an independent path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from topoprune.cli import main
from topoprune.io import load_network, save_network
from topoprune.stats.null import layer_null_components
from topoprune.topology import network_from_module
from topoprune.topology.layers import WeightLayer, edge_multiplicity, layer_degrees
from topoprune.topology.network import SparseNetwork


class MobileBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, added to its input (a residual connection)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.pointwise = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return x + torch.relu(self.pointwise(torch.relu(self.depthwise(x))))


def separable_stack(expand: bool = False) -> nn.Sequential:
    """A depthwise-separable CNN; ``expand`` gives every grouped conv as an equivalent dense one
    (filled in by :func:`expanded`)."""
    groups = (lambda g: 1) if expand else (lambda g: g)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(),
        nn.Conv2d(8, 8, 3, groups=groups(8)), nn.ReLU(),  # depthwise
        nn.Conv2d(8, 16, 1), nn.ReLU(),  # pointwise
        nn.Conv2d(16, 32, 3, groups=groups(4)), nn.ReLU(),  # grouped
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip


def pruned(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                keep = torch.rand(module.weight.shape, generator=generator) < 0.5
                module.weight.mul_(keep)
    return model


def expanded(model: nn.Sequential) -> nn.Sequential:
    """The same network with each grouped conv's weight spread over all input channels."""
    dense = separable_stack(expand=True)
    with torch.no_grad():
        for mine, theirs in zip(model, dense, strict=True):
            if not isinstance(mine, (nn.Conv2d, nn.Linear)):
                continue
            if isinstance(mine, nn.Conv2d) and mine.groups > 1:
                theirs.weight.zero_()
                per_out, per_in = mine.out_channels // mine.groups, mine.in_channels // mine.groups
                for o in range(mine.out_channels):
                    g = o // per_out
                    theirs.weight[o, g * per_in : (g + 1) * per_in] = mine.weight[o]
            else:
                theirs.weight.copy_(mine.weight)
    return dense


def degrees(network, view="channel"):
    return [(n.name, n.in_degree.tolist(), n.out_degree.tolist())
            for n in network.node_layers(view)]  # fmt: skip


@pytest.mark.parametrize("view", ["channel", "channel-simple", "im2col"])
def test_chained_degrees_equal_the_expanded_dense_network(view):
    model = pruned(separable_stack())
    network = network_from_module(model)
    assert all(network.chain) and [layer.groups for layer in network.layers] == [1, 8, 1, 4, 1]
    assert degrees(network, view) == degrees(network_from_module(expanded(model)), view)


def test_edges_by_brute_force():
    rng = np.random.default_rng(0)
    mask = rng.random((6, 2, 3)) < 0.5  # conv1d, 6 outputs, 3 groups of 2 inputs each
    layer = WeightLayer("g", mask, groups=3)
    expected = np.zeros((6, 6), dtype=np.int64)
    for o in range(6):
        for c in range(6):
            if c // 2 == o // 2:
                expected[o, c] = mask[o, c % 2].sum()
    assert np.array_equal(edge_multiplicity(layer), expected)
    fan_out, fan_in = layer_degrees(layer)
    assert fan_out.tolist() == expected.sum(axis=0).tolist()
    assert fan_in.tolist() == expected.sum(axis=1).tolist()


def test_residual_blocks_trace_and_stay_exact():
    model = pruned(nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), MobileBlock(16),
                                 MobileBlock(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(16, 10)))  # fmt: skip
    network = network_from_module(model)
    assert [layer.groups for layer in network.layers] == [1, 16, 1, 16, 1, 1]
    # depthwise -> pointwise inside a block chain; the residual sums break the other links
    assert network.chain == (False, True, False, True, False)
    depthwise = network.layers[1]
    fan_out, fan_in = layer_degrees(depthwise)
    kernel = model[2].depthwise.weight.detach()
    assert fan_in.tolist() == (kernel != 0).sum(dim=(1, 2, 3)).tolist()
    assert fan_out.tolist() == fan_in.tolist()  # depthwise: input c feeds only output c


def test_files_infer_groups_under_sequential_chaining(tmp_path, capsys):
    model = pruned(separable_stack())
    path = tmp_path / "mobile.pt"  # a state_dict keeps the forward order (safetensors sorts names)
    torch.save(model.state_dict(), path)
    network = load_network(path, chain="sequential")
    assert [layer.groups for layer in network.layers] == [1, 8, 1, 4, 1]
    assert any("2.weight: 8 (depthwise)" in note and "6.weight: 4" in note
               for note in network.notes)  # fmt: skip
    assert degrees(network) == degrees(network_from_module(model))
    assert main(["degrees", str(path), "--chain", "sequential"]) == 0
    assert "node_layer" in capsys.readouterr().out
    # unchained, the depthwise weight is read as what it holds: one input node per group slot
    assert load_network(path).layers[1].groups == 1


def test_checkpoints_and_compressed_files_keep_groups(tmp_path):
    from topoprune.compress import compress_checkpoint

    model = pruned(separable_stack())
    network = network_from_module(model)
    save_network(network, tmp_path / "net.pt")
    again = load_network(tmp_path / "net.pt")
    assert [layer.groups for layer in again.layers] == [1, 8, 1, 4, 1] and all(again.chain)
    compress_checkpoint(tmp_path / "net.pt", tmp_path / "net.tprz", conv_bits=4, fc_bits=4)
    packed = load_network(tmp_path / "net.tprz")
    assert [layer.groups for layer in packed.layers] == [1, 8, 1, 4, 1] and all(packed.chain)
    assert degrees(packed) == degrees(network)


def test_the_random_null_of_a_grouped_layer_counts_only_its_group():
    model = pruned(separable_stack())
    network = network_from_module(model)
    (trials_out, _), (trials_in, _) = layer_null_components(network, 3, "channel")
    assert trials_out == (32 // 4) * 9  # an input feeds the 8 outputs of its group, 9 taps each
    assert trials_in == (16 // 4) * 9


def test_pairs_that_do_not_divide_still_stop_the_chain(tmp_path):
    from topoprune.io import CheckpointError

    state = {"a.weight": torch.ones(6, 1, 3, 3), "b.weight": torch.ones(8, 4, 3, 3)}
    torch.save(state, tmp_path / "bad.pt")  # 6 outputs cannot feed groups of 4 inputs
    with pytest.raises(CheckpointError, match="do not chain"):
        load_network(tmp_path / "bad.pt", chain="sequential")


def test_graph_export_of_a_linear_layer_after_a_flatten():
    from topoprune.topology.graphs import layer_graph

    conv = WeightLayer("conv.weight", np.ones((2, 1, 3, 3), dtype=bool))
    fc = WeightLayer("fc.weight", np.ones((3, 2 * 4), dtype=bool),
                     weight=np.arange(24, dtype=np.float32).reshape(3, 8))  # fmt: skip
    graph = layer_graph(SparseNetwork([conv, fc], chain=True), "fc.weight")
    multiplicities = {d["multiplicity"] for *_, d in graph.edges(data=True)}
    assert multiplicities == {4}  # each channel-to-output edge stands for 4 weights
    assert not any("weight" in d for *_, d in graph.edges(data=True))


def test_the_spectral_baseline_keeps_a_grouped_layers_blocks():
    from topoprune.topology.connectivity import spectral_table

    model = pruned(separable_stack())
    rows = spectral_table(network_from_module(model))
    depthwise = rows[1]
    # 8 disjoint 1x1 blocks: every singular value is at most one block's, in both masks
    assert depthwise["random_s1"] <= 1.0 + 1e-9 and depthwise["s1"] <= 1.0 + 1e-9
