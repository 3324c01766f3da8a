"""Pruning at initialisation: SNIP's, GraSP's and SynFlow's scores against closed forms and
explicit Hessians, and the methods' masks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topoprune.prune.at_init import (
    GraspConfig,
    SnipConfig,
    SynflowConfig,
    class_balanced,
    hessian_gradient_product,
    snip_scores,
    synflow_scores,
)
from topoprune.prune.masks import add_masks
from topoprune.train.run import prune_model


def tiny_mlp(seed=0):
    torch.manual_seed(seed)
    return add_masks(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)))


def data(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_snip_scores_are_gradient_times_weight_over_all_examples():
    model, (x, y) = tiny_mlp(), data()
    scores = snip_scores(model, ["0", "2"], [(x[:10], y[:10]), (x[10:], y[10:])],
                         nn.functional.cross_entropy)  # fmt: skip
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    for name in ("0", "2"):
        w = model.get_submodule(name).weight_orig
        torch.testing.assert_close(scores[name], (w.grad * w).abs().detach())


def test_hessian_gradient_product_matches_an_explicit_hessian():
    model, (x, y) = tiny_mlp(), data()
    w0 = model[0].weight_orig.detach().clone()
    w2 = model[2].weight_orig.detach().clone()
    b0, b2 = model[0].bias.detach(), model[2].bias.detach()
    temperature = 3.0

    def loss(flat):
        a, b = flat[:20].reshape(5, 4), flat[20:].reshape(3, 5)
        out = torch.tanh(x @ a.T + b0) @ b.T + b2
        return nn.functional.cross_entropy(out / temperature, y)

    flat = torch.cat([w0.flatten(), w2.flatten()])
    hessian = torch.autograd.functional.hessian(loss, flat)
    gradient = torch.autograd.functional.jacobian(loss, flat)
    expected = hessian @ gradient
    hg = hessian_gradient_product(model, ["0", "2"], [(x[:7], y[:7]), (x[7:], y[7:])],
                                  nn.functional.cross_entropy, temperature)  # fmt: skip
    torch.testing.assert_close(torch.cat([hg["0"].flatten(), hg["2"].flatten()]), expected,
                               rtol=1e-4, atol=1e-7)  # fmt: skip


def test_synflow_scores_of_a_linear_network_in_closed_form():
    torch.manual_seed(0)
    model = add_masks(nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False)))
    w1, w2 = model[0].weight_orig.detach().abs(), model[1].weight_orig.detach().abs()
    scores = synflow_scores(model, ["0", "1"], (3,))
    # R = 1^T |W2| |W1| 1: dR/dW1_ij = sum_k |W2|_ki, dR/dW2_ki = sum_j |W1|_ij
    torch.testing.assert_close(scores["0"], w1 * w2.sum(0)[:, None])
    torch.testing.assert_close(scores["1"], w2 * w1.sum(1)[None, :])
    total = w2.sum(0) @ w1.sum(1)
    for s in scores.values():  # conservation: every layer's scores sum to R
        torch.testing.assert_close(s.sum(), total)


def loader():
    x, y = data(60)
    return DataLoader(TensorDataset(x, y), batch_size=20)


@pytest.mark.parametrize("method,config", [
    ("snip", SnipConfig(sparsity=(0.8,), retrain_epochs=1, scoring_examples=40)),
    ("snip", SnipConfig(sparsity=(0.8,), retrain_epochs=0, scoring_examples=40, reinit=True)),
    ("grasp", GraspConfig(sparsity=(0.8,), retrain_epochs=1, scoring_examples=40)),
    ("grasp-abs", GraspConfig(sparsity=(0.8,), retrain_epochs=1, scoring_examples=40)),
    ("grasp", GraspConfig(sparsity=(0.8,), retrain_epochs=1, scoring_examples=40,
                          samples_per_class=4)),
    ("synflow", SynflowConfig(sparsity=(0.8,), retrain_epochs=1, rounds=10)),
])  # fmt: skip
def test_methods_keep_the_global_fraction_and_record_their_choices(method, config):
    model, summary = prune_model(tiny_mlp(), method, config, train=loader(), seed=3)
    kept = sum(int(m.weight_mask.sum()) for m in (model[0], model[2]))
    assert kept == round(0.2 * (20 + 15))
    # no dense training: the masked network trains retrain_epochs epochs of 3 batches
    assert summary["steps"] == 3 * config.retrain_epochs
    if method == "snip":
        assert summary["config"]["reinit"] is config.reinit


def test_snip_reinit_draws_new_weights_under_the_same_masks():
    config = SnipConfig(sparsity=(0.5,), retrain_epochs=0, scoring_examples=40)
    kept, _ = prune_model(tiny_mlp(), "snip", config, train=loader(), seed=3)
    again, _ = prune_model(tiny_mlp(), "snip", SnipConfig(**{**config.__dict__, "reinit": True}),
                           train=loader(), seed=3)  # fmt: skip
    assert torch.equal(kept[0].weight_mask, again[0].weight_mask)
    alive = kept[0].weight_mask.bool()
    assert not torch.equal(kept[0].weight_orig[alive], again[0].weight_orig[alive])
    assert (again[0].weight_orig[~alive] == 0).all()


def test_synflow_avoids_layer_collapse_where_magnitude_would_not_matter():
    """At 99% global sparsity SynFlow keeps weights in every layer (its raison d'etre)."""
    torch.manual_seed(0)
    model = add_masks(nn.Sequential(nn.Linear(50, 40), nn.ReLU(), nn.Linear(40, 3)))
    x, y = torch.randn(30, 50), torch.randint(0, 3, (30,))
    config = SynflowConfig(sparsity=(0.99,), retrain_epochs=0, rounds=20)
    model, _ = prune_model(model, "synflow", config, train=DataLoader(TensorDataset(x, y)))
    assert all(int(m.weight_mask.sum()) > 0 for m in (model[0], model[2]))


def test_grasp_balanced_scores_are_the_products_on_the_balanced_batch():
    x, y = data(60)
    images, labels = class_balanced([(x[:20], y[:20]), (x[20:], y[20:])], 4)
    assert torch.bincount(labels).tolist() == [4, 4, 4]
    config = GraspConfig(sparsity=(0.5,), retrain_epochs=0, scoring_examples=60,
                         samples_per_class=4)  # fmt: skip
    whole = DataLoader(TensorDataset(x, y), batch_size=60)  # one batch: all 60 are drawn
    model, _ = prune_model(tiny_mlp(), "grasp", config, train=whole, seed=3)
    reference = tiny_mlp()
    hg = hessian_gradient_product(reference, ["0", "2"], [(images, labels)],
                                  nn.functional.cross_entropy, 200.0)  # fmt: skip
    scores = {n: reference.get_submodule(n).weight_orig.detach() * hg[n] for n in ("0", "2")}
    flat = torch.cat([scores[n].flatten() for n in ("0", "2")])
    kept = torch.cat([model.get_submodule(n).weight_mask.flatten() for n in ("0", "2")]).bool()
    assert flat[kept].min() >= flat[~kept].max()  # the highest -w Hg went
