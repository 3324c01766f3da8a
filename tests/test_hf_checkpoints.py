"""Hugging Face checkpoints: GPT-2's Conv1D weights (in x out) read transposed, embedding tables
skipped, sharded safetensors and pytorch_model.bin sets read as one network."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from topoprune.cli import main
from topoprune.io import CheckpointError, load_network

D, VOCAB, POSITIONS = 8, 50, 16


def gpt2_state(blocks: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny GPT-2-shaped state_dict in the transformers naming, pruned at random."""
    generator = torch.Generator().manual_seed(seed)

    def pruned(*shape):
        weight = torch.randn(*shape, generator=generator)
        return weight * (torch.rand(*shape, generator=generator) < 0.4)

    state = {"transformer.wte.weight": torch.randn(VOCAB, D, generator=generator),
             "transformer.wpe.weight": torch.randn(POSITIONS, D, generator=generator)}  # fmt: skip
    for b in range(blocks):
        h = f"transformer.h.{b}"
        state.update({
            f"{h}.ln_1.weight": torch.ones(D), f"{h}.ln_1.bias": torch.zeros(D),
            f"{h}.attn.c_attn.weight": pruned(D, 3 * D),
            f"{h}.attn.c_attn.bias": torch.zeros(3 * D),
            f"{h}.attn.c_proj.weight": pruned(D, D), f"{h}.attn.c_proj.bias": torch.zeros(D),
            f"{h}.mlp.c_fc.weight": pruned(D, 4 * D), f"{h}.mlp.c_fc.bias": torch.zeros(4 * D),
            f"{h}.mlp.c_proj.weight": pruned(4 * D, D), f"{h}.mlp.c_proj.bias": torch.zeros(D),
        })  # fmt: skip
        state[f"{h}.attn.bias"] = torch.tril(torch.ones(1, 1, POSITIONS, POSITIONS))  # a buffer
    state["lm_head.weight"] = pruned(VOCAB, D)  # nn.Linear: (out, in)
    state["score.weight"] = pruned(2, D)  # a classification head, nn.Linear
    return state


def conv1d_degrees(weight: torch.Tensor) -> tuple[list[int], list[int]]:
    """(out-degree of each input, in-degree of each output) of a Conv1D weight (in x out),
    computed directly: an independent reading of the layout."""
    nonzero = weight != 0
    return nonzero.sum(dim=1).tolist(), nonzero.sum(dim=0).tolist()


def write_model(folder, state, model_type="gpt2"):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "n_embd": D}))
    return folder


def test_config_json_makes_conv1d_weights_read_transposed(tmp_path):
    state = gpt2_state()
    network = load_network(write_model(tmp_path / "gpt2", state))
    assert (
        "transformer.wte.weight" in network.skipped
        and "embedding" in (network.skipped["transformer.wte.weight"])
    )
    layer = network.layer("transformer.h.0.attn.c_attn.weight")
    assert layer.shape == (3 * D, D)  # (out, in) after the transpose
    from topoprune.topology.layers import layer_degrees

    fan_out, fan_in = layer_degrees(layer)
    assert (fan_out.tolist(), fan_in.tolist()) == conv1d_degrees(
        state["transformer.h.0.attn.c_attn.weight"]
    )
    head = network.layer("lm_head.weight")
    assert head.shape == (VOCAB, D)  # a Linear: as stored
    assert network.layer("score.weight").shape == (2, D)  # a head: Linear too
    assert "transformer.h.0.attn.bias" in network.skipped  # GPT-2's causal-mask buffer
    assert not any(name.endswith(".bias") for name in network.names)
    assert any("Conv1D" in note for note in network.notes)


def test_openai_gpt_embeddings_are_skipped(tmp_path):
    state = {"tokens_embed.weight": torch.randn(VOCAB, D),
             "positions_embed.weight": torch.randn(POSITIONS, D),
             "h.0.attn.c_attn.weight": torch.randn(D, 3 * D)}  # fmt: skip
    network = load_network(write_model(tmp_path / "gpt", state, model_type="openai-gpt"))
    assert network.names == ["h.0.attn.c_attn.weight"]
    assert network.layers[0].shape == (3 * D, D)


def test_layout_flag_and_configs_of_other_models(tmp_path):
    state = gpt2_state()
    plain = tmp_path / "plain.safetensors"
    save_file(state, plain)
    assert load_network(plain).layer("transformer.h.0.mlp.c_fc.weight").shape == (D, 4 * D)
    flagged = load_network(plain, layout="conv1d")
    assert flagged.layer("transformer.h.0.mlp.c_fc.weight").shape == (4 * D, D)
    torch_read = load_network(write_model(tmp_path / "gpt2", state), layout="torch")
    assert torch_read.layer("transformer.h.0.mlp.c_fc.weight").shape == (D, 4 * D)
    llama = load_network(write_model(tmp_path / "llama", state, model_type="llama"))
    assert llama.layer("transformer.h.0.mlp.c_fc.weight").shape == (D, 4 * D)
    assert "transformer.wte.weight" in llama.skipped
    with pytest.raises(CheckpointError, match="unknown layout"):
        load_network(plain, layout="tf")


def shard(folder, state, parts: int, kind: str = "safetensors"):
    """Split ``state`` into ``parts`` shard files with a transformers-style index."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(state)
    weight_map, suffix = {}, "safetensors" if kind == "safetensors" else "bin"
    prefix = "model" if kind == "safetensors" else "pytorch_model"
    for k in range(parts):
        file = f"{prefix}-{k + 1:05d}-of-{parts:05d}.{suffix}"
        chunk = {n: state[n] for n in names[k::parts]}
        if kind == "safetensors":
            save_file(chunk, folder / file)
        else:
            torch.save(chunk, folder / file)
        weight_map.update(dict.fromkeys(chunk, file))
    index = folder / f"{prefix}.{suffix}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0},
                                 "weight_map": dict(sorted(weight_map.items()))}))  # fmt: skip
    return index


def degree_table(network):
    """Each layer's (input out-degrees, output in-degrees), by name: independent of file order."""
    return {layer.name: (fan_out.tolist(), fan_in.tolist())
            for layer, (fan_out, fan_in) in zip(network.layers, network.layer_degrees(),
                                                strict=True)}  # fmt: skip


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_sharded_checkpoints_are_one_network(tmp_path, kind):
    state = gpt2_state(blocks=3)
    whole = tmp_path / "whole.safetensors"
    save_file(state, whole)
    index = shard(tmp_path / "sharded", state, parts=3, kind=kind)
    from_index = load_network(index)
    from_folder = load_network(tmp_path / "sharded")
    assert sorted(from_index.names) == sorted(load_network(whole).names)
    assert degree_table(from_index) == degree_table(load_network(whole))
    assert degree_table(from_folder) == degree_table(from_index)


def test_broken_shard_sets_are_clear_errors(tmp_path, capsys):
    state = gpt2_state()
    index = shard(tmp_path / "s", state, parts=2)
    (tmp_path / "s" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing shard files: model-00002-of-00002"):
        load_network(index)
    index = shard(tmp_path / "t", state, parts=2)
    listing = json.loads(index.read_text())
    listing["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(listing))
    with pytest.raises(CheckpointError, match="lacks tensors the index assigns to it: ghost"):
        load_network(index)
    index = shard(tmp_path / "u", state, parts=2)
    listing = json.loads(index.read_text())
    moved = "transformer.h.0.mlp.c_fc.weight"
    listing["weight_map"][moved] = "model-00002-of-00002.safetensors"  # not where it is
    index.write_text(json.dumps(listing))
    with pytest.raises(CheckpointError, match="lacks tensors the index assigns to it"):
        load_network(index)
    index.write_text('{"weight_map": {"a.weight": "../escape.safetensors"}}')
    with pytest.raises(CheckpointError, match="not a file beside the index"):
        load_network(index)
    index.write_text("{ not json")
    assert main(["analyze", str(index)]) == 2
    assert "corrupt JSON" in capsys.readouterr().err


def test_tensors_outside_the_index_are_left_out(tmp_path):
    state = gpt2_state()
    index = shard(tmp_path / "s", state, parts=2)
    extra = {"optimizer.state": torch.ones(4, 4), "transformer.h.0.mlp.c_fc.weight":
             torch.ones(D, 4 * D)}  # fmt: skip
    first = tmp_path / "s" / "model-00001-of-00002.safetensors"
    from safetensors.torch import load_file

    save_file({**load_file(first), **extra}, first)  # a stray tensor and a duplicate
    network = load_network(index)
    assert "optimizer.state" not in network.names
    assert any(key.endswith(":optimizer.state") for key in network.skipped)


def test_a_folder_with_both_indexes_reads_the_safetensors_one(tmp_path):
    state = gpt2_state()
    shard(tmp_path / "m", state, parts=2, kind="safetensors")
    shard(tmp_path / "m", state, parts=2, kind="bin")
    network = load_network(tmp_path / "m")
    assert network.source.endswith("model.safetensors.index.json")


def test_command_line_reads_a_model_folder(tmp_path, capsys):
    state = gpt2_state()
    folder = tmp_path / "gpt2"
    shard(folder, state, parts=2)
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert main(["degrees", str(folder), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    layer = "transformer.h.1.mlp.c_proj"  # Conv1D (4D x D): 4D inputs, D outputs once transposed
    sizes = {n["name"]: len(n["total"]) for n in payload["node_layers"]}
    assert sizes[layer] == D and sizes[f"{layer}:in"] == 4 * D
