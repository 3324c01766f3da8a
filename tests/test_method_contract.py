"""The contract every registered pruning method keeps, present and future (a new method gets these
checks by registering): binary masks, its target sparsity, pruned weights and their optimizer state
at zero, the same masks from the same seed, exact resume, and its config through the CLI flags.

Each method runs on a tiny model of its architecture (a CNN that is not in the zoo, with BatchNorm
for network slimming; a small row-by-row LSTM or residual CNN for the methods made for those), fed
by a shuffling ``DataLoader`` over 600 real MNIST images, with every ``*epochs`` field set to 1
(and the method's ``contract_overrides``, for a regulariser that must act within six steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import topoprune.train.run as run_module
from topoprune.cli import add_config_flags, config_from_args, config_to_argv
from topoprune.io import load_network
from topoprune.prune.masks import add_masks, apply_masks
from topoprune.prune.methods import METHODS
from topoprune.train.run import prune_model

COMMON_FLAGS = (
    "--model",
    "--dataset",
    "--method",
    "--out",
    "--seed",
    "--batch-size",
    "--device",
    "--resume",
    "--data-dir",
    "--init",
    "--regrow",
    "--quiet",
    "--snapshot-every",
    "--snapshot-epochs",
    "--help",
)


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, stride=2),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 24),
        nn.ReLU(),
        nn.Linear(24, 10),
    )


@pytest.fixture(scope="module")
def loaders(mnist):
    train = TensorDataset(mnist.train.images[:600], mnist.train.labels[:600])
    test = TensorDataset(mnist.test.images[:300], mnist.test.labels[:300])
    return DataLoader(train, batch_size=100, shuffle=True), DataLoader(test, batch_size=300)


@functools.cache
def tiny_masks_file() -> str:
    """A checkpoint of the tiny CNN with random masks keeping half of every layer, for the
    methods that train given masks (a ``masks`` field)."""
    out = Path(tempfile.mkdtemp()) / "half"
    config = METHODS["random"].Config(kept=(0.5,), epochs=0)
    prune_model(tiny_cnn(), "random", config, train=[], out=out, seed=7)
    return str(out / "checkpoint.pt")


def tiny_config(name: str):
    config = METHODS[name].Config()
    short = {f.name: 1 for f in dataclasses.fields(config) if f.name.endswith("epochs")}
    if any(f.name == "masks" for f in dataclasses.fields(config)):
        short["masks"] = tiny_masks_file()
    return dataclasses.replace(config, **short, **METHODS[name].contract_overrides)


def tiny_bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, stride=2),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 24),
        nn.ReLU(),
        nn.Linear(24, 10),
    )


def tiny_model(architecture: str) -> nn.Module:
    """A tiny model of the kind a method acts on (``Method.architecture``)."""
    if architecture == "batchnorm":
        return tiny_bn_cnn()
    if architecture == "lstm":
        from topoprune.models.recurrent import RowLSTM

        torch.manual_seed(0)
        return RowLSTM(hidden_size=8)
    if architecture == "residual":
        from topoprune.models.residual import ResidualCNN

        torch.manual_seed(0)
        return ResidualCNN(channels=4, blocks=2)
    assert architecture == "any", architecture
    return tiny_cnn()


def starting_model(name: str) -> nn.Module:
    """A tiny model of the method's architecture; half-pruned (the masks of
    ``tiny_masks_file``) for methods that keep the masks they are given."""
    model = tiny_model(METHODS[name].architecture)
    if METHODS[name].keeps_masks:
        network = load_network(tiny_masks_file(), keep_weights=False)
        add_masks(model)
        masks = {layer.name.removesuffix(".weight"): torch.as_tensor(layer.mask).float()
                 for layer in network.layers}  # fmt: skip
        apply_masks(model, masks)
    return model


def run(name, loaders, out=None, resume=False):
    return prune_model(
        starting_model(name),
        name,
        tiny_config(name),
        train=loaders[0],
        evaluation=loaders[1],
        out=out,
        seed=1,
        resume=resume,
    )


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight_mask.clone() for n, m in model.named_modules() if hasattr(m, "weight_mask")}


@pytest.fixture(scope="module", params=METHODS.names())
def finished(request, loaders, tmp_path_factory):
    """One full run of each method, written to a folder."""
    folder = tmp_path_factory.mktemp(request.param)
    model, summary = run(request.param, loaders, out=folder / "full")
    return request.param, model, summary, folder


def test_masks_are_binary_and_reach_the_target(finished):
    name, model, summary, _ = finished
    masks = masks_of(model)
    assert masks, f"{name} pruned no layer"
    for mask in masks.values():
        assert torch.all((mask == 0) | (mask == 1))
    method = METHODS[name](tiny_config(name), list(masks), seed=1)
    target = method.target_kept()
    if METHODS[name].keeps_masks:
        given = masks_of(starting_model(name))
        assert all(torch.equal(given[n], masks[n]) for n in given), f"{name} changed its masks"
        return
    if target is None:
        assert summary["compression"] > 1, f"{name} has no fixed target but pruned nothing"
        return
    for layer, kept in target.items():
        size = masks[layer].numel()
        assert float(masks[layer].mean()) == pytest.approx(kept, abs=1 / size + 1e-9), layer


def test_pruned_weights_and_their_optimizer_state_stay_zero(finished):
    name, model, _, folder = finished
    final = METHODS[name](tiny_config(name), list(masks_of(model)), seed=1).stages()[-1]
    if final.straight_through:
        pytest.skip(f"{name} ends in straight-through mode: pruned weights keep learning")
    checkpoint = torch.load(folder / "full" / "checkpoint.pt", weights_only=True)
    optimizer_state = checkpoint["extra"]["optimizer_state"]["state"]
    params = list(model.parameters())
    checked = 0
    for module in model.modules():
        if not hasattr(module, "weight_mask"):
            continue
        pruned = module.weight_mask == 0
        assert torch.all(module.weight_orig[pruned] == 0)
        index = next(i for i, p in enumerate(params) if p is module.weight_orig)
        for value in optimizer_state.get(index, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == pruned.shape:
                assert torch.all(value[pruned] == 0)
                checked += 1
    assert checked, "no per-weight optimizer state was checked"


def test_the_same_seed_gives_the_same_masks(finished, loaders):
    name, model, _, _ = finished
    again, _ = run(name, loaders)
    for layer, mask in masks_of(model).items():
        assert torch.equal(mask, masks_of(again)[layer]), layer


def test_an_interrupted_run_resumes_bit_identical(finished, loaders, monkeypatch):
    name, _, _, folder = finished
    real_save, calls = run_module.save_network, {"n": 0}

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "save_network", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(name, loaders, out=folder / "cut")
    monkeypatch.setattr(run_module, "save_network", real_save)
    run(name, loaders, out=folder / "cut", resume=True)
    full = torch.load(folder / "full" / "checkpoint.pt", weights_only=True)["extra"]
    cut = torch.load(folder / "cut" / "checkpoint.pt", weights_only=True)["extra"]
    assert set(full["model_state"]) == set(cut["model_state"])
    for key, value in full["model_state"].items():
        assert torch.equal(value, cut["model_state"][key]), key
    assert full["progress"] == cut["progress"]


@pytest.mark.parametrize("name", METHODS.names())
def test_config_round_trips_through_the_cli_flags(name):
    method = METHODS[name]
    parser = argparse.ArgumentParser()
    for flag in COMMON_FLAGS[:-1]:
        parser.add_argument(flag)
    add_config_flags(parser, method.Config, name)  # no field collides with a common flag
    for config in (method.Config(), tiny_config(name)):
        assert config_from_args(method.Config, parser.parse_args(config_to_argv(config))) == config


@pytest.mark.parametrize("name", METHODS.names())
def test_method_describes_itself(name):
    method = METHODS[name]
    assert (method.__doc__ or "").strip(), f"{name} needs a one-line docstring"
    assert method.paper, f"{name} needs its paper (or '-')"
    for spec in dataclasses.fields(method.Config):
        assert spec.metadata.get("help"), f"{name}.{spec.name} needs help text"
