"""Checkpoint formats: detection, equivalence, safety, and bad input."""

import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy_safetensors
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import prune

from topoprune.cli import main
from topoprune.io import CheckpointError, detect_format, load_network, save_network
from topoprune.topology import network_from_module


def plain_copy(model):
    """The pruned model's state_dict as plain weights with zeros (prune made permanent)."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("_mask"):
            continue
        if name.endswith("_orig"):
            base = name[: -len("_orig")]
            tensor = tensor * model.state_dict()[base + "_mask"]
            name = base
        state[name] = tensor.contiguous()
    return state


@pytest.fixture
def lenet_files(tmp_path, pruned_lenet300):
    paths = {
        "prune": tmp_path / "lenet_prune.pt",
        "zeros": tmp_path / "lenet_zeros.pth",
        "safetensors": tmp_path / "lenet.safetensors",
        "npz": tmp_path / "lenet.npz",
    }
    torch.save(pruned_lenet300.state_dict(), paths["prune"])
    state = plain_copy(pruned_lenet300)
    torch.save(state, paths["zeros"])
    save_file(state, paths["safetensors"])
    np.savez(paths["npz"], **{k: v.numpy() for k, v in state.items()})
    return paths


def test_formats_are_detected_from_content(lenet_files):
    expected = {"prune": "torch", "zeros": "torch", "safetensors": "safetensors", "npz": "npz"}
    for key, path in lenet_files.items():
        assert detect_format(path) == expected[key]


def test_three_formats_give_identical_degrees_output(lenet_files, capsys):
    outputs = []
    for key in ("prune", "zeros", "safetensors", "npz"):
        assert main(["degrees", str(lenet_files[key]), "--chain", "sequential", "--json"]) == 0
        payload = json.loads(capsys.readouterr().out)
        payload.pop("source")
        outputs.append(payload)
    assert all(o == outputs[0] for o in outputs[1:])
    names = [n["name"] for n in outputs[0]["node_layers"]]
    assert names == ["input", "0", "2", "4"]
    assert sum(outputs[0]["node_layers"][1]["in"]) == 23520  # 10% of 300 x 784


def test_prune_mask_is_used_even_where_weights_are_zero(tmp_path):
    layer = nn.Linear(4, 3)
    prune.custom_from_mask(layer, "weight", torch.tensor([[1, 0, 1, 1]] * 3))
    with torch.no_grad():
        layer.weight_orig[0, 0] = 0.0  # kept by the mask, but exactly zero
    torch.save(layer.state_dict(), tmp_path / "p.pt")
    net = load_network(tmp_path / "p.pt")
    assert net.layers[0].nnz == 9
    assert network_from_module(layer).layers[0].nnz == 9


def test_module_and_checkpoint_agree(pruned_lenet300, lenet_files):
    from_module = network_from_module(pruned_lenet300)
    from_file = load_network(lenet_files["prune"], chain="sequential")
    assert from_module.chain == (True, True)
    for a, b in zip(from_module.node_layers(), from_file.node_layers()):
        assert np.array_equal(a.total_degree, b.total_degree)


def test_own_checkpoint_round_trip_records_the_chain(tmp_path, pruned_lenet300):
    net = network_from_module(pruned_lenet300)
    path = save_network(net, tmp_path / "own.pt", metadata={"method": "l1_unstructured"})
    loaded = load_network(path)  # no --chain needed: it is recorded
    assert loaded.chain == (True, True) and loaded.names == net.names
    for a, b in zip(net.layers, loaded.layers):
        assert np.array_equal(a.mask, b.mask)
        assert np.allclose(a.weight, b.weight)
    assert load_network(path, chain="none").chain == (False, False)
    assert load_network(path, layers=["2", "4"]).chain == (True,)


def test_skipped_tensors_are_listed(lenet_files):
    net = load_network(lenet_files["zeros"])
    assert net.skipped == {f"{i}.bias": "1-D (bias, normalisation or buffer)" for i in (0, 2, 4)}
    assert "--chain sequential" in net.notes[0]


def test_nested_state_dict_and_integer_buffers(tmp_path):
    state = {
        "fc.weight": torch.eye(3),
        "bn.num_batches_tracked": torch.tensor(3),
        "pos_ids": torch.arange(6).reshape(2, 3),
    }
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pt")
    net = load_network(tmp_path / "ckpt.pt")
    assert net.names == ["fc.weight"]
    assert (
        net.skipped["pos_ids"] == "torch.int64 tensor (not weights)"
        or "int64" in net.skipped["pos_ids"]
    )


def test_bert_style_encoder_in_safetensors(tmp_path, capsys):
    """A magnitude-pruned BERT-shaped encoder, named as Hugging Face names it."""
    rng = np.random.default_rng(0)
    hidden, inter, vocab = 32, 64, 100
    state = {
        "embeddings.word_embeddings.weight": (vocab, hidden),
        "embeddings.position_embeddings.weight": (64, hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
    }
    for i in range(2):
        p = f"encoder.layer.{i}."
        for name in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ):
            state[p + name + ".weight"] = (hidden, hidden)
            state[p + name + ".bias"] = (hidden,)
        state[p + "attention.output.LayerNorm.weight"] = (hidden,)
        state[p + "intermediate.dense.weight"] = (inter, hidden)
        state[p + "output.dense.weight"] = (hidden, inter)
    arrays = {}
    for name, shape in state.items():
        w = rng.normal(size=shape).astype(np.float32)
        if len(shape) == 2:
            w[np.abs(w) < np.quantile(np.abs(w), 0.7)] = 0.0
        arrays[name] = w
    path = tmp_path / "model.safetensors"
    save_numpy_safetensors(arrays, path)
    net = load_network(path)
    assert len(net.layers) == 2 + 2 * 6 and not any(net.chain)
    assert all("LayerNorm" in k or k.endswith("bias") for k in net.skipped)
    density = net.nnz / net.size
    assert density == pytest.approx(0.3, abs=0.01)
    attention = load_network(path, layers=["encoder.layer.*.attention.self.*"])
    assert len(attention.layers) == 6
    assert main(["analyze", str(path), "--chain", "sequential"]) == 2
    err = capsys.readouterr().err
    assert "do not chain" in err and "embeddings.word_embeddings.weight" in err


def test_safetensors_bf16_and_f16(tmp_path):
    weights = torch.tensor([[0.0, 1.5], [-2.0, 0.0]])
    save_file(
        {"a.weight": weights.to(torch.bfloat16), "b.weight": weights.half()},
        tmp_path / "h.safetensors",
    )
    net = load_network(tmp_path / "h.safetensors")
    for layer in net.layers:
        assert layer.mask.tolist() == [[False, True], [True, False]]
        assert np.allclose(layer.weight, weights.numpy())


# ---- hostile and corrupt files -------------------------------------------------------------


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_torch_file_with_code_payload_is_refused_and_not_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.ones(2, 2), "hook": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_network(path)
    assert main(["analyze", str(path)]) == 2
    assert "refusing to load" in capsys.readouterr().err
    assert not marker.exists()


def test_raw_pickle_with_code_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"w": Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError):
        load_network(path)
    assert not marker.exists()


def test_pickled_module_is_refused_with_advice(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match="save its state_dict"):
        load_network(path)


def run_cli(capsys, *args):
    code = main(["analyze", *map(str, args)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


def test_missing_path_and_folder(tmp_path, capsys):
    assert run_cli(capsys, tmp_path / "nope.pt") == (
        2,
        f"topoprune: error: {tmp_path}/nope.pt: no such file\n",
    )
    code, err = run_cli(capsys, tmp_path)
    assert code == 2 and "is a folder" in err


def test_empty_and_garbage_files(tmp_path, capsys):
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "empty file" in run_cli(capsys, tmp_path / "empty.pt")[1]
    (tmp_path / "junk.bin").write_bytes(b"hello world, not a checkpoint")
    assert "unrecognised format" in run_cli(capsys, tmp_path / "junk.bin")[1]


@pytest.mark.parametrize("key", ["prune", "safetensors", "npz"])
def test_truncated_files(lenet_files, capsys, key):
    path = lenet_files[key]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, err = run_cli(capsys, path)
    assert code == 2 and ("truncated" in err or "corrupt" in err), err


def test_corrupted_torch_zip(lenet_files, capsys):
    path = lenet_files["zeros"]
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    local = info.header_offset  # the local header's own name and extra lengths locate the data
    name_len, extra_len = (
        int.from_bytes(raw[local + 26 : local + 28], "little"),
        int.from_bytes(raw[local + 28 : local + 30], "little"),
    )
    start = local + 30 + name_len + extra_len
    raw[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(raw))
    code, err = run_cli(capsys, path)
    assert code == 2 and "corrupt" in err


def test_mask_shape_mismatch_and_non_binary_mask(tmp_path, capsys):
    torch.save(
        {"fc.weight_orig": torch.ones(3, 4), "fc.weight_mask": torch.ones(4, 3)},
        tmp_path / "shape.pt",
    )
    code, err = run_cli(capsys, tmp_path / "shape.pt")
    assert code == 2 and "mask shape (4, 3) differs from weight shape (3, 4)" in err
    torch.save(
        {"fc.weight_orig": torch.ones(2, 2), "fc.weight_mask": torch.full((2, 2), 0.5)},
        tmp_path / "soft.pt",
    )
    code, err = run_cli(capsys, tmp_path / "soft.pt")
    assert code == 2 and "mask is not binary (values such as [0.5, 0.5, 0.5])" in err


def test_nonfinite_weights_are_counted_and_stop_unless_allowed(tmp_path, capsys):
    weight = torch.ones(3, 3)
    weight[0, 0], weight[1, 1], weight[2, 2] = float("nan"), float("inf"), 0.0
    torch.save({"fc.weight": weight}, tmp_path / "nan.pt")
    code, err = run_cli(capsys, tmp_path / "nan.pt")
    assert code == 2 and "fc.weight has 2 NaN/inf weights" in err
    assert main(["analyze", str(tmp_path / "nan.pt"), "--allow-nonfinite", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layers"][0]["nonfinite"] == 2 and report["layers"][0]["nnz"] == 8
    assert "NaN/inf" in report["problems"][0]


def test_empty_checkpoint_and_no_weight_layers(tmp_path, capsys):
    torch.save({}, tmp_path / "empty_dict.pt")
    code, err = run_cli(capsys, tmp_path / "empty_dict.pt")
    assert code == 2 and "no weight layers found (it holds no tensors)" in err
    torch.save({"bias": torch.ones(3), "bn.running_mean": torch.zeros(3)}, tmp_path / "b.pt")
    code, err = run_cli(capsys, tmp_path / "b.pt")
    assert code == 2 and "no weight layers found (skipped 2 tensors: bias: 1-D" in err
    np.savez(tmp_path / "empty.npz")
    assert run_cli(capsys, tmp_path / "empty.npz")[0] == 2
    save_file({}, tmp_path / "empty.safetensors")
    assert "no weight layers" in run_cli(capsys, tmp_path / "empty.safetensors")[1]


def test_all_zero_layer_stops_unless_allowed(tmp_path, capsys):
    torch.save({"fc1.weight": torch.ones(4, 3), "fc2.weight": torch.zeros(2, 4)}, tmp_path / "z.pt")
    code, err = run_cli(capsys, tmp_path / "z.pt", "--chain", "sequential")
    assert code == 2 and "fc2.weight is all zeros" in err
    args = [
        "analyze",
        str(tmp_path / "z.pt"),
        "--chain",
        "sequential",
        "--allow-empty-layers",
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    fc2 = report["node_layers"][-1]
    assert fc2["dead"] == 2 and report["layers"][1]["compression"] == float("inf")
    assert main(["analyze", str(tmp_path / "z.pt"), "--layers", "fc1"]) == 0


def test_unknown_layer_pattern(lenet_files, capsys):
    code, err = run_cli(capsys, lenet_files["zeros"], "--layers", "conv*")
    assert code == 2 and "no weight layer matches conv*" in err


def _small_files(tmp_path) -> dict:
    """One small two-layer checkpoint in every format topoprune reads."""
    from topoprune.compress.container import write_compressed

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(20, 30, generator=generator)
    state = {"fc1.weight": weight * (weight.abs() > 0.5), "fc1.bias": torch.randn(20),
             "fc2.weight": torch.randn(5, 20, generator=generator)}  # fmt: skip
    paths = {fmt: tmp_path / f"small.{fmt}" for fmt in ("pt", "legacy.pt", "npz", "safetensors",
                                                         "tprz")}  # fmt: skip
    torch.save(state, paths["pt"])
    torch.save(state, paths["legacy.pt"], _use_new_zipfile_serialization=False)
    np.savez(paths["npz"], **{k: v.numpy() for k, v in state.items()})
    save_file(state, paths["safetensors"])
    layers = [(k, v.numpy(), v.numpy() != 0) for k, v in state.items() if k.endswith("weight")]
    write_compressed(paths["tprz"], layers, bits=dict.fromkeys(("fc1.weight", "fc2.weight"), 3),
                     index_bits=dict.fromkeys(("fc1.weight", "fc2.weight"), 4))  # fmt: skip
    return paths


@pytest.mark.parametrize("fmt", ["pt", "legacy.pt", "npz", "safetensors", "tprz"])
def test_damaged_files_are_clear_errors_never_tracebacks(tmp_path, fmt):
    # bit flips inside a pickle once raised KeyError / IndexError / AssertionError from torch's
    # unpickler: every failure while reading must be a topoprune error naming the file
    from topoprune.errors import TopopruneError

    original = _small_files(tmp_path)[fmt].read_bytes()
    damaged = tmp_path / f"damaged.{fmt}"
    rng = np.random.default_rng(0)
    errors = 0
    for trial in range(120):
        blob = bytearray(original)
        if trial % 2:
            blob = blob[: int(rng.integers(0, len(blob)))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                blob[int(rng.integers(0, len(blob)))] ^= 1 << int(rng.integers(0, 8))
        damaged.write_bytes(bytes(blob))
        try:
            load_network(damaged)
        except TopopruneError as exc:
            assert str(damaged) in str(exc)
            errors += 1
    assert errors >= 60  # every truncation at least


def test_zero_size_arrays_are_skipped_with_the_reason(tmp_path, capsys):
    np.savez(tmp_path / "zero.npz", w=np.zeros((0, 5), dtype=np.float32))
    code, err = run_cli(capsys, tmp_path / "zero.npz")
    assert code == 2 and "zero-size tensor (0, 5)" in err
    np.savez(tmp_path / "mixed.npz", w=np.ones((3, 5), dtype=np.float32),
             empty=np.zeros((4, 0), dtype=np.float32))  # fmt: skip
    network = load_network(tmp_path / "mixed.npz")
    assert network.names == ["w"] and "zero-size" in network.skipped["empty"]
