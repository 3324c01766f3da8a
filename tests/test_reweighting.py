"""Affine scaling (Fedorov and Rao): training theta with the preconditioned gradient is SGD on an
explicit q in theta = q * omega; kurtosis and the iteration log; settings that cannot work fail."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topoprune.errors import TopopruneError
from topoprune.prune.reweighting import (
    FocussConfig,
    ReweightedL1Config,
    ReweightedL2Config,
    kurtosis,
    omega_l1,
)
from topoprune.train.run import prune_model

LR, MOMENTUM, WD, TAU = 0.5, 0.9, 0.01, 0.05


def data() -> DataLoader:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(48, 4, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)


def start() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3))


def explicit_q(layer_lr: bool, iterations: int = 1, epochs: int = 2) -> torch.Tensor:
    """SGD on q itself (momentum, weight decay on q), theta = q * omega; each iteration a fresh
    optimizer and omega from the last theta, q kept (the greedy initialiser; sigma 0)."""
    model = start()
    theta = model[0].weight.detach().clone()
    bias = model[0].bias
    q = theta / omega_l1(theta, TAU)  # iteration 1: eq. 11 with v = 0
    for _ in range(iterations):
        omega = omega_l1(theta, TAU)
        q = nn.Parameter(q.detach().clone())
        scale = 1 / float(omega.square().max()) if layer_lr else 1.0
        optimizer = torch.optim.SGD(
            [{"params": [q], "lr": LR * scale}, {"params": [bias], "lr": LR}],
            lr=LR,
            momentum=MOMENTUM,
            weight_decay=WD,
        )
        for _ in range(epochs):
            for x, y in data():
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(x @ (q * omega).T + bias, y)
                loss.backward()
                optimizer.step()
        theta = (q * omega).detach()  # eq. 7
    return theta


@pytest.mark.parametrize("layer_lr", [False, True])
def test_training_theta_is_sgd_on_q(layer_lr):
    config = ReweightedL1Config(
        dense_epochs=0, iterations=1, iteration_epochs=2, retrain_epochs=0, sparsity=(0.0,),
        sigma=0.0, tau=TAU, lr=LR, momentum=MOMENTUM, weight_decay=WD, layer_lr=layer_lr,
    )  # fmt: skip
    model, summary = prune_model(start(), "reweighted-l1", config, train=data())
    assert torch.allclose(model[0].weight_orig.detach(), explicit_q(layer_lr), atol=1e-5)
    # the iteration moved the weights (the comparison is not between two untouched copies)
    assert not torch.allclose(model[0].weight_orig.detach(), start()[0].weight, atol=1e-3)
    kurt = summary["report"]["kurtosis"]
    assert [k["iteration"] for k in kurt] == [0, 1]
    assert kurt[0]["0"] == pytest.approx(kurtosis(start()[0].weight))


def test_greedy_iterations_keep_q_and_recompute_omega():
    config = ReweightedL1Config(
        dense_epochs=0, iterations=3, iteration_epochs=1, retrain_epochs=0, sparsity=(0.0,),
        sigma=0.0, tau=TAU, lr=LR, momentum=MOMENTUM, weight_decay=WD, update="all",
        q_init="greedy", layer_lr=True,
    )  # fmt: skip
    model, _ = prune_model(start(), "reweighted-l1", config, train=data())
    expected = explicit_q(True, iterations=3, epochs=1)
    assert torch.allclose(model[0].weight_orig.detach(), expected, atol=1e-5)


def test_a_run_cut_inside_an_iteration_resumes_bit_identical(tmp_path, monkeypatch):
    import topoprune.train.run as run_module

    config = ReweightedL2Config(
        dense_epochs=0, iterations=2, iteration_epochs=2, retrain_epochs=1, sparsity=(0.5,),
        update="one", q_init="noisy", lr=0.1,
    )  # fmt: skip
    full, _ = prune_model(start(), "reweighted-l2", config, train=data(), out=tmp_path / "full")
    real_save, calls = run_module.save_network, {"n": 0}

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:  # saves: dense end, 2 epochs + end of iteration 1, epoch 1 of 2
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "save_network", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        prune_model(start(), "reweighted-l2", config, train=data(), out=tmp_path / "cut")
    monkeypatch.setattr(run_module, "save_network", real_save)
    cut, _ = prune_model(
        start(), "reweighted-l2", config, train=data(), out=tmp_path / "cut", resume=True
    )
    assert torch.equal(full[0].weight_orig, cut[0].weight_orig)


def test_iterations_log_kurtosis_and_threshold_census():
    config = FocussConfig(
        dense_epochs=0, iterations=3, iteration_epochs=1, retrain_epochs=1, sparsity=(0.5,),
        update="all", q_init="noisy", sigma=0.05, lr=0.1,
    )  # fmt: skip
    _, summary = prune_model(start(), "focuss", config, train=data())
    report = summary["report"]
    assert [k["iteration"] for k in report["kurtosis"]] == [0, 1, 2, 3]
    assert report["before_threshold"]["0"]["weights"] == 12
    assert summary["kept_percent"] == {"0": 50.0}


def test_layerwise_thresholds_each_layer_in_its_own_stage():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    config = ReweightedL2Config(
        dense_epochs=0, iterations=2, iteration_epochs=1, retrain_epochs=1, sparsity=(0.5, 0.25),
        layerwise=True,
    )  # fmt: skip
    model, summary = prune_model(model, "reweighted-l2", config, train=data())
    assert summary["kept_percent"] == pytest.approx({"0": 50.0, "2": 100 * 14 / 18})  # round(13.5)
    assert set(summary["report"]["before_threshold"]) == {"0", "2"}


def test_tau_is_annealed_geometrically():
    from topoprune.prune.reweighting import ReweightedL2

    method = ReweightedL2(ReweightedL2Config(tau=0.04, tau_decay=0.5), ["0"], seed=0)
    assert [method.tau_at(t) for t in (1, 2, 3)] == [0.04, 0.02, 0.01]


def test_other_optimizers_are_refused():
    with pytest.raises(TopopruneError, match="SGD"):
        ReweightedL1Config(optimizer="adam")
