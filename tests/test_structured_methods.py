"""Structured methods: filter-l1 (Li et al. 2017), whose filters of least sum |K| go with
their biases held at zero, and network slimming (Liu et al. 2017); compacted models compute the
masked models' outputs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from topoprune.models import build_model
from topoprune.prune.methods import METHODS
from topoprune.train.run import prune_model


def batches(n: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(16, 1, 28, 28, generator=generator),
             torch.randint(0, 10, (16,), generator=generator)) for _ in range(n)]  # fmt: skip


def test_filters_by_l1_norm_and_an_exact_compaction():
    torch.manual_seed(0)
    model = build_model("lenet5")
    norms = model[0].weight.detach().abs().flatten(1).sum(1)
    config = METHODS["filter-l1"].Config(dense_epochs=0, retrain_epochs=1, sparsity=(0.5, 0.5, 0.5),
                                         dense_layers=("7",), lr=0.01)  # fmt: skip
    model, summary = prune_model(model, "filter-l1", config, train=batches())
    conv1 = model[0]
    dead = conv1.weight_mask.flatten(1).eq(0).all(1)
    # one-shot from the initial weights: the 10 filters of least L1 norm are the ones removed
    assert set(torch.argsort(norms)[:10].tolist()) == set(dead.nonzero().squeeze(1).tolist())
    assert (conv1.bias[dead] == 0).all()
    report = summary["report"]
    assert report["filters_kept"] == {"0": 10, "2": 25, "5": 250}
    assert report["params_compact"] < 0.35 * report["params"]
    assert report["max_abs_difference"] < 1e-5


def test_slimming_prunes_by_a_global_gamma_threshold_and_compacts_exactly():
    torch.manual_seed(0)
    model = build_model("lenet5_bn")
    config = METHODS["slimming"].Config(epochs=1, finetune_epochs=1, percent=0.4, penalty=1e-3,
                                        dense_layers=("11",), lr=0.01)  # fmt: skip
    model, summary = prune_model(model, "slimming", config, train=batches())
    report = summary["report"]
    # 40% of the 70 BatchNorm channels, by one threshold over both layers
    assert sum(report["channels_pruned"].values()) == 28
    for norm, conv in ((model[1], model[0]), (model[5], model[4])):
        dead = norm.weight == 0
        assert (norm.bias[dead] == 0).all() and (conv.bias[dead] == 0).all()
        assert conv.weight_mask[dead].eq(0).all()
        kept = norm.weight[~dead].abs()
        assert kept.min() > report["threshold"] or dead.sum() == 0
    assert report["max_abs_difference"] < 1e-5
    assert report["params_compact"] < report["params"]


@pytest.mark.parametrize("name", ["lenet5", "lenet5_bn"])  # BatchNorm terms must go too
def test_taylor_feature_maps_stop_at_the_parameter_budget(name):
    torch.manual_seed(0)
    config = METHODS["taylor-fm"].Config(dense_epochs=0, epochs=2, prune_every=1,
                                         maps_per_removal=2, budget=0.8, scoring_examples=16,
                                         lr=0.01)  # fmt: skip
    _, summary = prune_model(build_model(name), "taylor-fm", config, train=batches(6))
    report = summary["report"]
    assert report["budget_reached"] and report["maps_removed"] % 2 == 0
    assert report["params_compact"] <= 0.8 * report["params"]
    # the step before the last removal was still above the budget: no more maps than needed
    assert report["params_compact"] > 0.6 * report["params"]
    assert report["max_abs_difference"] < 1e-5
    assert (
        sum(report["filters"].values()) - sum(report["filters_kept"].values())
        == (report["maps_removed"])
    )  # only conv maps go (the linear layers are no feature maps)


def channel_model() -> nn.Sequential:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 24 * 24, 10))  # fmt: skip
    with torch.no_grad():
        model[2].weight[:, [1, 4]] = 0  # two input channels the next layer ignores
    return model


@pytest.mark.parametrize("selection", ["lasso", "weight-norm"])
def test_channel_lasso_drops_the_channels_the_next_layer_ignores(selection):
    model = channel_model()
    x = batches(1)[0][0]
    with torch.no_grad():
        before = model(x)
    config = METHODS["channel-lasso"].Config(sparsity=(1 / 3,), finetune_epochs=0, positions=20,
                                             scoring_examples=32,
                                             selection=selection)  # fmt: skip
    model, summary = prune_model(model, "channel-lasso", config, train=batches())
    report = summary["report"]
    assert report["channels_kept"] == {"2": 4}
    assert model[2].weight_mask[:, [1, 4]].eq(0).all()
    assert model[2].weight_mask[:, [0, 2, 3, 5]].all()
    # the first conv's filters 1 and 4 go with them, biases too
    assert model[0].weight_mask[[1, 4]].eq(0).all() and (model[0].bias[[1, 4]] == 0).all()
    with torch.no_grad():  # the refit reproduces the original layer
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)
    assert report["max_abs_difference"] < 1e-5 and report["params_compact"] < report["params"]


def test_channel_lasso_refits_the_kept_weights_by_least_squares():
    # channel 1 matters but is removed (keep 1 of 2): the refit must beat keeping W as it is
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 3, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(3 * 24 * 24, 10))  # fmt: skip
    x = batches(1)[0][0]
    with torch.no_grad():
        target = model[:3](x)
    errors = {}
    for reconstruct in (True, False):
        config = METHODS["channel-lasso"].Config(
            sparsity=(0.5,), finetune_epochs=0, reconstruct=reconstruct, layers=("2",)
        )
        pruned, _ = prune_model(copy.deepcopy(model), "channel-lasso", config,
                                train=batches())  # fmt: skip
        with torch.no_grad():
            errors[reconstruct] = float(((pruned[:3](x) - target) ** 2).mean())
    assert errors[True] < errors[False]


def test_ssl_zeroes_whole_groups_and_removes_them():
    torch.manual_seed(5)
    model = build_model("lenet5")
    with torch.no_grad():
        model[0].weight[:5] *= 0.01  # five weak filters (norm ~0.006 against ~0.6)
    config = METHODS["ssl"].Config(epochs=1, finetune_epochs=1, penalty=0.02, lr=0.05,
                                   groups=("filters", "channels"),
                                   dense_layers=("7",))  # fmt: skip
    model, summary = prune_model(model, "ssl", config, train=batches())
    conv1, conv2 = model[0], model[2]
    dead1 = conv1.weight_mask.flatten(1).eq(0).all(1)
    assert dead1.any() and not dead1.all()  # the proximal step zeroed some filters exactly
    # an input channel conv2 no longer reads takes conv1's filter with it
    unused = conv2.weight_mask.transpose(0, 1).flatten(1).eq(0).all(1)
    assert (dead1 | ~unused).all() and (conv1.bias[dead1] == 0).all()
    report = summary["report"]
    assert report["params_compact"] < report["params"]
    assert report["max_abs_difference"] < 1e-5


def test_ssl_proximal_step_is_group_soft_thresholding():
    # w_g <- max(0, 1 - t / ||w_g||) w_g with t = lr * lambda * sqrt(group size)
    from types import SimpleNamespace

    from topoprune.prune.masks import add_masks

    layer = add_masks(nn.Sequential(nn.Linear(2, 2, bias=False)))[0]
    with torch.no_grad():
        layer.weight_orig.copy_(torch.tensor([[3.0, 4.0], [0.03, 0.04]]))  # norms 5 and 0.05
    config = METHODS["ssl"].Config(groups=("filters",), penalty=1.0)
    method = METHODS["ssl"](config, ["0"], seed=0)
    method._proximal(SimpleNamespace(lr=0.1, pruned_modules=lambda: [("0", layer)]))
    t = 0.1 * 2**0.5
    expected = torch.tensor([[3.0, 4.0], [0.0, 0.0]]) * (1 - t / 5)  # 0.05 < t: exactly zero
    assert torch.allclose(layer.weight_orig, expected)
    assert layer.weight_orig[1].eq(0).all()


def test_compact_command_writes_a_smaller_model_torch_loads(tmp_path, capsys):
    from topoprune.cli import main

    config = METHODS["filter-l1"].Config(dense_epochs=0, retrain_epochs=1, sparsity=(0.5, 0.5, 0.5),
                                         dense_layers=("7",), lr=0.01)  # fmt: skip
    model = build_model("lenet5")
    prune_model(model, "filter-l1", config, train=batches(), out=tmp_path / "run",
                metadata={"model": "lenet5"})  # fmt: skip
    out = tmp_path / "small.pt2"
    assert main(["compact", str(tmp_path / "run" / "checkpoint.pt"), "--out", str(out)]) == 0
    assert "parameters" in capsys.readouterr().out
    small = torch.export.load(out).module()
    x = torch.rand(3, 1, 28, 28)
    assert small(x).shape == (3, 10)
    assert sum(p.numel() for p in small.parameters()) < 0.35 * 431080


def test_channel_selection_falls_back_to_the_largest_coefficients():
    from topoprune.prune.structured import select_channels_lasso

    rng = np.random.default_rng(0)
    target = rng.normal(size=(50, 3))
    blocks = [np.zeros((50, 3))] * 3 + [target * w for w in (1.0, 0.5, 0.2)]
    assert select_channels_lasso(blocks, target, 4)[1:] == [3, 4, 5]


def test_layer_fold_merges_layers_around_identity_activations_exactly():
    torch.manual_seed(0)
    config = METHODS["layer-fold"].Config(epochs=1, penalty=20.0, tolerance=0.2, momentum=0.0,
                                          finetune_epochs=1, lr=0.01)  # fmt: skip
    model, summary = prune_model(build_model("lenet300_prelu"), "layer-fold", config,
                                 train=batches())  # fmt: skip
    report = summary["report"]
    assert report["folded"] == ["2", "4"] and report["activations_folded"] == 2
    assert (report["weight_layers"], report["weight_layers_folded"]) == (3, 1)  # 784 -> 10
    assert report["params_folded"] == 784 * 10 + 10
    assert report["max_abs_difference"] < 1e-4
    assert (model[2].weight == 1).all()


def test_conv_folding_is_exact():
    from topoprune.prune.folding import fold

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Identity(), nn.Conv2d(4, 3, 3), nn.PReLU(),
                          nn.Conv2d(3, 2, 1, padding=1)).double()  # fmt: skip
    merged, count = fold(model)
    assert count == 1 and merged[0].kernel_size == (5, 5)  # the padded conv does not fold
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(merged(x), model(x), rtol=1e-10, atol=1e-10)


def test_ssl_removes_a_filter_whose_flattened_outputs_no_unit_reads():
    torch.manual_seed(0)
    model = build_model("lenet5")
    with torch.no_grad():
        model[5].weight[:, 3 * 16 : 4 * 16] = 0  # conv2's channel 3, flattened into fc1
    config = METHODS["ssl"].Config(epochs=0, finetune_epochs=0, penalty=0.0)
    _, summary = prune_model(model, "ssl", config, train=batches())
    report = summary["report"]
    assert report["input_channels_unused"]["5"] == 1
    assert report["filters_kept"]["2"] == 49
    assert report["max_abs_difference"] < 1e-5
