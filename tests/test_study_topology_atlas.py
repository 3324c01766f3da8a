"""The topology atlas in quick mode: every table from one small grid, the controls' masks what
they claim to be, exact answers for the paired statistics; not the study's numbers."""

import csv
import json

import numpy as np
import pytest

from topoprune.cli import main
from topoprune.io import load_network
from topoprune_studies import topology_atlas as atlas


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("topology_atlas")
    command = ["study", "run", "topology-atlas", "--quick", "--out", str(out), "--quiet",
               "--device", "cpu", "--jobs", "2"]  # fmt: skip
    assert main(command) == 0
    return out, command


def _csv(path):
    return list(csv.DictReader(path.open()))


def _checkpoints(out):
    """Each run's checkpoint by its key (the folder name without the digest)."""
    return {json.loads(p.read_text())["run_spec"]["key"]: p.parent / "checkpoint.pt"
            for p in (out / "runs").glob("*/summary.json")}  # fmt: skip


def test_tables_cover_the_grid(quick):
    out, _ = quick
    config = atlas.QUICK
    table = _csv(out / "table.csv")
    assert [r["method"] for r in table] == list(config.methods)
    for row in table:
        assert int(row["seeds"]) == len(config.seeds)
        assert 0 <= float(row["test_error_mean"]) <= 100
        assert float(row["measured_sparsity_mean"]) == pytest.approx(0.9, abs=0.002)
        # effective sparsity counts only connections on an input-to-output path
        assert float(row["effective_sparsity_mean"]) >= float(row["measured_sparsity_mean"]) - 1e-12
        for layer in ("input", "1", "3", "5"):
            for mode in config.modes:
                assert 0 <= int(row[f"{layer}_{mode}_sf"]) <= int(row[f"{layer}_{mode}_plausible"])
    layers = _csv(out / "layers.csv")
    assert len(layers) == len(config.methods) * 4 * len(config.modes)
    for row in layers:  # a scale-free verdict needs a fit that beats the random null
        assert row["scale_free"] == "False" or row["beats_null"] == "True"
    controls = _csv(out / "controls.csv")
    assert {(r["method"], r["control"]) for r in controls} == {
        (m, c) for m in config.methods for c in ("mask", "rewired", "er", "pa")
    } | {("-", "er-flat")}
    for row in controls:
        if row["control"] == "mask":
            assert float(row["minus_mask_mean"]) == 0
    assert [r["control"] for r in _csv(out / "tests.csv")] == [c for c, _, _ in atlas.COMPARISONS]


def test_controls_train_the_masks_they_claim(quick):
    out, _ = quick
    paths = _checkpoints(out)
    for method in atlas.QUICK.methods:
        key = f"lenet300-mnist-{method}-s90-seed0"
        found = load_network(paths[key])
        for control in ("mask", "rewired", "er", "pa"):
            made = load_network(paths[f"{key}-{control}"])
            moved = [(a.mask != b.mask).any() for a, b in zip(found.layers, made.layers)]
            assert any(moved) == (control != "mask")  # (a full layer cannot be rewired)
            for a, b in zip(found.layers, made.layers, strict=True):
                assert a.nnz == b.nnz  # every control keeps each layer's connection count
                if control == "mask":
                    np.testing.assert_array_equal(a.mask, b.mask)
                if control == "rewired":  # every in- and out-degree kept
                    np.testing.assert_array_equal(a.mask.sum(0), b.mask.sum(0))
                    np.testing.assert_array_equal(a.mask.sum(1), b.mask.sum(1))
    flat = load_network(paths["lenet300-mnist-er-flat-s90-seed0"])
    assert [round(layer.density, 3) for layer in flat.layers] == [0.1, 0.1, 0.1]


def test_rerun_submits_nothing_and_rebuilds_the_same_tables(quick, capsys):
    out, command = quick
    before = {name: (out / name).read_text() for name in ("table.csv", "controls.csv",
                                                            "layers.csv", "tests.csv")}  # fmt: skip
    assert main(command) == 0
    assert "0 runs this time" in capsys.readouterr().out
    assert {name: (out / name).read_text() for name in before} == before
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["task_seconds"]) == {"train", "measure", "control"}


def test_figures_are_drawn(quick, tmp_path):
    out, _ = quick
    assert main(["figures", "--study", "topology-atlas", "--results", str(out),
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "accuracy_vs_sparsity.png",
        "controls.png",
        "heat_map_lenet300_clauset.png",
        "heat_map_lenet300_window.png",
    ]


def test_paired_tests_exact_answers():
    # two methods, two seeds: rewired is 1 point worse than mask in every pair but one; one
    # er-flat run per seed is compared with that seed's mean over the methods' er runs
    rows = [
        ("a", 0, "mask", 2.0), ("a", 0, "rewired", 3.0), ("a", 1, "mask", 2.5),
        ("a", 1, "rewired", 3.5), ("b", 0, "mask", 4.0), ("b", 0, "rewired", 4.0),
        ("b", 1, "mask", 1.0), ("b", 1, "rewired", 3.0),
        ("a", 0, "er", 5.0), ("b", 0, "er", 7.0), ("a", 1, "er", 6.0), ("b", 1, "er", 6.0),
        ("-", 0, "er-flat", 8.0), ("-", 1, "er-flat", 5.0),
    ]  # fmt: skip
    controls = [{"model": "m", "data": "d", "method": method, "sparsity": 0.98, "seed": seed,
                 "control": control, "test_error": error}
                for method, seed, control, error in rows]  # fmt: skip
    tests = {(r["control"], r["baseline"]): r for r in atlas.paired_tests(controls)}
    assert set(tests) == {("rewired", "mask"), ("er", "mask"), ("rewired", "er"),
                          ("er-flat", "er")}  # fmt: skip
    row = tests[("rewired", "mask")]
    assert row["pairs"] == 4 and row["diff_mean"] == pytest.approx(1.0)  # (1 + 1 + 0 + 2) / 4
    assert (row["control_better"], row["baseline_better"]) == (0, 3)
    # sample sd sqrt(2/3); t = 1 / (sd / 2) = 2.449 with 3 degrees of freedom
    assert row["diff_std"] == pytest.approx((2 / 3) ** 0.5)
    assert row["t_test_p"] == pytest.approx(0.0917, abs=1e-4)
    assert row["wilcoxon_p"] == pytest.approx(0.25)  # 3 positive ranks of 3: exact 2 / 2^3
    flat = tests[("er-flat", "er")]  # seed 0: 8 - 6 = 2; seed 1: 5 - 6 = -1
    assert (flat["pairs"], flat["diff_mean"]) == (2, pytest.approx(0.5))
    assert (flat["control_better"], flat["baseline_better"]) == (1, 1)
    table = {(r["method"], r["control"]): r for r in atlas.control_table(controls)}
    assert (table[("a", "rewired")]["minus_mask_mean"], table[("a", "rewired")]["minus_mask_std"],
            table[("a", "rewired")]["minus_mask_t_test_p"]) == (1.0, 0.0, None)  # fmt: skip
    # b: differences 0 and 2, mean 1, sample sd sqrt(2), t = 1 with 1 degree of freedom: p 0.5
    assert table[("b", "rewired")]["minus_mask_t_test_p"] == pytest.approx(0.5)
    assert table[("-", "er-flat")]["minus_mask_mean"] is None
    assert table[("-", "er-flat")]["test_error_std"] == pytest.approx(4.5**0.5)


def test_mask_control_starts_from_the_seeds_initial_weights(tmp_path):
    import torch

    from topoprune.models import build_model
    from topoprune_studies._runs import train

    method = train(
        tmp_path / "method",
        {},
        model="lenet300",
        method="snip",
        seed=3,
        device="cpu",
        train_subset=200,
        config=atlas._config("snip", {"sparsity": (0.9,), "retrain_epochs": 0}),
    )
    control = train(tmp_path / "control", {"run": method}, model="lenet300",
                    method="fixed-masks", seed=3, device="cpu", train_subset=200,
                    from_runs={"masks": "run"},
                    config=atlas._config("fixed-masks", {"epochs": 0}))  # fmt: skip
    torch.manual_seed(3)
    start = build_model("lenet300", 10).state_dict()
    saved = torch.load(control["checkpoint"], weights_only=True)
    assert set(saved["masks"]) == {"1.weight", "3.weight", "5.weight"}
    for name, mask in saved["masks"].items():  # the kept weights are the seed's initial ones
        kept = mask.bool()
        assert 0 < kept.sum() < kept.numel()
        torch.testing.assert_close(saved["weights"][name][kept], start[name][kept])


def test_unknown_preset_is_a_clear_error(capsys):
    assert main(["study", "run", "topology-atlas", "--preset", "huge"]) == 2
    assert "its presets: large" in capsys.readouterr().err


@pytest.mark.parametrize("kept", [0.1, 0.02])
def test_sparsity_targets_in_each_methods_own_terms(kept):
    import torch

    from topoprune.prune.lottery import kept_after
    from topoprune.prune.sparse_evolution import erdos_renyi_density

    shapes = atlas.weight_shapes("lenet300")
    sizes = np.array([np.prod(s) for s in shapes])
    assert shapes == ((300, 784), (100, 300), (10, 100))
    epsilon = atlas.set_epsilon(shapes, kept)  # SET's Erdos-Renyi densities, capped at 1
    densities = [erdos_renyi_density(torch.Size(s), epsilon) for s in shapes]
    assert np.dot(densities, sizes) / sizes.sum() == pytest.approx(kept, rel=1e-9)
    rate = atlas.lottery_rate(shapes, kept, 4)  # the output layer at half the rate
    left = [kept_after(rate, 4)] * 2 + [kept_after(rate / 2, 4)]
    assert np.dot(left, sizes) / sizes.sum() == pytest.approx(kept, rel=1e-9)
