"""Trained quantisation (Han et al. 2016, eq. 3) and `topoprune compress` end to end: a centroid
moves by the learning rate times the sum of its weights' gradients; a checkpoint compresses,
decodes and analyses exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from topoprune.cli import main
from topoprune.compress.api import compress_checkpoint, decompressed_state_dict
from topoprune.compress.weight_sharing import share_weights
from topoprune.io import load_network
from topoprune.prune.methods import METHODS
from topoprune.train.run import prune_model


def _tiny(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def _batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(16, 6, generator=generator), torch.randint(0, 3, (16,), generator=generator)


@pytest.mark.parametrize("gradient", ["sum", "mean"])
def test_one_step_moves_each_centroid_by_its_summed_gradient(gradient):
    x, y = _batch()
    lr = 0.1
    # expected: k-means as the method does it, one plain SGD step on the centroids
    reference = _tiny()
    with torch.no_grad():
        expected_labels = {}
        for name in ("0", "2"):
            layer = reference.get_submodule(name)
            shared = share_weights(layer.weight.numpy().ravel(), 2)
            layer.weight.copy_(torch.from_numpy(shared.values()).reshape(layer.weight.shape))
            expected_labels[name] = shared.indices
    loss = nn.functional.cross_entropy(reference(x), y)
    loss.backward()
    expected = {}
    for name, labels in expected_labels.items():
        layer = reference.get_submodule(name)
        grad = layer.weight.grad.numpy().ravel()
        centroids = np.unique(layer.weight.detach().numpy())
        step = np.bincount(labels, weights=grad, minlength=centroids.size)
        if gradient == "mean":
            step /= np.bincount(labels, minlength=centroids.size)
        expected[name] = (centroids - lr * step)[labels]

    config = METHODS["trained-quantization"].Config(
        epochs=1, fc_bits=2, lr=lr, momentum=0.0, weight_decay=0.0, centroid_gradient=gradient
    )
    model, summary = prune_model(_tiny(), "trained-quantization", config, train=[(x, y)])
    for name, values in expected.items():
        got = model.get_submodule(name).weight_orig.detach().numpy().ravel()
        np.testing.assert_allclose(got, values, rtol=1e-5, atol=1e-7)
        assert np.unique(got).size <= 4
    assert summary["report"]["bits"] == {"0": 2, "2": 2}


def test_weights_stay_shared_under_momentum_and_masks_do_not_change(tmp_path, monkeypatch):
    x, y = _batch()
    model = _tiny()
    from topoprune.prune.masks import add_masks, apply_masks

    add_masks(model)
    masks = {"0": (torch.rand(5, 6, generator=torch.Generator().manual_seed(3)) < 0.5).float(),
             "2": torch.ones(3, 5)}  # fmt: skip
    apply_masks(model, masks)
    config = METHODS["trained-quantization"].Config(epochs=3, bits=(3, 1), lr=0.05)
    # without the snap after each step: the summed gradients alone keep clusters identical
    # under momentum and weight decay
    monkeypatch.setattr(METHODS["trained-quantization"], "_snap", lambda self, ctx: None)
    model, _ = prune_model(model, "trained-quantization", config, train=[(x, y)] * 4,
                           out=tmp_path / "run")  # fmt: skip
    for name, bits in (("0", 3), ("2", 1)):
        layer = model.get_submodule(name)
        assert torch.equal(layer.weight_mask, masks[name])
        kept = layer.weight_orig[layer.weight_mask.bool()]
        assert torch.unique(kept).numel() <= 2**bits
    # compressing the trained checkpoint stores its codebook exactly
    path = tmp_path / "run" / "checkpoint.pt"
    report = compress_checkpoint(path, tmp_path / "m.tprz", layer_bits={"0": 3, "2": 1})
    decoded = decompressed_state_dict(tmp_path / "m.tprz")
    for layer in load_network(path).layers:
        assert np.array_equal(decoded[layer.name], layer.weight * layer.mask)
    assert np.array_equal(decoded["0.bias"], model.get_submodule("0").bias.detach().numpy())
    assert report.ratios()["huffman"] > 1
    # a compressed file compresses again, to the same weights and tensors
    compress_checkpoint(tmp_path / "m.tprz", tmp_path / "m2.tprz", layer_bits={"0": 3, "2": 1})
    again = decompressed_state_dict(tmp_path / "m2.tprz")
    assert all(np.array_equal(decoded[k], again[k]) for k in decoded) and set(decoded) == set(again)


def test_compress_analyze_and_decompress_from_the_command_line(tmp_path, capsys):
    x, y = _batch()
    config = METHODS["magnitude"].Config(dense_epochs=1, retrain_epochs=1, sparsity=(0.5,))
    model, _ = prune_model(_tiny(), "magnitude", config, train=[(x, y)], out=tmp_path / "run")
    checkpoint = str(tmp_path / "run" / "checkpoint.pt")
    packed = str(tmp_path / "m.tprz")
    assert main(["compress", checkpoint, "--out", packed, "--fc-bits", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layers"][-1]["layer"] == "total" and report["ratios"]["huffman"] > 1
    # analyze reads the file directly: same degrees and chain as the checkpoint
    assert main(["degrees", packed, "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert main(["degrees", checkpoint, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["node_layers"] == from_file["node_layers"]
    # decompress: a state_dict the plain model loads, computing the quantised model's outputs
    assert main(["decompress", packed, "--out", str(tmp_path / "plain.pt")]) == 0
    plain = _tiny()
    plain.load_state_dict(torch.load(tmp_path / "plain.pt", weights_only=True))
    with torch.no_grad():
        for name in ("0", "2"):
            layer = model.get_submodule(name)
            kept = layer.weight_mask.bool()
            shared = share_weights(layer.weight_orig[kept].numpy(), 3)
            assert torch.equal(plain.get_submodule(name).weight[kept],
                               torch.from_numpy(shared.values()))  # fmt: skip
            assert (plain.get_submodule(name).weight[~kept] == 0).all()


def test_corrupt_compressed_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.tprz"
    from topoprune.compress.container import MAGIC

    bad.write_bytes(MAGIC + b"\x01\x00\x00\x00" + b"garbage" * 10)
    for command in (["analyze", str(bad)], ["decompress", str(bad), "--out", "x.pt"]):
        assert main(command) == 2
        assert "checksum" in capsys.readouterr().err
    assert main(["compress", str(bad), "--out", str(tmp_path / "y.tprz")]) == 2
    assert main(["compress", str(bad), "--out", "z", "--layer-bits", "fc1"]) == 2
