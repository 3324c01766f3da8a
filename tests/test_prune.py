"""Masked training, the pruning methods, checkpoints and exact resume (on a small MNIST subset)."""

import itertools
import json

import numpy as np
import pytest
import torch

from topoprune.cli import main
from topoprune.data.images import make_dataset
from topoprune.errors import TopopruneError
from topoprune.io import load_network
from topoprune.models import build_model
from topoprune.prune.allocation import allocate
from topoprune.prune.masks import add_masks, apply_masks, enforce_masks, set_straight_through
from topoprune.prune.methods import DenseConfig, DNSConfig, MagnitudeConfig, RandomConfig
from topoprune.train.engine import Stage, TrainSettings, error_rate
from topoprune.train.run import load_trained_state, prune_run, regrow_connections


@pytest.fixture(scope="module")
def small(mnist):
    """3,000 training, 500 validation and 1,000 test images of real MNIST."""
    train, test = mnist.train, mnist.test
    return make_dataset(
        "mnist",
        train.images[:3500],
        train.labels[:3500],
        test.images[:1000],
        test.labels[:1000],
        mnist.classes,
        val_size=500,
    )


SETTINGS = TrainSettings(batch_size=100, seed=3)


def test_pruned_weights_stay_zero_or_keep_learning():
    torch.manual_seed(0)
    model = add_masks(build_model("lenet300"))
    mask = torch.rand(300, 784) < 0.2
    apply_masks(model, {"1": mask})
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        enforce_masks(model)
    assert torch.all(model[1].weight_orig[~mask] == 0)
    assert torch.equal(model[1].weight, model[1].weight_orig * mask)
    set_straight_through(model, True)
    before = model[1].weight_orig.detach().clone()
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert torch.count_nonzero(model[1].weight_orig.grad[~mask]) > 0  # reaches pruned weights
    optimizer.step()
    assert not torch.equal(model[1].weight_orig[~mask], before[~mask])
    model(x)  # the forward pre-hook recomputes the effective weight
    assert torch.equal(model[1].weight, model[1].weight_orig * mask)  # still masked forward
    set_straight_through(model, False)
    assert torch.all(model[1].weight_orig[~mask] == 0)


def test_magnitude_reaches_per_layer_and_global_sparsity():
    torch.manual_seed(0)
    weights = {"a": torch.randn(50, 40), "b": torch.randn(10, 50)}
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    scores = {n: w.abs() for n, w in weights.items()}
    per_layer = allocate(scores, masks, {"a": 0.9, "b": 0.5})
    assert int(per_layer["a"].sum()) == 200 and int(per_layer["b"].sum()) == 250
    kept = per_layer["a"]
    assert weights["a"].abs()[kept].min() >= weights["a"].abs()[~kept].max()
    both = allocate(scores, masks, 0.8)
    assert sum(int(m.sum()) for m in both.values()) == 500


def test_magnitude_run_and_checkpoint(small, tmp_path):
    config = MagnitudeConfig(
        dense_epochs=3,
        retrain_epochs=1,
        iterations=2,
        sparsity=(0.9, 0.8, 0.5),
        lr=0.1,
        retrain_lr_factor=0.5,
    )
    summary = prune_run(
        "lenet300", "mnist", "magnitude", config, SETTINGS, tmp_path / "m", data=small
    )
    kept = summary["kept_percent"]
    assert kept["1"] == pytest.approx(10.0, abs=0.01) and kept["5"] == pytest.approx(50.0)
    assert summary["dense_test_error"] < 0.2 and 0 < summary["test_error"] < 0.3
    network = load_network(tmp_path / "m" / "checkpoint.pt")  # analysable like any checkpoint
    assert network.chain == (True, True)
    assert network.layers[0].density == pytest.approx(0.1, abs=1e-4)
    saved = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert saved["compression"] == pytest.approx(summary["compression"])


def test_dns_splices_and_prunes(small, tmp_path):
    config = DNSConfig(dense_epochs=1, epochs=2, c=(1.0, 1.0, 0.5), gamma=1e-3)
    summary = prune_run("lenet300", "mnist", "dns", config, SETTINGS, tmp_path / "d", data=small)
    obj = torch.load(tmp_path / "d" / "checkpoint.pt", weights_only=True)
    snapshots = obj["extra"]["mask_history"]
    assert set(snapshots) == {"dense", "surgery"}
    assert all(bool(m.all()) for m in snapshots["dense"].values())
    assert 1 < summary["compression"] < 20
    state = obj["extra"]["method_state"]
    assert set(state["a"]) == {"1", "3", "5"} and all(
        0.9 * state["b"][n] == pytest.approx(1.1 * state["a"][n]) for n in state["a"]
    )
    # pruned weights went on learning (straight-through), so they are not all zero
    orig = obj["extra"]["model_state"]["1.weight_orig"]
    mask = obj["extra"]["model_state"]["1.weight_mask"].bool()
    assert torch.count_nonzero(orig[~mask]) > 0


def test_a_dns_checkpoint_loads_as_it_was_evaluated(small, tmp_path):
    config = DNSConfig(dense_epochs=1, epochs=1, c=(1.0, 1.0, 0.5), gamma=1e-3)
    summary = prune_run("lenet300", "mnist", "dns", config, SETTINGS, tmp_path / "d", data=small)
    path = tmp_path / "d" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)["extra"]["model_state"]
    assert torch.count_nonzero(state["1.weight_orig"][state["1.weight_mask"] == 0]) > 0
    model = add_masks(build_model("lenet300", 10))
    assert load_trained_state(model, path)["method"] == "dns"
    assert error_rate(model, small.test) == summary["test_error"]
    # a run started from it records the same error as its starting point
    after = prune_run(
        "lenet300", "mnist", "magnitude",
        MagnitudeConfig(dense_epochs=0, retrain_epochs=1, sparsity=(0.9,)), SETTINGS,
        tmp_path / "m", data=small, init=path,
    )  # fmt: skip
    assert after["init_test_error"] == summary["test_error"]


def test_random_masks_match_kept_fractions(small, tmp_path):
    summary = prune_run("lenet300", "mnist", "random", RandomConfig(kept=(0.05, 0.2, 0.5),
                        epochs=1), SETTINGS, tmp_path / "r", data=small)  # fmt: skip
    assert summary["kept_percent"]["1"] == pytest.approx(5.0, abs=0.01)
    like = RandomConfig(like=str(tmp_path / "r" / "checkpoint.pt"), epochs=1)
    other = prune_run(
        "lenet300",
        "mnist",
        "random",
        like,
        TrainSettings(batch_size=100, seed=4),
        tmp_path / "r2",
        data=small,
    )
    assert other["kept_percent"] == pytest.approx(summary["kept_percent"], abs=0.01)
    first = load_network(tmp_path / "r" / "checkpoint.pt").layers[0].mask
    second = load_network(tmp_path / "r2" / "checkpoint.pt").layers[0].mask
    assert not np.array_equal(first, second)  # another seed, another random mask


def interrupt_after_saves(monkeypatch, count: int):
    """Make the run's checkpoint writer raise KeyboardInterrupt right after its ``count``-th
    save (a kill at that point); returns a function that restores it."""
    import topoprune.train.run as run_module

    real_save = run_module.save_network
    calls = {"n": 0}

    def save(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == count:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "save_network", save)
    return lambda: monkeypatch.setattr(run_module, "save_network", real_save)


def same_weights(a_dir, b_dir) -> bool:
    a = torch.load(a_dir / "checkpoint.pt", weights_only=True)["extra"]["model_state"]
    b = torch.load(b_dir / "checkpoint.pt", weights_only=True)["extra"]["model_state"]
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_interrupt_reaches_the_same_result(small, tmp_path, monkeypatch):
    config = DNSConfig(dense_epochs=1, epochs=2, gamma=1e-3, schedule="cosine")
    full = prune_run("lenet300", "mnist", "dns", config, SETTINGS, tmp_path / "full", data=small)

    # saves: dense epoch, dense end, first surgery epoch; then the "kill"
    restore = interrupt_after_saves(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        prune_run("lenet300", "mnist", "dns", config, SETTINGS, tmp_path / "cut", data=small)
    restore()
    with pytest.raises(TopopruneError, match="pass --resume"):
        prune_run("lenet300", "mnist", "dns", config, SETTINGS, tmp_path / "cut", data=small)
    resumed = prune_run(
        "lenet300", "mnist", "dns", config, SETTINGS, tmp_path / "cut", data=small, resume=True
    )
    assert resumed["test_error"] == full["test_error"]
    assert resumed["kept_percent"] == full["kept_percent"]
    assert same_weights(tmp_path / "full", tmp_path / "cut")


def test_resume_at_a_stage_boundary(small, tmp_path, monkeypatch):
    config = MagnitudeConfig(dense_epochs=1, retrain_epochs=1, lr=0.05)
    full = prune_run(
        "lenet300", "mnist", "magnitude", config, SETTINGS, tmp_path / "full", data=small
    )
    restore = interrupt_after_saves(monkeypatch, 2)  # right after the dense stage ended
    with pytest.raises(KeyboardInterrupt):
        prune_run("lenet300", "mnist", "magnitude", config, SETTINGS, tmp_path / "cut", data=small)
    restore()
    resumed = prune_run(
        "lenet300",
        "mnist",
        "magnitude",
        config,
        SETTINGS,
        tmp_path / "cut",
        data=small,
        resume=True,
    )
    assert resumed["test_error"] == full["test_error"]
    assert same_weights(tmp_path / "full", tmp_path / "cut")


def test_cosine_schedule_decays_within_each_stage():
    stage = Stage("s", epochs=2, lr=0.1, lr_end=0.0)
    assert stage.lr_at(0, 100) == pytest.approx(0.1)
    assert stage.lr_at(50, 100) == pytest.approx(0.05)
    assert stage.lr_at(100, 100) == pytest.approx(0.0)
    rates = [stage.lr_at(i, 100) for i in range(100)]
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert Stage("s", epochs=2, lr=0.1).lr_at(70, 100) == 0.1  # constant


def test_methods_start_from_one_dense_run(small, tmp_path):
    dense = prune_run(
        "lenet300", "mnist", "dense", DenseConfig(epochs=1, lr=0.05), SETTINGS,
        tmp_path / "dense", data=small,
    )  # fmt: skip
    assert dense["compression"] == 1.0
    init = tmp_path / "dense" / "checkpoint.pt"
    pruned = prune_run(
        "lenet300", "mnist", "magnitude",
        MagnitudeConfig(dense_epochs=0, retrain_epochs=1, sparsity=(0.9,)), SETTINGS,
        tmp_path / "magnitude", data=small, init=init,
    )  # fmt: skip
    # no training before pruning: the dense error is the shared model's
    assert pruned["dense_test_error"] == dense["test_error"] == pruned["init_test_error"]
    assert pruned["init"]["method"] == "dense"
    assert pruned["compression"] == pytest.approx(10, rel=1e-3)
    with pytest.raises(TopopruneError, match="written for lenet300"):
        prune_run(
            "mlp1024", "mnist", "dns", DNSConfig(dense_epochs=0, epochs=1), SETTINGS,
            tmp_path / "other", data=small, init=init,
        )  # fmt: skip


def test_resume_refuses_other_runs(small, tmp_path):
    config = MagnitudeConfig(dense_epochs=1, retrain_epochs=0)
    prune_run("lenet300", "mnist", "magnitude", config, SETTINGS, tmp_path / "x", data=small)
    with pytest.raises(TopopruneError, match="different model"):
        prune_run(
            "mlp1024",
            "mnist",
            "magnitude",
            config,
            SETTINGS,
            tmp_path / "x",
            data=small,
            resume=True,
        )
    with pytest.raises(TopopruneError, match="different config"):
        prune_run(
            "lenet300",
            "mnist",
            "magnitude",
            MagnitudeConfig(dense_epochs=2),
            SETTINGS,
            tmp_path / "x",
            data=small,
            resume=True,
        )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MagnitudeConfig(sparsity=(1.0,)), r"sparsity must be in \[0, 1\), got 1"),
        (lambda: MagnitudeConfig(sparsity=(-0.1,)), r"must be in \[0, 1\)"),
        (lambda: MagnitudeConfig(lr=0.0), r"lr must be in \(0, inf\)"),
        (lambda: DNSConfig(lr=-1.0), r"lr must be in \(0, inf\)"),
        (lambda: DNSConfig(dense_epochs=-1), r"dense-epochs must be in \[0, inf\)"),
        (lambda: RandomConfig(kept=(0.0,)), r"kept must be in \(0, 1\]"),
        (lambda: DNSConfig(schedule="step"), "schedule must be one of constant, cosine"),
        (lambda: MagnitudeConfig(allocation="erk", sparsity=(0.9, 0.5)), "takes one sparsity"),
    ],
)
def test_bad_hyper_parameters_cannot_be_built(make, message):
    with pytest.raises(TopopruneError, match=message):
        make()


def test_per_layer_values_must_match_the_layers(small, tmp_path):
    config = MagnitudeConfig(sparsity=(0.5, 0.5))
    with pytest.raises(TopopruneError, match="give 1 value or 3"):
        prune_run("lenet300", "mnist", "magnitude", config, SETTINGS, tmp_path / "bad", data=small)


def test_cli_names_and_errors(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["prune", "--model", "vgg", "--dataset", "mnist", "--method", "dns", "--out", "x"])
    assert "invalid choice: 'vgg'" in capsys.readouterr().err
    code = main(
        [
            "prune",
            "--model",
            "lenet300",
            "--dataset",
            "mnist",
            "--method",
            "magnitude",
            "--out",
            str(tmp_path / "o"),
            "--sparsity",
            "1.5",
            "--quiet",
        ]
    )
    assert code == 2
    assert "must be in [0, 1)" in capsys.readouterr().err
    code = main(
        [
            "prune",
            "--model",
            "cnn_cifar",
            "--dataset",
            "mnist",
            "--method",
            "dns",
            "--out",
            str(tmp_path / "o2"),
        ]
    )
    assert code == 2 and "takes (3, 32, 32) inputs" in capsys.readouterr().err


def test_regrow_gives_pruned_connections_back(small, tmp_path):
    config = MagnitudeConfig(dense_epochs=1, retrain_epochs=1, sparsity=(0.9,))
    first = prune_run("lenet300", "mnist", "magnitude", config, SETTINGS, tmp_path / "a",
                      data=small)  # fmt: skip
    init = tmp_path / "a" / "checkpoint.pt"
    model = add_masks(build_model("lenet300", 10))
    state = torch.load(init, weights_only=True)["extra"]["model_state"]
    model.load_state_dict(state)
    pruned = sum(int((m == 0).sum()) for k, m in state.items() if k.endswith("weight_mask"))
    assert regrow_connections(model, "zero", seed=0) == pruned
    for name, module in model.named_modules():
        if hasattr(module, "weight_mask"):
            assert bool(module.weight_mask.all())
            was_pruned = state[f"{name}.weight_mask"] == 0
            assert bool((module.weight_orig[was_pruned] == 0).all())
    # task B (here the same task): everything trains, then is pruned again
    again = MagnitudeConfig(dense_epochs=2, lr=0.1, retrain_epochs=1, sparsity=(0.9,))
    second = prune_run("lenet300", "mnist", "magnitude", again, SETTINGS, tmp_path / "b",
                       data=small, init=init, regrow="zero")  # fmt: skip
    assert second["regrown"] == pruned and second["regrow"] == "zero"
    before = load_network(init)
    after = load_network(tmp_path / "b" / "checkpoint.pt")
    created = sum(int((b.mask & ~a.mask).sum()) for a, b in zip(before.layers, after.layers))
    assert created > 1000 and second["compression"] == pytest.approx(first["compression"], rel=1e-3)
    with pytest.raises(TopopruneError, match="regrow needs init"):
        prune_run("lenet300", "mnist", "magnitude", config, SETTINGS, tmp_path / "c",
                  data=small, regrow="zero")  # fmt: skip
    with pytest.raises(TopopruneError, match="regrow must be one of zero, small"):
        regrow_connections(model, "large", seed=0)


def test_a_checkpoint_starts_a_run_that_leaves_some_layers_dense(small, tmp_path):
    config = DNSConfig(dense_epochs=1, epochs=1, c=(1.0, 1.0, 0.5), gamma=1e-3)
    summary = prune_run("lenet300", "mnist", "dns", config, SETTINGS, tmp_path / "d", data=small)
    path = tmp_path / "d" / "checkpoint.pt"
    model = add_masks(build_model("lenet300", 10), names=["1", "3"])  # layer 5 left dense
    load_trained_state(model, path)
    assert error_rate(model, small.test) == summary["test_error"]  # W * M became layer 5's W
