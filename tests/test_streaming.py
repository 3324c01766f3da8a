"""Reading for degrees only (`reduce_to_degrees`): each layer reduced as it is read, its mask
dropped; bfloat16/float16 read as bit patterns. Everything it reports must equal the full read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from topoprune.io import load_network, save_network
from topoprune.topology import TopologyError, summarize
from topoprune.topology.layers import edge_multiplicity


def mixed_state(dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def sparse(*shape, p=0.5):
        return torch.randn(*shape, generator=generator) * (
            torch.rand(*shape, generator=generator) < p
        )

    state = {"conv.weight": sparse(8, 3, 3, 3), "fc1.weight": sparse(64, 72, p=0.3),
             "fc1.bias": torch.zeros(64), "fc2.weight": sparse(10, 64, p=0.6)}  # fmt: skip
    state["fc1.weight"][0, 0] = float("nan")
    state["fc1.weight"][1, 1] = float("inf")
    state["fc2.weight"][0, 0] = -0.0  # a negative zero is no connection
    state["fc2.weight"][0, 1] = 1e-40  # subnormal in float32, 0 in float16: compare per dtype
    return {k: v.to(dtype) for k, v in state.items()}


def report(network, view):
    summary = summarize(network, view)
    return (
        [
            (r["layer"], r["nnz"], r["nonfinite"], r["n_m"], r["dead_inputs"])
            for r in summary.layers
        ],
        [(n["node_layer"], n["total"]) for n in summary.node_layers],
        [(n.name, n.total_degree.tolist()) for n in network.node_layers(view)],
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("view", ["channel", "channel-simple", "im2col"])
def test_reduced_reading_equals_the_full_read(tmp_path, dtype, view):
    path = tmp_path / "mixed.safetensors"
    save_file(mixed_state(dtype), path)
    full = load_network(path, keep_weights=False)
    reduced = load_network(path, keep_weights=False, reduce_to_degrees=view)
    assert all(layer.reduced is not None for layer in reduced.layers)
    assert report(reduced, view) == report(full, view)
    assert [layer.nonfinite for layer in reduced.layers] == [0, 2, 0]


def test_reduced_layers_refuse_what_needs_masks(tmp_path):
    path = tmp_path / "mixed.safetensors"
    save_file(mixed_state(), path)
    network = load_network(path, keep_weights=False, reduce_to_degrees="channel")
    with pytest.raises(TopologyError, match="read for its degrees only"):
        edge_multiplicity(network.layers[1])
    with pytest.raises(TopologyError, match="read for its degrees only"):
        network.node_layers("im2col")  # reduced for the channel view
    with pytest.raises(TopologyError, match="saving needs the mask"):
        save_network(network, tmp_path / "x.pt")
    assert summarize(network).connectivity is None


def test_sequential_reading_keeps_masks(tmp_path):
    state = {"a.weight": torch.ones(4, 3), "b.weight": torch.ones(2, 4)}
    save_file(state, tmp_path / "s.safetensors")
    network = load_network(tmp_path / "s.safetensors", chain="sequential",
                           reduce_to_degrees="channel")  # fmt: skip
    assert all(layer.reduced is None for layer in network.layers)
    assert np.array_equal(network.layers[0].mask, np.ones((4, 3), dtype=bool))


def test_int8_weights_are_read_as_weights(tmp_path):
    weight = torch.tensor([[0, 3, -2], [0, 0, 127]], dtype=torch.int8)
    torch.save({"q.weight": weight, "q.scale": torch.ones(2), "steps": torch.tensor(3)},
               tmp_path / "int8.pt")  # fmt: skip
    network = load_network(tmp_path / "int8.pt")
    assert network.names == ["q.weight"] and network.layers[0].nnz == 3
