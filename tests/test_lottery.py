"""Lottery tickets: per-round pruning rates, rewinding to the kept parameters (or a fresh
initialisation for the control), the rewind step, early stopping in the report."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topoprune.errors import TopopruneError
from topoprune.prune.lottery import LotteryConfig, LotteryTicket
from topoprune.prune.masks import add_masks
from topoprune.prune.method import Context, TrainingState
from topoprune.train.run import prune_model


def tiny(seed=0):
    torch.manual_seed(seed)
    return add_masks(nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4)))


def context(model, method):
    stage = method.stages()[0]
    return Context(model, TrainingState(), stage, 0, "cpu", nn.functional.cross_entropy)


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_a_round_prunes_the_smallest_trained_weights_and_rewinds_the_rest():
    model = tiny()
    method = LotteryTicket(LotteryConfig(rounds=2), ["0", "2"], seed=0)
    ctx = context(model, method)
    stages = method.stages()
    stages[0].on_start(ctx)
    init = params(model)
    with torch.no_grad():  # "training"
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    trained = params(model)
    stages[1].on_start(ctx)
    kept = {"0": model[0].weight_mask.bool(), "2": model[2].weight_mask.bool()}
    assert int(kept["0"].sum()) == round(60 * 0.8) and int(kept["2"].sum()) == round(40 * 0.9)
    for name in ("0", "2"):
        w = trained[f"{name}.weight_orig"].abs()
        assert w[~kept[name]].max() <= w[kept[name]].min()  # the smallest went
        now = model.get_submodule(name).weight_orig.detach()
        assert torch.equal(now[kept[name]], init[f"{name}.weight_orig"][kept[name]])
        assert (now[~kept[name]] == 0).all()
        assert torch.equal(model.get_submodule(name).bias, init[f"{name}.bias"])
    stages[2].on_start(ctx)  # the second round removes from the survivors: 0.8^2 of the layer
    assert int(model[0].weight_mask.sum()) == round(60 * 0.64)


def test_the_reinit_control_draws_a_fresh_initialisation_from_the_seed():
    outcomes = []
    for _ in range(2):
        model = tiny()
        method = LotteryTicket(LotteryConfig(rounds=1, control="reinit"), ["0", "2"], seed=5)
        ctx = context(model, method)
        method.stages()[0].on_start(ctx)
        init = params(model)
        method.stages()[1].on_start(ctx)
        alive = model[0].weight_mask.bool()
        assert not torch.equal(model[0].weight_orig[alive], init["0.weight_orig"][alive])
        outcomes.append(params(model))
    assert all(torch.equal(outcomes[0][k], outcomes[1][k]) for k in outcomes[0])


def test_the_rewind_step_keeps_the_parameters_after_that_many_steps():
    model = tiny()
    method = LotteryTicket(LotteryConfig(rewind_step=3), ["0", "2"], seed=0)
    ctx = context(model, method)
    stage = method.stages()[0]
    stage.on_start(ctx)
    assert "rewind" not in ctx.state.method_state
    for step in range(1, 5):
        ctx.state.step = step
        with torch.no_grad():
            model[0].weight_orig.add_(1.0)
        stage.after_step(ctx)
        if step == 3:
            at_three = model[0].weight_orig.detach().clone()
    assert torch.equal(ctx.state.method_state["rewind"]["0.weight_orig"], at_three)


def loader():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 4, (64,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16)


def test_a_run_reaches_the_target_and_reports_early_stopping_per_round():
    config = LotteryConfig(rounds=2, round_epochs=2, lr=0.05)
    _, summary = prune_model(tiny(), "lottery", config, train=loader(), validation=loader())
    assert summary["kept_percent"] == {"0": pytest.approx(100 * round(60 * 0.64) / 60),
                                       "2": pytest.approx(100 * round(40 * 0.81) / 40)}  # fmt: skip
    stopping = summary["report"]["early_stopping"]
    assert set(stopping) == {"round0", "round1", "round2"}
    assert all(1 <= r["epoch"] <= 2 for r in stopping.values())


def test_a_rewind_step_past_the_first_round_is_an_error():
    config = LotteryConfig(rounds=1, round_epochs=1, rewind_step=10**6)
    with pytest.raises(TopopruneError, match="past the first round"):
        prune_model(tiny(), "lottery", config, train=loader())
