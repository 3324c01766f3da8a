"""Intrinsic sparse structures (iss-lstm, Wen et al. 2018) and its model: RowLSTM computes what
torch.nn.LSTM computes, a smaller LSTM is exact when the removed units write nothing, the
proximal step is the group soft-threshold, and a short run removes units and compacts exactly."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from topoprune.errors import TopopruneError
from topoprune.models import MODELS, build_model
from topoprune.models.recurrent import RowLSTM, keep_hidden_units, unit_rows
from topoprune.prune.iss import component_norms, iss_proximal_step, unit_masks
from topoprune.prune.masks import add_masks, apply_masks, strip_masks
from topoprune.prune.methods import METHODS
from topoprune.topology import network_from_module
from topoprune.train.run import prune_model


def random_lstm(hidden: int, input_size: int = 28, classes: int = 10, seed: int = 0) -> RowLSTM:
    torch.manual_seed(seed)
    model = RowLSTM(hidden_size=hidden, num_classes=classes, input_size=input_size).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("hidden", [1, 5, 16])
def test_row_lstm_computes_torch_lstm(hidden):
    model = random_lstm(hidden).float()
    reference = nn.LSTM(28, hidden, batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(model.input_gates.weight)
        reference.weight_hh_l0.copy_(model.hidden_gates.weight)
        reference.bias_ih_l0.copy_(model.input_gates.bias)
        reference.bias_hh_l0.zero_()
        images = torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(1))
        _, (h, _) = reference(images.reshape(7, 28, 28))  # 28 steps of 28 pixels
        assert torch.allclose(model(images), model.classifier(h[0]), atol=1e-6, rtol=0)


def test_lstm_mnist_in_the_zoo():
    model = build_model("lstm_mnist")
    assert isinstance(model, RowLSTM) and model.hidden_size == 128
    assert MODELS["lstm_mnist"].input_shape == (1, 28, 28)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    net = network_from_module(model)  # the recurrence does not chain: layer by layer
    assert net.names == ["input_gates.weight", "hidden_gates.weight", "classifier.weight"]
    assert net.chain == (False, False)
    assert net.size == 512 * 28 + 512 * 128 + 10 * 128


def test_unit_rows_follow_the_gate_order():
    model = random_lstm(3, input_size=2)
    rows = unit_rows(3, torch.tensor([1]))
    i, f, g, o = model.input_gates.weight.chunk(4)  # torch.nn.LSTM's i, f, g, o blocks
    assert torch.equal(model.input_gates.weight[rows], torch.stack([i[1], f[1], g[1], o[1]]))


def test_keep_hidden_units_is_exact_exactly_when_the_removed_units_write_nothing():
    model = random_lstm(4, input_size=4, classes=3)
    silent = [1, 2]  # outgoing columns zero; incoming rows and biases left as they are
    with torch.no_grad():
        model.hidden_gates.weight[:, silent] = 0
        model.classifier.weight[:, silent] = 0
    images = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(2)).double()
    with torch.no_grad():
        expected = model(images)
        # every subset of units: the smaller LSTM matches iff it keeps every unit that writes
        for size in range(5):
            for keep in itertools.combinations(range(4), size):
                difference = (keep_hidden_units(model, keep)(images) - expected).abs().max()
                if {0, 3} <= set(keep):
                    assert difference < 1e-12, keep
                else:
                    assert difference > 1e-6, keep


def test_keep_hidden_units_of_a_masked_model_matches_its_masked_outputs():
    model = add_masks(random_lstm(6, input_size=7, classes=4))
    removed = torch.tensor([0, 4, 5])
    apply_masks(model, unit_masks(model, removed))
    small = keep_hidden_units(model, [1, 2, 3])
    images = torch.rand(3, 1, 4, 7, generator=torch.Generator().manual_seed(3)).double()
    with torch.no_grad():
        assert (small(images) - strip_masks(model)(images)).abs().max() < 1e-12
        assert (small(images) - model(images)).abs().max() < 1e-12
    # the removed units' components are masked whole, nothing else
    norms = component_norms(model)
    assert norms[removed].eq(0).all() and norms[[1, 2, 3]].gt(0).all()
    kept = model.input_gates.weight_mask.sum() + model.hidden_gates.weight_mask.sum()
    assert kept == 4 * 3 * 7 + 4 * 3 * 3
    assert sum(p.numel() for p in small.parameters()) == 4 * 3 * (7 + 1) + 4 * 3 * 3 + 4 * 3 + 4
    with pytest.raises(TopopruneError, match="repeat"):
        keep_hidden_units(model, [1, 1])


def test_the_proximal_step_is_the_group_soft_threshold():
    # two units whose components share no weight (no recurrent weight between them)
    model = RowLSTM(hidden_size=2, num_classes=1, input_size=1).double()
    with torch.no_grad():
        model.input_gates.weight.copy_(torch.tensor([[0.5], [0.1], [0.5], [-0.1],
                                                     [0.5], [0.1], [-0.5], [0.1]]))  # fmt: skip
        model.hidden_gates.weight.zero_()
        model.hidden_gates.weight[[0, 2, 4, 6], 0] = torch.tensor([0.5, -0.5, 0.5, 0.5]).double()
        model.hidden_gates.weight[[1, 3, 5, 7], 1] = 0.05
        model.classifier.weight.copy_(torch.tensor([[1.0, 0.0]]))
    members = [torch.tensor([0.5] * 8 + [1.0]), torch.tensor([0.1] * 4 + [0.05] * 4 + [0.0])]
    norms = torch.stack([m.norm() for m in members]).double()  # sqrt(3), sqrt(0.05)
    assert torch.allclose(component_norms(model), norms)
    before = [p.detach().clone() for p in (model.input_gates.weight, model.hidden_gates.weight,
                                           model.classifier.weight)]  # fmt: skip
    threshold = 0.5
    factors = iss_proximal_step(model, threshold)
    # closed form: w_g <- max(0, 1 - t / ||w_g||) w_g
    expected = torch.clamp(1 - threshold / norms, min=0)
    assert torch.allclose(factors, expected) and expected[1] == 0 and expected[0] > 0
    rows = torch.tensor([0, 1] * 4)
    assert torch.allclose(model.input_gates.weight, before[0] * expected[rows, None])
    assert torch.allclose(model.hidden_gates.weight, before[1] * expected[rows, None])
    assert torch.allclose(model.classifier.weight, before[2] * expected[None, :])
    assert component_norms(model)[1] == 0  # exactly zero, not merely small
    assert torch.allclose(component_norms(model)[0], norms[0] - threshold)
    # biases are in no component
    assert model.input_gates.bias.ne(0).any()


def test_overlapping_components_get_both_factors():
    model = random_lstm(3, input_size=2, classes=2)
    hidden = model.hidden_gates.weight.detach().clone()
    factors = iss_proximal_step(model, 0.3)
    assert factors.gt(0).all()
    # W_h[g*3 + 0, 2]: a row of unit 0 and the column of unit 2; W_h[g*3 + 1, 1]: unit 1 alone
    assert torch.allclose(model.hidden_gates.weight[3, 2], hidden[3, 2] * factors[0] * factors[2])
    assert torch.allclose(model.hidden_gates.weight[4, 1], hidden[4, 1] * factors[1])


def short_config(**changes):
    config = dict(dense_epochs=0, epochs=1, finetune_epochs=1, penalty=3.0, lr=0.05)
    return METHODS["iss-lstm"].Config(**{**config, **changes})


def mnist_batches(mnist, n: int, size: int = 50):
    images, labels = mnist.train.images, mnist.train.labels
    return [(images[i * size : (i + 1) * size], labels[i * size : (i + 1) * size])
            for i in range(n)]  # fmt: skip


def half_weak_lstm() -> RowLSTM:
    """RowLSTM(16) whose units 8-15 have their components scaled by 0.4 (norms about 0.8, the
    others about 2): eight steps shrinking each by 0.15 zero the weak ones only."""
    torch.manual_seed(0)
    model = RowLSTM(hidden_size=16)
    weak = torch.arange(8, 16)
    with torch.no_grad():
        model.input_gates.weight[unit_rows(16, weak)] *= 0.4
        model.hidden_gates.weight[unit_rows(16, weak)] *= 0.4
        model.hidden_gates.weight[:, weak] *= 0.4
        model.classifier.weight[:, weak] *= 0.4
    return model


def test_a_short_run_removes_units_and_compacts_exactly(mnist):
    model, summary = prune_model(half_weak_lstm(), "iss-lstm", short_config(),
                                 train=mnist_batches(mnist, 8), seed=0)  # fmt: skip
    report = summary["report"]
    assert report["hidden_units"] == 16 and report["hidden_units_kept"] == 8
    assert report["units_removed"] == list(range(8, 16))
    assert report["max_abs_difference"] < 1e-5
    # masks at unit level: exactly the removed units' components, after fine-tuning too
    removed = torch.arange(8, 16)
    for name, mask in unit_masks(add_masks(RowLSTM(hidden_size=16)), removed).items():
        assert torch.equal(getattr(model, name).weight_mask, mask), name
    assert report["params_compact"] == sum(p.numel() for p in RowLSTM(8).parameters())
    assert report["params"] == sum(p.numel() for p in RowLSTM(16).parameters())
    small = keep_hidden_units(model, list(range(8)))
    images = mnist.test.images[:20]
    with torch.no_grad():
        assert (small(images) - model(images)).abs().max() < 1e-5
    assert summary["compression"] > 1


def test_iss_lstm_needs_a_row_lstm_with_all_three_layers_pruned(mnist):
    batches = mnist_batches(mnist, 1)
    with pytest.raises(TopopruneError, match="classifier must be pruned"):
        prune_model(RowLSTM(hidden_size=4), "iss-lstm",
                    short_config(dense_layers=("classifier",)), train=batches)  # fmt: skip
    with pytest.raises(TopopruneError, match="RowLSTM"):
        prune_model(build_model("lenet300"), "iss-lstm", short_config(), train=batches)
