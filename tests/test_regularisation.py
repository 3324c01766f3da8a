"""The regularisation methods: the proximal operators against their closed forms and brute-force
minimisers, exact zeros from the proximal step but not from the subgradient step, the l0 top-t
projection, and the proximal step's use of the scheduled learning rate."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import minimize_scalar
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topoprune.errors import TopopruneError
from topoprune.prune.masks import add_masks
from topoprune.prune.method import Context, TrainingState
from topoprune.prune.methods import METHODS
from topoprune.prune.regularisation import L0Config, L1Config, L2Config, l2_shrink, soft_threshold
from topoprune.train.run import prune_model

POINTS = [-3.0, -1.2, -0.7, -0.3, 0.0, 0.2, 0.5, 0.69, 1.0, 2.5]


def brute_force(objective) -> float:
    return minimize_scalar(
        objective, bounds=(-10, 10), method="bounded", options={"xatol": 1e-10}
    ).x


def test_soft_threshold_closed_form():
    z = torch.tensor([-3.0, -0.5, -0.25, 0.0, 0.1, 0.5, 2.0])
    out = soft_threshold(z, 0.5)
    assert out is z  # in place
    assert z.tolist() == [-2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5]
    assert torch.equal(soft_threshold(torch.tensor([1.0, -2.0]), 0.0), torch.tensor([1.0, -2.0]))


@pytest.mark.parametrize("t", [0.0, 0.3, 0.7, 1.5])
def test_soft_threshold_minimises_the_l1_proximal_objective(t):
    prox = soft_threshold(torch.tensor(POINTS, dtype=torch.float64), t)
    for z, w in zip(POINTS, prox.tolist()):
        best = brute_force(lambda v, z=z: 0.5 * (v - z) ** 2 + t * abs(v))
        assert w == pytest.approx(best, abs=1e-6), z


def test_l2_shrink_closed_form():
    z = torch.tensor([-3.0, 0.0, 1.5, 6.0])
    out = l2_shrink(z, 0.5)
    assert out is z
    assert z.tolist() == [-2.0, 0.0, 1.0, 4.0]


@pytest.mark.parametrize("s", [0.0, 0.25, 1.0, 3.0])
def test_l2_shrink_minimises_the_l2_proximal_objective(s):
    prox = l2_shrink(torch.tensor(POINTS, dtype=torch.float64), s)
    for z, w in zip(POINTS, prox.tolist()):
        best = brute_force(lambda v, z=z: 0.5 * (v - z) ** 2 + 0.5 * s * v**2)
        assert w == pytest.approx(best, abs=1e-6), z


def test_negative_strengths_are_errors():
    with pytest.raises(TopopruneError, match="soft threshold"):
        soft_threshold(torch.ones(2), -1.0)
    with pytest.raises(TopopruneError, match="shrinkage"):
        l2_shrink(torch.ones(2), -1.0)


def regression() -> DataLoader:
    """A sparse linear regression: 4 of 20 inputs matter."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 20, generator=generator)
    w = torch.zeros(20)
    w[:4] = torch.tensor([2.0, -1.5, 1.0, 0.5])
    y = (x @ w + 0.01 * torch.randn(128, generator=generator)).unsqueeze(1)
    return DataLoader(TensorDataset(x, y), batch_size=16)


@pytest.fixture(scope="module")
def l1_runs():
    """320 steps of each l1 method at the same lam (momentum 0.9, no weight decay)."""
    config = L1Config(
        dense_epochs=0,
        epochs=40,
        retrain_epochs=0,
        lam=0.05,
        lr=0.02,
        weight_decay=0.0,
        sparsity=(0.5,),
    )
    runs = {}
    for name in ("l1-proximal", "l1-subgradient"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 1))
        runs[name] = prune_model(
            model, name, config, train=regression(), loss=nn.functional.mse_loss
        )
    return runs


def test_the_proximal_step_gives_exact_zeros_the_subgradient_step_does_not(l1_runs):
    proximal = l1_runs["l1-proximal"].summary["report"]["before_threshold"]["0"]
    subgradient = l1_runs["l1-subgradient"].summary["report"]["before_threshold"]["0"]
    assert proximal == {"weights": 20, "exact_zeros": 16, "near_zeros": 16, "small": 16}
    assert subgradient["weights"] == 20
    assert subgradient["exact_zeros"] == 0


def test_both_l1_methods_keep_the_true_support(l1_runs):
    for name, (model, summary) in l1_runs.items():
        assert summary["kept_percent"] == {"0": 50.0}, name
        assert model[0].weight_mask[0, :4].tolist() == [1.0] * 4, name


def masked_mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    return add_masks(model)


def hook_context(model: nn.Module, stage, *, lr: float = 0.1, step_in_stage: int = 0) -> Context:
    return Context(
        model,
        TrainingState(),
        stage,
        0,
        "cpu",
        nn.functional.cross_entropy,
        lr=lr,
        step_in_stage=step_in_stage,
    )


def stage_named(method, name: str):
    return next(s for s in method.stages() if s.name == name)


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {"0": model[0].weight_orig.detach().clone(), "2": model[2].weight_orig.detach().clone()}


def test_l0_projection_keeps_exactly_t_weights_per_layer():
    model = masked_mlp()
    method = METHODS["l0-topk"](L0Config(sparsity=(0.6, 0.75), every=5), ["0", "2"], seed=0)
    stage = stage_named(method, "topk")
    before = weights_of(model)
    stage.after_step(hook_context(model, stage, step_in_stage=4))  # not a multiple of 5
    assert all(torch.equal(before[n], w) for n, w in weights_of(model).items())
    stage.after_step(hook_context(model, stage, step_in_stage=10))
    after = weights_of(model)
    for name, t in (("0", 12), ("2", 5)):  # round(0.4 x 30), round(0.25 x 20)
        assert int((after[name] != 0).sum()) == t
        kept = before[name].abs().flatten().topk(t).indices
        assert torch.equal(after[name].flatten()[kept], before[name].flatten()[kept])
    assert model[0].weight_mask.all() and model[2].weight_mask.all()  # not masked: may regrow


def test_l0_global_projection_keeps_exactly_t_weights_in_total():
    model = masked_mlp()
    method = METHODS["l0-topk"](L0Config(sparsity=(0.8,), allocation="global"), ["0", "2"], 0)
    assert method.target_kept() is None
    stage = stage_named(method, "topk")
    before = torch.cat([w.flatten() for w in weights_of(model).values()])
    stage.after_step(hook_context(model, stage, step_in_stage=100))
    after = torch.cat([w.flatten() for w in weights_of(model).values()])
    assert int((after != 0).sum()) == 10  # round(0.2 x 50)
    kept = before.abs().topk(10).indices
    assert torch.equal(after[kept], before[kept])


def test_l0_config_rules():
    with pytest.raises(TopopruneError, match="one sparsity"):
        L0Config(sparsity=(0.5, 0.9), allocation="global")
    with pytest.raises(TopopruneError, match="quality"):
        L0Config(quality=(1.0,))


def tiny_classification() -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=generator)
    y = torch.randint(0, 4, (64,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=16)


@pytest.mark.parametrize("allocation", ["layer", "global"])
def test_l0_run_leaves_masks_open_during_training_and_keeps_t_after(allocation, tmp_path):
    config = L0Config(
        dense_epochs=0, epochs=2, retrain_epochs=1, every=3, sparsity=(0.8,), allocation=allocation
    )
    model, summary = prune_model(
        masked_mlp(), "l0-topk", config, train=tiny_classification(), out=tmp_path
    )
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["extra"]
    assert all(bool(m.all()) for m in checkpoint["mask_history"]["topk"].values())
    # projected after steps 3 and 6 of 8: by the end, zeroed weights have moved again
    census = summary["report"]["before_threshold"]
    assert sum(c["weights"] for c in census.values()) == 50
    assert sum(c["exact_zeros"] for c in census.values()) < 40
    assert sum(int(model[i].weight_mask.sum()) for i in (0, 2)) == 10  # t = round(0.2 x 50)
    if allocation == "layer":
        assert [int(model[i].weight_mask.sum()) for i in (0, 2)] == [6, 4]


def frozen_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A loss with zero gradient: only the regulariser moves the weights."""
    return 0.0 * outputs.sum()


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_proximal_step_uses_the_scheduled_learning_rate(schedule):
    lam, lr, steps = 2.0, 0.1, 8  # 2 epochs of 4 batches
    config = L2Config(
        dense_epochs=0,
        epochs=2,
        retrain_epochs=0,
        lam=lam,
        lr=lr,
        momentum=0.0,
        weight_decay=0.0,
        schedule=schedule,
        sparsity=(0.0,),
    )
    model = masked_mlp()
    start = weights_of(model)
    model, _ = prune_model(
        model, "l2-proximal", config, train=tiny_classification(), loss=frozen_loss
    )
    stage = stage_named(METHODS["l2-proximal"](config, ["0", "2"], 0), "regularised")
    rates = [stage.lr_at(k, steps) for k in range(steps)]
    if schedule == "cosine":
        assert rates[0] == lr and rates[-1] < 0.01  # the schedule does change the rate
    factor = math.prod(1 / (1 + rate * lam) for rate in rates)
    for name, weight in weights_of(model).items():
        assert torch.allclose(weight, start[name] * factor, rtol=1e-5, atol=0), name


def test_the_l1_proximal_hook_thresholds_by_the_context_rate():
    model = masked_mlp()
    method = METHODS["l1-proximal"](L1Config(lam=0.5), ["0", "2"], seed=0)
    stage = stage_named(method, "regularised")
    before = weights_of(model)
    stage.after_step(hook_context(model, stage, lr=0.2))  # threshold 0.2 x 0.5
    for name, weight in weights_of(model).items():
        expected = before[name].sign() * (before[name].abs() - 0.1).clamp_min(0)
        assert torch.allclose(weight, expected, rtol=0, atol=1e-7), name
        assert bool((weight[before[name].abs() <= 0.1] == 0).all())


def test_the_penalties_have_their_closed_form():
    model = masked_mlp()
    context = hook_context(model, None)
    weights = weights_of(model).values()
    l1 = METHODS["l1-subgradient"](L1Config(lam=0.3), ["0", "2"], seed=0)
    l2 = METHODS["l2"](L2Config(lam=0.3), ["0", "2"], seed=0)
    l1_term = stage_named(l1, "regularised").loss_term(context)
    l2_term = stage_named(l2, "regularised").loss_term(context)
    assert float(l1_term.detach()) == pytest.approx(
        0.3 * sum(float(w.abs().sum()) for w in weights)
    )
    assert float(l2_term.detach()) == pytest.approx(
        0.15 * sum(float(w.pow(2).sum()) for w in weights)
    )
    l1_term.backward()
    grad = model[0].weight_orig.grad
    assert torch.equal(grad, 0.3 * model[0].weight_orig.detach().sign())  # a subgradient
