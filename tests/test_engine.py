"""The training engine's method interface: hooks and their context, optimizers, masks held at zero
in weights and optimizer state, gradual pruning, snapshots, any model with any DataLoader."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topoprune.errors import TopopruneError
from topoprune.io import load_network
from topoprune.prune.allocation import allocate, erk_densities, layer_sparsities
from topoprune.prune.masks import add_masks, apply_masks, enforce_masks, held_at_zero, zero_pruned
from topoprune.prune.method import Stage
from topoprune.prune.methods import MagnitudeConfig
from topoprune.train.engine import TrainSettings, run_stages
from topoprune.train.run import prune_model


def blobs(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian classes in 8 dimensions: learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=generator)
    x = torch.randn(n, 8, generator=generator) + 1.5 * y[:, None].float()
    return x, y


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_without_masking_pruned_weights_would_regrow(optimizer):
    """The engine zeroes pruned gradients: with only the forward masked, momentum and Adam's
    moments carry pruned weights away from zero."""
    x, y = blobs()
    results = {}
    for engine in (False, True):
        model = add_masks(mlp())
        mask = torch.rand(16, 8, generator=torch.Generator().manual_seed(1)) < 0.5
        apply_masks(model, {"0": mask})
        params = model.parameters()
        opt = (
            torch.optim.SGD(params, lr=0.1, momentum=0.9)
            if optimizer == "sgd"
            else torch.optim.Adam(params, lr=0.01)
        )
        for step in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if engine:
                zero_pruned(held_at_zero(model), grads=True)  # what train_step does
            opt.step()
            if engine or step < 4:  # without the engine, the last step is left unmasked
                enforce_masks(model)
        results[engine] = model[0].weight_orig.detach()[~mask]
        state = opt.state[model[0].weight_orig]
        buffers = [v for v in state.values() if isinstance(v, torch.Tensor) and v.dim() == 2]
        assert buffers and all(bool((b[~mask] == 0).all()) == engine for b in buffers)
    assert torch.count_nonzero(results[False]) > 0  # regrown
    assert torch.count_nonzero(results[True]) == 0


def test_hooks_run_in_order_with_their_context():
    x, y = blobs(64)
    seen: list[tuple] = []

    def record(name):
        def hook(ctx):
            grads = ctx.model[0].weight_orig.grad
            seen.append(
                (
                    name,
                    ctx.state.step,
                    ctx.step_in_stage,
                    ctx.batch is not None,
                    ctx.loss is not None,
                    grads is not None and bool(grads.abs().sum() > 0),
                    round(ctx.lr, 6),
                )
            )

        return hook

    def extra_loss(ctx):
        seen.append(("loss_term", ctx.state.step, ctx.step_in_stage, True, True, False, 0))
        return 0.1 * ctx.model[0].weight_orig.abs().sum()

    stage = Stage(
        "s",
        epochs=2,
        lr=0.1,
        lr_end=0.0,
        on_start=record("on_start"),
        loss_term=extra_loss,
        after_backward=record("after_backward"),
        after_step=record("after_step"),
        on_epoch_end=record("on_epoch_end"),
        on_end=record("on_end"),
    )
    model = add_masks(mlp())
    run_stages(
        model, [stage], DataLoader(TensorDataset(x, y), batch_size=32), TrainSettings(seed=0)
    )
    names = [s[0] for s in seen]
    step = ["loss_term", "after_backward", "after_step"]
    assert names == [
        "on_start",
        *step,
        *step,
        "on_epoch_end",
        *step,
        *step,
        "on_epoch_end",
        "on_end",
    ]
    assert seen[0][3:5] == (False, False)  # no batch, no loss before training
    backward = [s for s in seen if s[0] == "after_backward"]
    assert all(s[3] and s[4] and s[5] for s in backward)  # batch, loss and gradients ready
    assert [s[1] for s in seen if s[0] == "after_step"] == [1, 2, 3, 4]  # after the step
    # cosine from 0.1 to 0 over 4 steps, as each step saw it
    assert [s[6] for s in backward] == [0.1, 0.085355, 0.05, 0.014645]


@pytest.mark.parametrize("source", ["split", "loader"])
def test_scoring_batches_are_reproducible_and_sized(mnist, source):
    from topoprune.data.images import Split

    x, y = mnist.train.images[:500], mnist.train.labels[:500]
    data = Split(x, y) if source == "split" else DataLoader(TensorDataset(x, y), 64, shuffle=True)

    def draw(seed: int) -> torch.Tensor:
        drawn = []

        def score(ctx):
            drawn.extend(b[1] for b in ctx.scoring_batches(150))

        model = add_masks(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))
        stage = Stage("s", 0, 0.1, on_start=score)
        run_stages(model, [stage], data, TrainSettings(batch_size=64, seed=seed))
        return torch.cat(drawn)

    first = draw(0)
    assert len(first) == 150
    assert torch.equal(first, draw(0))  # the same examples for the same (seed, step)
    assert not torch.equal(first, draw(1))  # drawn at random, not the first 150
    assert not torch.equal(first, y[:150])


def test_gradual_pruning_reaches_the_target_and_zeroes_stale_adam_state(tmp_path):
    x, y = blobs(512)
    config = MagnitudeConfig(
        dense_epochs=1,
        retrain_epochs=2,
        sparsity=(0.8,),
        lr=0.01,
        retrain_lr_factor=1.0,
        prune_schedule="gradual",
        prune_every=4,
        ramp=0.5,
        optimizer="adam",
    )
    model, summary = prune_model(
        mlp(),
        "magnitude",
        config,
        out=tmp_path,
        train=DataLoader(TensorDataset(x, y), batch_size=32),
    )
    assert summary["kept_percent"] == {"0": 100 * 26 / 128, "2": 100 * 6 / 32}  # round(0.2 n)
    assert summary["steps"] == 16 + 32
    # masks shrank mid-stage 5 times; Adam's moments of every pruned weight were reset
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["extra"]["optimizer_state"]
    pruned = model[0].weight_mask == 0
    index = next(i for i, p in enumerate(model.parameters()) if p is model[0].weight_orig)
    moments = [state["state"][index]["exp_avg"], state["state"][index]["exp_avg_sq"]]
    assert all(bool((m[pruned] == 0).all()) for m in moments)


def test_negative_scores_keep_the_target_count():
    # movement scores are mostly negative: pruned entries must still rank below all of them
    scores = {"a": -torch.arange(1.0, 11.0).view(2, 5)}
    alive = {"a": torch.tensor([[True] * 5, [False] * 5])}
    kept = allocate(scores, alive, {"a": 0.8})["a"]  # round(10 x 0.2) = 2 kept
    assert kept.tolist() == [[True, True, False, False, False], [False] * 5]


def test_erk_allocation_and_structured_granularity():
    shapes = {"conv": (8, 4, 3, 3), "fc": (10, 72)}
    densities = erk_densities(shapes, 0.5)
    total = sum(d * (8 * 4 * 9 if n == "conv" else 720) for n, d in densities.items())
    assert total == pytest.approx(0.5 * (288 + 720))
    # ERK density is proportional to sum(shape) / prod(shape)
    ratio = densities["conv"] / densities["fc"]
    assert ratio == pytest.approx((18 / 288) / (82 / 720))
    assert layer_sparsities(shapes, (0.5,), "uniform") == {"conv": 0.5, "fc": 0.5}
    torch.manual_seed(0)
    weight = torch.randn(8, 4, 3, 3)
    ones = {"conv": torch.ones(8, 4, 3, 3, dtype=torch.bool)}
    filters = allocate({"conv": weight.abs()}, ones, {"conv": 0.75}, granularity="filter")["conv"]
    norms = weight.abs().flatten(1).sum(1)
    assert filters.flatten(1).all(1).tolist() == (norms >= norms.topk(2).values[-1]).tolist()
    assert int(filters.sum()) == 2 * 36
    channels = allocate({"conv": weight.abs()}, ones, {"conv": 0.5}, granularity="channel")
    assert channels["conv"].transpose(0, 1).flatten(1).all(1).sum() == 2


class ResidualNet(nn.Module):
    """Conv-BN-ReLU, a residual block with a depthwise convolution, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pointwise = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = nn.functional.max_pool2d(x, 2)
        x = x + torch.relu(self.pointwise(self.depthwise(x)))
        return self.head(nn.functional.max_pool2d(x, 2).flatten(1))


def test_prune_a_model_outside_the_zoo_fed_by_a_dataloader(mnist, tmp_path):
    torch.manual_seed(0)
    train = DataLoader(
        TensorDataset(mnist.train.images[:1000], mnist.train.labels[:1000]),
        batch_size=50,
        shuffle=True,
    )
    test = DataLoader(
        TensorDataset(mnist.test.images[:500], mnist.test.labels[:500]), batch_size=250
    )
    config = MagnitudeConfig(
        dense_epochs=2,
        retrain_epochs=1,
        sparsity=(0.5,),
        lr=0.05,
        retrain_lr_factor=0.5,
        dense_layers=("head",),
    )
    result = prune_model(
        ResidualNet(),
        "magnitude",
        config,
        train=train,
        evaluation=test,
        out=tmp_path / "run",
        seed=0,
        settings=TrainSettings(seed=0, snapshot_epochs=True),
    )
    summary = result.summary
    assert summary["pruned_layers"] == ["stem", "depthwise", "pointwise"]
    assert summary["dense_modules"] == ["bn", "head"]
    assert summary["kept_percent"] == {
        n: pytest.approx(50.0, abs=1.0) for n in ("stem", "depthwise", "pointwise")
    }
    assert summary["test_error"] < 0.5 and summary["test_loss"] > 0  # it learned something
    network = load_network(tmp_path / "run" / "checkpoint.pt")
    assert network.names == ["stem.weight", "depthwise.weight", "pointwise.weight", "head.weight"]
    assert network.layers[1].density == pytest.approx(0.5, abs=0.02)
    dense = load_network(tmp_path / "run" / "checkpoint.pt", snapshot="dense/epoch2")
    assert dense.layers[1].density == 1.0
    with pytest.raises(TopopruneError, match="no mask snapshot 'nope'; snapshots: dense/epoch1"):
        load_network(tmp_path / "run" / "checkpoint.pt", snapshot="nope")


def test_bad_data_is_a_clear_error():
    with pytest.raises(TopopruneError, match="re-iterable"):
        prune_model(mlp(), "dense", train=iter([blobs(8)]))
    with pytest.raises(TopopruneError, match=r"\(inputs, targets\) pairs"):
        prune_model(mlp(), "dense", train=[blobs(8)[0]])
    with pytest.raises(TopopruneError, match="no weight layer matches 'fc9'"):
        prune_model(mlp(), "magnitude", MagnitudeConfig(layers=("fc9",)), train=[blobs(8)])


class Drifting(torch.optim.SGD):
    """An optimizer that moves every weight, zero gradient or not."""

    @torch.no_grad()
    def step(self, closure=None):
        super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(1e-3)


def test_a_custom_optimizer_cannot_regrow_pruned_weights():
    x, y = blobs(128)
    model = add_masks(mlp())
    mask = torch.rand(16, 8, generator=torch.Generator().manual_seed(1)) < 0.5
    apply_masks(model, {"0": mask})

    def factory(params, lr, weight_decay, momentum):
        return Drifting(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    stage = Stage("s", epochs=1, lr=0.1, optimizer=factory)
    run_stages(model, [stage], [(x, y)], TrainSettings())
    assert torch.count_nonzero(model[0].weight_orig[~mask]) == 0
    assert torch.count_nonzero(model[0].weight_orig[mask]) == int(mask.sum())
