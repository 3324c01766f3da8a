"""Per-layer sensitivity analysis: exact answers on a hand-built masked MLP (the constant
predictor at 100%, kept counts, the highest-scoring weights kept), the model left bit for bit as
given, score methods that draw data or cannot score, ``sparsities_for_error``, and
``topoprune sensitivity`` on a small real run (files, rows, the --sparsity flag, bad input)."""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topoprune.cli import build_parser, config_from_args, main
from topoprune.data.images import Split
from topoprune.errors import TopopruneError
from topoprune.prune.masks import add_masks, apply_masks
from topoprune.prune.method import hp
from topoprune.prune.methods import METHODS, MagnitudeConfig
from topoprune.prune.scoring import ScoreConfig, ScoreMethod
from topoprune.train.data import SplitBatches
from topoprune.train.optim import error_rate
from topoprune.train.sensitivity import layer_sensitivity, sparsities_for_error


def tiny() -> tuple[nn.Module, Split]:
    """A masked 4-3-2 MLP and 40 labelled examples, all from a fixed seed."""
    generator = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    add_masks(model)
    x = torch.randn(40, 4, generator=generator)
    y = torch.randint(0, 2, (40,), generator=generator)
    return model, Split(x, y)


def snapshot(model: nn.Module) -> dict:
    """Every tensor of the model as raw bytes (bit for bit: -0.0 differs from 0.0)."""
    state = {k: v.detach().numpy().tobytes() for k, v in model.state_dict().items()}
    grads = {
        n: None if p.grad is None else p.grad.numpy().tobytes() for n, p in model.named_parameters()
    }
    modules = list(model.modules())
    return {
        "state": state,
        "grads": grads,
        "training": [m.training for m in modules],
        "straight_through": [getattr(m, "straight_through", None) for m in modules],
        "weight_views": [id(vars(m).get("weight")) for m in modules],
    }


def test_pruning_a_whole_layer_gives_the_constant_predictor_error():
    model, split = tiny()
    rows = layer_sensitivity(model, split, [1.0])
    full = {r["layer"]: r for r in rows if r["sparsity"] == 1.0}
    first, last = model[0], model[2]
    # layer 0 at zero: every input gives last(relu(b0)); layer 2 at zero: every input gives b2
    constant = {
        "0": last.weight_orig @ torch.relu(first.bias) + last.bias,
        "2": last.bias,
    }
    for layer, outputs in constant.items():
        predicted = int(outputs.argmax())
        assert full[layer]["kept"] == 0
        assert full[layer]["error"] == int((split.labels != predicted).sum()) / len(split)


def test_kept_counts_are_exact_and_pruned_weights_stay_pruned():
    model, split = tiny()
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, :2] = mask[2, 1:3] = False  # layer 0 starts with 8 of 12 weights
    apply_masks(model, {"0": mask})
    rows = layer_sensitivity(model, split, [0.5, 0.0, 1.0, 0.25, 0.9, 0.5])
    got = [(r["layer"], r["sparsity"], r["kept"]) for r in rows]
    assert got == [
        ("0", 1 - 8 / 12, 8),  # baseline: the layer as it is
        ("0", 0.0, 8),  # below the current sparsity: the current state
        ("0", 0.25, 8),
        ("0", 0.5, 6),
        ("0", 0.9, 1),  # round(1.2)
        ("0", 1.0, 0),
        ("2", 0.0, 6),
        ("2", 0.0, 6),
        ("2", 0.25, 4),  # round(4.5), as allocate rounds
        ("2", 0.5, 3),
        ("2", 0.9, 1),
        ("2", 1.0, 0),
    ]
    baseline = rows[0]["error"]
    assert rows[1]["error"] == rows[2]["error"] == baseline == error_rate(model, split)


def test_each_row_is_the_error_with_the_highest_scoring_weights_kept():
    model, split = tiny()
    rows = layer_sensitivity(model, split, [0.3, 0.6, 0.8])
    for row in rows:
        by_hand, _ = tiny()  # the same model (masked models cannot be deep-copied)
        module = dict(by_hand.named_modules())[row["layer"]]
        scores = (module.weight_orig * module.weight_mask).abs().detach()
        order = scores.flatten().argsort(descending=True)[: row["kept"]]
        mask = torch.zeros(scores.numel(), dtype=torch.bool)
        mask[order] = True
        apply_masks(by_hand, {row["layer"]: mask.view_as(scores)})
        assert row["error"] == error_rate(by_hand, split), row


def test_the_model_is_left_bit_for_bit_as_given_and_runs_repeat():
    model, split = tiny()
    with torch.no_grad():
        model[0].weight_orig[0, 0] = -0.75  # pruning multiplies it by 0: -0.0, not 0.0
    model[2].weight_orig.grad = torch.full((2, 3), 0.5)
    model[2].straight_through = True  # DNS's mode: the forward uses W * M
    grad = model[2].weight_orig.grad
    model.eval()
    before = snapshot(model)
    first = layer_sensitivity(model, split, [0.5, 0.9, 1.0])
    assert snapshot(model) == before
    assert model[2].weight_orig.grad is grad and model[0].weight_orig.grad is None
    assert layer_sensitivity(model, split, [0.5, 0.9, 1.0]) == first


def test_layers_and_batches_of_any_kind():
    model, split = tiny()
    batches = DataLoader(TensorDataset(split.images, split.labels), batch_size=7)
    on_split = layer_sensitivity(model, split, [0.5], layers=["2"])
    assert [r["layer"] for r in on_split] == ["2", "2"]
    assert layer_sensitivity(model, batches, [0.5], layers=["2"]) == on_split
    with pytest.raises(TopopruneError, match="no weight layer matches 'fc'"):
        layer_sensitivity(model, split, [0.5], layers=["fc"])
    with pytest.raises(TopopruneError, match=r"sparsities must be in \[0, 1\], got 1.5"):
        layer_sensitivity(model, split, [0.5, 1.5])
    with pytest.raises(TopopruneError, match="no masks"):
        layer_sensitivity(nn.Sequential(nn.Linear(2, 2)), split, [0.5])


@dataclass(frozen=True)
class GradientConfig(ScoreConfig):
    scoring_examples: int = hp("training examples drawn for the scores", 16, low=1)


class GradientScores(ScoreMethod):
    """|w x dL/dw| on drawn training examples (SNIP-like): needs data, leaves gradients."""

    Config = GradientConfig
    seen: list[torch.Tensor] = []  # noqa: RUF012  the labels drawn, for the test

    def scores(self, ctx):
        for _, module in ctx.pruned_modules():
            module.weight_orig.grad = None
        for inputs, targets in ctx.scoring_batches(self.config.scoring_examples):
            type(self).seen.append(targets)
            ctx.loss_fn(ctx.model(inputs), targets).backward()
        return {
            n: (m.weight_orig.grad * m.weight_orig).abs().detach() for n, m in ctx.pruned_modules()
        }


class MovementScores(ScoreMethod):
    """Scores gathered while training: unusable on a trained model alone."""

    def scores(self, ctx):
        return ctx.state.method_state["movement"]


@pytest.fixture
def test_methods(monkeypatch):
    monkeypatch.setitem(METHODS._items, "test-gradient", GradientScores)
    monkeypatch.setitem(METHODS._items, "test-movement", MovementScores)
    GradientScores.seen = []


@pytest.mark.usefixtures("test_methods")
def test_a_score_method_draws_training_examples_from_the_seed():
    model, split = tiny()
    train = Split(
        torch.randn(100, 4, generator=torch.Generator().manual_seed(1)),
        torch.randint(0, 2, (100,), generator=torch.Generator().manual_seed(2)),
    )
    before = snapshot(model)
    rows = layer_sensitivity(
        model,
        split,
        [0.5, 0.9],
        score="test-gradient",
        scoring_batches=train,
        scoring_examples=30,
        seed=4,
    )
    assert snapshot(model) == before  # the backward pass's gradients are gone
    drawn = torch.cat(GradientScores.seen)
    expected = torch.cat([y for _, y in SplitBatches(train, 256).draw(30, 4 * 1_000_003)])
    assert len(drawn) == 30 and torch.equal(drawn, expected)
    again = layer_sensitivity(
        model,
        split,
        [0.5, 0.9],
        score="test-gradient",
        scoring_batches=train,
        scoring_examples=30,
        seed=4,
    )
    assert again == rows
    assert [r["kept"] for r in rows] == [12, 6, 1, 6, 3, 1]


@pytest.mark.usefixtures("test_methods")
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"score": "dns"}, "method 'dns' does not score weights .*score with one of: .*magnitude"),
        ({"score": "nope"}, "unknown pruning method 'nope'"),
        ({"score": "test-movement"}, "cannot be computed from a trained model alone: .*KeyError"),
        ({"score": "test-gradient"}, "it draws training examples; give the training data"),
        ({"scoring_examples": 10}, "score 'magnitude' draws no training examples"),
        ({"score_config": {"curvature": "x"}}, "has no hyper-parameter curvature"),
    ],
)
def test_scores_that_cannot_be_used_are_clear_errors(options, message):
    model, split = tiny()
    before = snapshot(model)
    with pytest.raises(TopopruneError, match=message):
        layer_sensitivity(model, split, [0.5], **options)
    assert snapshot(model) == before


def test_sparsities_for_error_reads_each_curve_up_to_the_limit():
    rows = [
        {"layer": "a", "sparsity": 0.2, "kept": 80, "error": 0.7},
        {"layer": "a", "sparsity": 0.0, "kept": 80, "error": 0.7},  # below the current: same
        {"layer": "a", "sparsity": 0.5, "kept": 50, "error": 0.8},  # 0.7 + 0.1 in floats < 0.8
        {"layer": "a", "sparsity": 0.9, "kept": 10, "error": 0.9},
        {"layer": "b", "sparsity": 0.5, "kept": 2, "error": 0.5},
        {"layer": "b", "sparsity": 0.75, "kept": 1, "error": 0.4},
        {"layer": "b", "sparsity": 0.9, "kept": 4, "error": 0.4},  # the most kept: baseline
    ]
    assert sparsities_for_error(rows, 0.1) == {"a": 0.5, "b": 0.9}
    assert sparsities_for_error(rows, 0.0) == {"a": 0.2, "b": 0.9}
    assert sparsities_for_error([], 0.1) == {}
    with pytest.raises(TopopruneError, match="max error increase must be >= 0"):
        sparsities_for_error(rows, -0.01)


# ---- the command -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(mnist, tmp_path_factory):
    """A real lenet300 run: one dense epoch on 2,000 training images, magnitude to 50%."""
    from topoprune.train.engine import TrainSettings
    from topoprune.train.run import prune_run

    small = dataclasses.replace(
        mnist,
        train=Split(mnist.train.images[:2000], mnist.train.labels[:2000]),
        test=Split(mnist.test.images[:1000], mnist.test.labels[:1000]),
    )
    out = tmp_path_factory.mktemp("sensitivity") / "run"
    config = MagnitudeConfig(dense_epochs=1, retrain_epochs=0, sparsity=(0.5,), lr=0.05)
    summary = prune_run(
        "lenet300", "mnist", "magnitude", config, TrainSettings(batch_size=64), out, data=small
    )
    return out, summary


SIZES = {"1": 235200, "3": 30000, "5": 1000}


def test_the_command_writes_curves_and_the_prune_flags(run, tmp_path, capsys):
    out, summary = run
    folder = tmp_path / "s"
    code = main(
        [
            "sensitivity",
            str(out / "checkpoint.pt"),
            "--sparsities",
            "0.9,0.5,0.99",
            "--max-error-increase",
            "0.02",
            "--out",
            str(folder),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    with (folder / "sensitivity.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["layer"], float(r["sparsity"]), int(r["kept"])) for r in rows] == [
        (layer, s, round(size * (1 - max(s, 0.5))))
        for layer, size in SIZES.items()
        for s in (0.5, 0.5, 0.9, 0.99)
    ]
    errors = [float(r["error"]) for r in rows]
    assert errors[0] == summary["val_error"]  # the baseline is the run's validation error
    assert errors[-1] > errors[0]  # 99% of the output layer gone costs something
    assert (folder / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chosen = json.loads((folder / "sparsities.json").read_text())
    assert set(chosen["sparsities"]) == set(SIZES)
    assert all(s in (0.5, 0.9, 0.99) for s in chosen["sparsities"].values())
    flags = chosen["prune_flags"]
    assert flags in captured.out and "layer" in captured.out
    # the printed flags are what topoprune prune --method magnitude takes
    argv = [
        "prune",
        "--model",
        "lenet300",
        "--dataset",
        "mnist",
        "--method",
        "magnitude",
        "--out",
        "x",
        *flags.split(),
    ]
    config = config_from_args(MagnitudeConfig, build_parser(argv).parse_args(argv))
    assert config.sparsity == tuple(chosen["sparsities"][layer] for layer in SIZES)


def test_the_command_refuses_bad_input_with_one_line_and_no_traceback(run, tmp_path, capsys):
    out, _ = run
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    torch.save(argparse_namespace(), tmp_path / "hostile.pt")
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "state_dict.pt")
    own = tmp_path / "own"
    from topoprune.train.run import prune_model

    prune_model(
        nn.Sequential(nn.Linear(4, 2)),
        "magnitude",
        MagnitudeConfig(dense_epochs=0, retrain_epochs=0, sparsity=(0.5,)),
        train=DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), 4),
        out=own,
    )
    ckpt = str(out / "checkpoint.pt")
    cases = [
        ([str(tmp_path / "missing.pt")], "missing.pt: no such file"),
        ([str(tmp_path / "garbage.pt")], "garbage.pt: (refusing to load|corrupt)"),
        ([str(tmp_path / "hostile.pt")], "hostile.pt: refusing to load"),
        ([str(tmp_path / "state_dict.pt")], "not a topoprune training checkpoint"),
        ([str(own / "checkpoint.pt")], "written for model 'Sequential', not a zoo model"),
        ([ckpt, "--sparsities", "0.5,1"], r"sparsities must be in \[0, 1\)"),
        ([ckpt, "--max-error-increase", "-1"], "max error increase must be >= 0"),
        ([ckpt, "--score", "dns"], "method 'dns' does not score weights"),
    ]
    for args, message in cases:
        assert main(["sensitivity", *args, "--out", str(tmp_path / "o")]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("topoprune: error: ") and err.count("\n") == 1, err
        assert __import__("re").search(message, err), err
    assert not (tmp_path / "o").exists()


def argparse_namespace():
    import argparse

    return argparse.Namespace(code="a class the weights-only loader refuses")
