"""Unit pruning (topoprune/prune/units.py): the chain of units and its masks, the criteria against
hand computations and brute force, and the registered methods end to end."""

from __future__ import annotations

import copy
import json
from itertools import pairwise

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topoprune.errors import TopopruneError
from topoprune.prune.masks import add_masks, apply_masks
from topoprune.prune.methods import METHODS
from topoprune.prune.units import (
    UnitConfig,
    UnitLayer,
    activation_statistics,
    average_ranks,
    gate_relevance,
    gated_error,
    inf_fs,
    l1_error,
    measured_relevance,
    nisp_propagate,
    removal_count,
    spearman,
    unit_chain,
    unit_masks,
    unit_weights,
)
from topoprune.train.run import prune_model

CE = nn.functional.cross_entropy


def mlp(*widths: int, dtype=torch.float32) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(widths)):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return add_masks(nn.Sequential(*layers).to(dtype))


def small_cnn(dtype=torch.float32) -> nn.Sequential:
    """conv(1->3, 3) on 8x8 -> relu -> conv(3->2, 3) -> relu -> flatten (2 x 4 x 4) -> 5 -> 3."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.ReLU(),
        nn.Conv2d(3, 2, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )
    return add_masks(model.to(dtype))


def set_weights(model: nn.Module, name: str, weight, bias=None) -> None:
    module = dict(model.named_modules())[name]
    with torch.no_grad():
        module.weight_orig.copy_(torch.as_tensor(weight, dtype=module.weight_orig.dtype))
        if bias is not None:
            module.bias.copy_(torch.as_tensor(bias, dtype=module.bias.dtype))


# ---- the chain and its masks ------------------------------------------------------------------


def test_chain_linear_to_linear_masks_exactly_the_rows_and_columns():
    model = mlp(4, 5, 3, 2)
    chain = unit_chain(model)
    assert chain == [UnitLayer("0", "2", 5, 1), UnitLayer("2", "4", 3, 1)]
    masks = unit_masks(model, chain, {"0": [1, 3], "2": torch.tensor([0])})
    expected0 = torch.ones(5, 4, dtype=torch.bool)
    expected0[[1, 3]] = False
    expected2 = torch.ones(3, 5, dtype=torch.bool)
    expected2[0] = False
    expected2[:, [1, 3]] = False
    expected4 = torch.ones(2, 3, dtype=torch.bool)
    expected4[:, 0] = False
    assert torch.equal(masks["0"], expected0)
    assert torch.equal(masks["2"], expected2)
    assert torch.equal(masks["4"], expected4)


def test_chain_conv_to_conv_masks_the_filter_and_the_input_channel():
    model = add_masks(nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3)))
    chain = unit_chain(model)
    assert chain == [UnitLayer("0", "2", 4, 1)]
    masks = unit_masks(model, chain, {"0": [2]})
    assert not masks["0"][2].any() and masks["0"][[0, 1, 3]].all()
    assert not masks["2"][:, 2].any() and masks["2"][:, [0, 1, 3]].all()


def test_chain_conv_flatten_linear_maps_a_channel_to_its_block_of_columns():
    model = small_cnn()
    chain = unit_chain(model)
    assert chain == [
        UnitLayer("0", "2", 3, 1),
        UnitLayer("2", "5", 2, 16),
        UnitLayer("5", "7", 5, 1),
    ]
    masks = unit_masks(model, chain, {"2": [1]})
    assert set(masks) == {"2", "5"}
    assert not masks["2"][1].any() and masks["2"][0].all()
    assert not masks["5"][:, 16:32].any() and masks["5"][:, :16].all()
    # the masked model computes what the model does with channel 1 zeroed before the Linear
    x = torch.randn(4, 1, 8, 8)
    zeroed = small_cnn()  # the same weights
    zeroed[4].register_forward_hook(lambda _m, _a, out: out * (torch.arange(32) < 16))
    apply_masks(model, masks)
    torch.testing.assert_close(model(x), zeroed(x))


def test_masks_keep_earlier_pruning():
    model = mlp(3, 4, 2)
    mask = torch.ones(4, 3)
    mask[0, 0] = 0
    apply_masks(model, {"0": mask})
    masks = unit_masks(model, unit_chain(model), {"0": [3]})
    assert not masks["0"][0, 0] and not masks["0"][3].any() and int(masks["0"].sum()) == 8


@pytest.mark.parametrize(
    ("model", "names", "message"),
    [
        (
            nn.Sequential(nn.Linear(4, 9), nn.Unflatten(1, (1, 3, 3)), nn.Conv2d(1, 2, 3)),
            None,
            "feeding",
        ),
        (nn.Sequential(nn.Linear(4, 5), nn.Linear(6, 2)), None, "do not feed"),
        (nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(10, 2)), None, "equal size"),
        (nn.Sequential(nn.Conv2d(1, 4, 1), nn.Conv2d(4, 4, 1, groups=2)), None, "grouped"),
        (nn.Sequential(nn.Linear(4, 5)), None, "two or more"),
        (nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 5), nn.Linear(5, 2)), ["0", "2"], "between"),
        (nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), ["1", "0"], "out of order"),
    ],
)
def test_units_that_cannot_be_chained_are_a_clear_error(model, names, message):
    add_masks(model, names=names)
    with pytest.raises(TopopruneError, match=message):
        unit_chain(model, names)


def test_unit_masks_rejects_the_classes_and_bad_indices():
    model = mlp(3, 4, 2)
    chain = unit_chain(model)
    with pytest.raises(TopopruneError, match="has no units"):
        unit_masks(model, chain, {"2": [0]})
    with pytest.raises(TopopruneError, match=r"\[0, 4\)"):
        unit_masks(model, chain, {"0": [4]})


# ---- activation statistics ----------------------------------------------------------------------


def test_apoz_and_mean_activation_on_hand_set_weights():
    model = mlp(2, 3, 1)
    set_weights(model, "0", [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], [0.0, 0.0, 0.0])
    x = torch.tensor([[1.0, 2.0], [-1.0, 3.0], [2.0, -2.0], [0.0, 0.0]])
    # after the ReLU: [1, 2, 0], [0, 3, 0], [2, 0, 0], [0, 0, 0]
    batches = [(x[:3], None), (x[3:], None)]
    stats = activation_statistics(model, unit_chain(model), batches)["0"]
    torch.testing.assert_close(stats.mean_abs, torch.tensor([0.75, 1.25, 0.0]))
    torch.testing.assert_close(stats.apoz, torch.tensor([0.5, 0.5, 1.0]))


def test_apoz_of_feature_maps_counts_positions():
    model = add_masks(nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Conv2d(2, 1, 1)))
    set_weights(model, "0", [[[[1.0]]], [[[-1.0]]]], [0.0, 0.0])
    x = torch.tensor([[[[1.0, -1.0], [0.0, 2.0]]]])
    # channel 0: [[1, 0], [0, 2]]; channel 1: [[0, 1], [0, 0]]
    stats = activation_statistics(model, unit_chain(model), [(x, None)])["0"]
    torch.testing.assert_close(stats.mean_abs, torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(stats.apoz, torch.tensor([0.5, 0.75]))


# ---- skeletonization --------------------------------------------------------------------------


def model_of(kind: str) -> nn.Sequential:
    """A float64 MLP 6-5-4-3 or :func:`small_cnn`, the same weights every call."""
    return mlp(6, 5, 4, 3, dtype=torch.float64) if kind == "mlp" else small_cnn(torch.float64)


def scoring_batches(shape: tuple[int, ...], classes: int, dtype=torch.float64):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(30, *shape, generator=generator, dtype=dtype)
    y = torch.randint(0, classes, (30,), generator=generator)
    return [(x[:16], y[:16]), (x[16:], y[16:])]


def loss_of(model: nn.Module, batches, error=CE) -> float:
    with torch.no_grad():
        total = sum(float(error(model(x), y)) * len(y) for x, y in batches)
    return total / sum(len(y) for _, y in batches)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("error", [CE, l1_error])
def test_measured_relevance_is_the_brute_force_loss_increase(kind, error):
    model = model_of(kind)
    batches = scoring_batches((6,) if kind == "mlp" else (1, 8, 8), 3)
    chain = unit_chain(model)
    relevance = measured_relevance(model, chain, batches, error)
    base = loss_of(model, batches, error)
    for layer in chain:
        brute = []
        for k in range(layer.units):
            removed = model_of(kind)  # the same weights
            apply_masks(removed, unit_masks(removed, unit_chain(removed), {layer.name: [k]}))
            brute.append(loss_of(removed, batches, error) - base)
        torch.testing.assert_close(
            relevance[layer.name].double(), torch.tensor(brute, dtype=torch.float64)
        )


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("error", [CE, l1_error])
def test_gate_estimate_is_the_first_order_taylor_term(kind, error):
    model = model_of(kind)
    batches = scoring_batches((6,) if kind == "mlp" else (1, 8, 8), 3)
    chain = unit_chain(model)
    estimate = gate_relevance(model, chain, batches, error)
    h = 1e-6
    for layer in chain:
        difference = []
        for k in range(layer.units):
            up = torch.ones(layer.units, dtype=torch.float64)
            down = up.clone()
            up[k], down[k] = 1 + h, 1 - h
            with torch.no_grad():
                plus = float(gated_error(model, chain, batches, error, {layer.name: up}))
                minus = float(gated_error(model, chain, batches, error, {layer.name: down}))
            difference.append(-(plus - minus) / (2 * h))
        torch.testing.assert_close(
            estimate[layer.name],
            torch.tensor(difference, dtype=torch.float64),
            rtol=1e-6,
            atol=1e-9,
        )
    for module in model.modules():  # parameter gradients untouched
        assert all(p.grad is None for p in module.parameters(recurse=False))


# ---- NISP and Inf-FS --------------------------------------------------------------------------


def test_nisp_propagation_is_the_product_of_absolute_weights():
    model = mlp(2, 3, 4, 2, 2)
    w2 = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [2.0, 1.0, 1.0], [-1.0, 0.0, 4.0]])
    w3 = np.array([[1.0, -1.0, 2.0, 0.0], [-3.0, 0.5, 1.0, 2.0]])
    w4 = np.array([[2.0, -1.0], [1.0, 3.0]])
    for name, w in (("2", w2), ("4", w3), ("6", w4)):
        set_weights(model, name, w)
    final = torch.tensor([0.5, 2.0], dtype=torch.float64)
    scores = nisp_propagate(model, unit_chain(model), final)
    expected3 = np.abs(w3).T @ final.numpy()
    expected1 = np.abs(w2).T @ expected3
    np.testing.assert_allclose(scores["4"].numpy(), final.numpy())
    np.testing.assert_allclose(scores["2"].numpy(), expected3)
    np.testing.assert_allclose(scores["0"].numpy(), expected1)
    # masked weights do not count
    mask = torch.ones(4, 3)
    mask[3, 2] = 0
    apply_masks(model, {"2": mask})
    w2[3, 2] = 0
    again = nisp_propagate(model, unit_chain(model), final)
    np.testing.assert_allclose(again["0"].numpy(), np.abs(w2).T @ expected3)


def test_unit_weights_of_convolutions_sum_the_kernel_and_the_channel_columns():
    model = small_cnn()
    chain = unit_chain(model)
    w2 = model[2].weight_orig.detach()
    torch.testing.assert_close(unit_weights(model, chain[0]), w2.abs().sum(dim=(2, 3)))
    w5 = model[5].weight_orig.detach()
    expected = torch.stack([w5[:, :16].abs().sum(1), w5[:, 16:].abs().sum(1)], dim=1)
    torch.testing.assert_close(unit_weights(model, chain[1]), expected)


def features_with_ties() -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(12, 5, generator=generator).clamp_min(0)  # ReLU-like: zeros tie
    x[:, 3] = 2 * x[:, 0] + 0.1  # a rescaled copy: Spearman 1
    x[:, 4] = torch.tensor([1.0, 2.0] * 6)  # ties
    return x


def test_spearman_and_average_ranks_match_scipy():
    x = features_with_ties()
    expected = spearmanr(x.numpy()).statistic
    np.testing.assert_allclose(spearman(x).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(
        average_ranks(x)[:, 4].numpy(), [3.5, 9.5] * 6
    )  # six ones share ranks 1..6


def test_inf_fs_against_a_direct_computation():
    x = features_with_ties()
    data = x.double().numpy()
    alpha = 0.3
    sigma = data.std(axis=0, ddof=1)
    sigma = sigma / sigma.max()
    a = alpha * np.maximum.outer(sigma, sigma) + (1 - alpha) * (
        1 - np.abs(spearmanr(data).statistic)
    )
    r = 0.9 / np.max(np.abs(np.linalg.eigvals(a)))
    s = np.linalg.inv(np.eye(5) - r * a) - np.eye(5)
    np.testing.assert_allclose(inf_fs(x, alpha).numpy(), s.sum(axis=1), rtol=1e-10)
    # the power series it sums
    series = sum(np.linalg.matrix_power(r * a, k) for k in range(1, 400))
    np.testing.assert_allclose(inf_fs(x, alpha).numpy(), series.sum(axis=1), rtol=1e-8)


def test_inf_fs_of_a_constant_feature_is_finite():
    x = torch.tensor([[1.0, 0.0], [1.0, 2.0], [1.0, 5.0]])
    scores = inf_fs(x)
    assert torch.isfinite(scores).all() and scores[1] > scores[0]


# ---- the methods ------------------------------------------------------------------------------


VARIANTS = [
    ("activation", {"criterion": "apoz"}),
    ("activation", {"criterion": "mean"}),
    ("skeletonization", {"relevance": "gate"}),
    ("skeletonization", {"relevance": "measured", "error": "l1"}),
    ("nisp", {"final_scores": "inf-fs"}),
    ("nisp", {"final_scores": "ones"}),
    ("units-random", {}),
]


def random_loader(shape: tuple[int, ...], classes: int = 3) -> DataLoader:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(96, *shape, generator=generator)
    y = torch.randint(0, classes, (96,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)


def assert_units_removed(model: nn.Module, removed: dict[str, list[int]]) -> None:
    chain = {layer.name: layer for layer in unit_chain(model)}
    modules = dict(model.named_modules())
    for name, index in removed.items():
        layer = chain[name]
        producer, consumer = modules[name], modules[layer.consumer]
        columns = layer.columns(torch.tensor(index, dtype=torch.long))
        assert torch.all(producer.weight_orig[index] == 0)
        assert torch.all(producer.weight_mask[index] == 0)
        assert torch.all(consumer.weight_orig[:, columns] == 0)
        assert torch.all(consumer.weight_mask[:, columns] == 0)
        kept = [k for k in range(layer.units) if k not in index]
        assert producer.weight_mask[kept].flatten(1).any(dim=1).all()  # kept units keep inputs


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_methods_remove_the_requested_fraction_of_units(name, options):
    model = nn.Sequential(
        nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)
    )
    config = METHODS[name].Config(
        dense_epochs=1, retrain_epochs=1, units=(0.5, 0.25), scoring_examples=64, **options
    )
    model, summary = prune_model(model, name, config, train=random_loader((10,)), seed=3)
    report = summary["report"]
    removed = report["removed_units"]
    assert {k: len(v) for k, v in removed.items()} == {"0": 6, "2": 2}
    assert_units_removed(model, removed)
    assert report["importance"]["0"]["removed"] == 6
    json.dumps(summary)  # the report is plain JSON


@pytest.mark.parametrize(("name", "options"), [VARIANTS[0], VARIANTS[3], VARIANTS[4]])
def test_methods_remove_feature_maps_of_a_cnn(name, options):
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.ReLU(),
        nn.Conv2d(3, 2, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )
    config = METHODS[name].Config(dense_epochs=0, retrain_epochs=0, units=(0.34,), **options)
    model, summary = prune_model(model, name, config, train=random_loader((1, 8, 8)), seed=0)
    removed = summary["report"]["removed_units"]
    assert {k: len(v) for k, v in removed.items()} == {"0": 1, "2": 1, "5": 2}
    assert_units_removed(model, removed)


def test_activation_removes_the_units_that_are_always_zero():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([5.0, -100.0, 5.0, -100.0]))  # units 1 and 3 dead
    for criterion in ("apoz", "mean"):
        config = METHODS["activation"].Config(
            dense_epochs=0, retrain_epochs=0, units=(0.5,), criterion=criterion
        )
        _, summary = prune_model(
            copy.deepcopy(model), "activation", config, train=random_loader((4,), 2)
        )
        assert summary["report"]["removed_units"] == {"0": [1, 3]}


def test_measured_skeletonization_removes_the_units_whose_loss_increase_is_smallest():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    loader = random_loader((6,))
    config = METHODS["skeletonization"].Config(
        dense_epochs=0, retrain_epochs=0, units=(0.4,), relevance="measured", scoring_examples=96
    )
    before = add_masks(copy.deepcopy(model))
    batches = [(x, y) for x, y in DataLoader(loader.dataset, batch_size=96)]
    relevance = measured_relevance(before, unit_chain(before), batches, CE)["0"]
    _, summary = prune_model(model, "skeletonization", config, train=loader)
    assert summary["report"]["removed_units"]["0"] == sorted(relevance.argsort()[:2].tolist())


def test_unit_fractions_are_per_hidden_layer():
    assert removal_count(0.5, 7) == 4 and removal_count(0.0, 7) == 0
    with pytest.raises(TopopruneError, match="units: give 1 value or 2"):
        METHODS["nisp"](METHODS["nisp"].Config(units=(0.5, 0.5, 0.5)), ["0", "2", "4"], seed=0)
    with pytest.raises(TopopruneError, match="two or more"):
        METHODS["units-random"](UnitConfig(), ["0"], seed=0)


def test_an_unchainable_selection_fails_before_dense_training():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 2))
    config = METHODS["activation"].Config(dense_epochs=1, retrain_epochs=0, dense_layers=("2",))
    with pytest.raises(TopopruneError, match="between them are not pruned"):
        prune_model(model, "activation", config, train=random_loader((4,), 2))
