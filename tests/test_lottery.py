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
from topoprune.prune.methods import METHODS
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


def test_fixed_masks_train_a_rounds_mask_from_the_runs_own_initialisation(tmp_path):
    config = LotteryConfig(rounds=2, round_epochs=1, lr=0.05)
    prune_model(tiny(), "lottery", config, train=loader(), out=tmp_path / "ticket")
    ticket = torch.load(tmp_path / "ticket" / "checkpoint.pt", weights_only=True)["extra"]
    round1 = ticket["mask_history"]["round1"]
    fixed = METHODS["fixed-masks"].Config(masks=str(tmp_path / "ticket" / "checkpoint.pt"),
                                          snapshot="round1", epochs=0)  # fmt: skip
    model, summary = prune_model(tiny(seed=3), "fixed-masks", fixed, train=loader())
    fresh = tiny(seed=3)
    for name in ("0", "2"):
        mask = model.get_submodule(name).weight_mask.bool()
        assert torch.equal(mask, round1[name])
        start = fresh.get_submodule(name).weight_orig.detach()  # the new initialisation, masked
        assert torch.equal(model.get_submodule(name).weight_orig.detach(), start * mask)
    assert summary["kept_percent"]["0"] == pytest.approx(100 * 0.8)


def test_fixed_masks_from_another_architecture_is_an_error(tmp_path):
    other = add_masks(nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4)))
    prune_model(other, "dense", METHODS["dense"].Config(epochs=0), train=loader(),
                out=tmp_path / "other")  # fmt: skip
    bigger = add_masks(nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4)))
    fixed = METHODS["fixed-masks"].Config(masks=str(tmp_path / "other" / "checkpoint.pt"),
                                          epochs=0)  # fmt: skip
    with pytest.raises(TopopruneError, match="mask entries"):
        prune_model(bigger, "fixed-masks", fixed, train=loader())


@pytest.mark.parametrize("method", ["set", "rigl", "random"])
def test_sparse_init_keeps_each_units_initial_scale_at_its_kept_fan_in(method):
    """The 784-1000-1000-1000 MLP at 4% density: each unit's kept weights carry the variance
    the dense initialisation gives its full fan-in (1 / (3 fan_in)) at the kept fan-in."""
    from topoprune.models import build_model

    config = {"set": {"epsilon": 20.0}, "rigl": {"sparsity": 0.955},
              "random": {"kept": (0.045,)}}[method]  # fmt: skip
    torch.manual_seed(0)
    model = add_masks(build_model("mlp3x1000"), names=["3", "5"])
    cls = METHODS[method]
    pruner = cls(cls.Config(epochs=0, sparse_init=True, **config), ["3", "5"], seed=0)
    pruner.stages()[0].on_start(context(model, pruner))
    for name in ("3", "5"):
        module = model.get_submodule(name)
        mask = module.weight_mask.bool()
        kept = mask.sum(dim=1, keepdim=True).float()
        normalised = module.weight_orig.detach() * kept.sqrt() * 3**0.5  # unit variance if right
        assert 0.03 < mask.float().mean() < 0.06
        assert normalised[mask].var().item() == pytest.approx(1.0, rel=0.05)
