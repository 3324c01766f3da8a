"""The structured study in quick mode (LeNet-5 with BatchNorm on 1000 training images, one seed,
one epoch per stage): structure and the invariants that hold whatever the training."""

import csv
import io

import pytest

from topoprune.cli import main
from topoprune_studies.structured import kept_widths, matched_sparsity


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("structured")
    command = ["study", "run", "structured", "--quick", "--out", str(out), "--quiet",
               "--device", "cpu"]  # fmt: skip
    assert main(command) == 0
    return out


def rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_table_has_the_issue_columns_and_every_method(quick):
    table = rows(quick / "table.csv")
    for column in ("model", "method", "seeds", "params", "flops", "speedup_b128",
                   "test_error_mean", "test_error_std"):  # fmt: skip
        assert column in table[0]
    methods = [r["method"] for r in table]
    assert methods == ["dense", "filter-l1", "taylor-fm", "channel-lasso", "ssl", "slimming",
                       "magnitude", "magnitude (CSR)"]  # fmt: skip
    by = {r["method"]: r for r in table}
    # the control: the dense model trained as long as the methods fine-tune
    continued = [float(r["test_error"]) for r in rows(quick / "runs.csv")
                 if r["method"] == "dense-continued"]  # fmt: skip
    assert float(by["filter-l1"]["dense_continued_error_mean"]) == pytest.approx(continued[0])
    assert float(by["dense"]["speedup_b128"]) == 1 and float(by["dense"]["flops_ratio"]) == 1
    # every compacted model computes its masked model's outputs
    assert all(float(r["max_abs_difference"]) < 1e-4 for r in table)
    # filter-l1's widths are its recipe's; fewer filters, fewer parameters and MACs
    assert by["filter-l1"]["filters"] == "5-15-200"
    assert float(by["filter-l1"]["params"]) < float(by["dense"]["params"])
    assert float(by["filter-l1"]["flops_ratio"]) > 5
    # the unstructured model keeps filter-l1's parameter count, as non-zeros in dense layers
    assert float(by["magnitude"]["params"]) == float(by["dense"]["params"])
    nonzero = float(by["magnitude"]["params_nonzero"])
    assert nonzero == pytest.approx(float(by["filter-l1"]["params"]), rel=0.01)


def test_other_structures(quick):
    others = rows(quick / "others.csv")
    assert [(r["model"], r["method"]) for r in others] == [
        ("lstm_mnist", "dense"), ("lstm_mnist", "dense-continued"), ("lstm_mnist", "iss-lstm"),
        ("resnet_mnist", "dense"), ("resnet_mnist", "dense-continued"),
        ("resnet_mnist", "epsilon-resnet"), ("lenet300_prelu", "layer-fold")]  # fmt: skip
    for row in others:
        if not row["method"].startswith("dense"):
            assert int(row["kept"]) <= int(row["of"])
            assert float(row["max_abs_difference"]) < 1e-4


def test_speed_and_topology_rows(quick):
    speed = rows(quick / "speed.csv")
    assert {r["method"] for r in speed} >= {"dense", "magnitude (CSR)"}
    assert all(float(r["latency_b1_ms"]) > 0 and float(r["latency_b128_ms"]) > 0 for r in speed)
    topology = rows(quick / "topology.csv")
    layer = {(r["method"], r["layer"]): r for r in topology}
    # a structured result is a smaller complete bipartite graph: filter-l1 keeps 15 of conv2's
    # 50 filters, each connected to all 20 input channels, of which 5 are alive (5 x 15 x 25
    # weights on an input-to-output path)
    conv2 = layer[("filter-l1", "4.weight")]
    assert int(conv2["outputs_alive"]) == 15
    assert int(conv2["fan_in_min"]) == int(conv2["fan_in_max"]) == 20
    assert int(conv2["weights_on_paths"]) == 5 * 15 * 25
    # the unstructured model at the same count keeps more channels alive
    assert int(layer[("magnitude", "4.weight")]["outputs_alive"]) > 15
    assert (quick / "summary.json").exists() and (quick / "tables.md").exists()


def test_matched_sparsity_leaves_filter_l1s_weights():
    widths = kept_widths("lenet5", (0.75, 0.7, 0.6))
    assert widths == [5, 15, 200]
    sparsity = matched_sparsity("lenet5", widths)
    # conv1 5 x 1 x 25, conv2 15 x 5 x 25, fc1 200 x (15 x 16), fc2 10 x 200
    kept = [5 * 25, 15 * 5 * 25, 200 * 240, 10 * 200]
    sizes = [20 * 25, 50 * 20 * 25, 500 * 800, 10 * 500]
    assert sparsity == pytest.approx([1 - k / s for k, s in zip(kept, sizes, strict=True)])


def test_figures(quick, tmp_path):
    from topoprune_studies.structured import figures

    written = figures(quick, tmp_path)
    assert [p.name for p in written] == ["error-speedup.png", "error-kept.png"]
    assert all(p.stat().st_size for p in written)


def test_the_benchmark_times_the_studys_models(quick, tmp_path, capsys):
    import json

    from benchmarks.structured_speed import main as bench

    out = tmp_path / "speed.json"
    assert bench(["--results", str(quick), "--rounds", "1", "--repeats", "1",
                  "--out", str(out)]) == 0  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert {r["method"] for r in rows} >= {"dense", "filter-l1", "magnitude (CSR)"}
    assert "filter-l1" in capsys.readouterr().out


def test_the_benchmark_needs_the_studys_runs(tmp_path):
    from benchmarks.structured_speed import main as bench

    with pytest.raises(SystemExit) as exit_info:
        bench(["--results", str(tmp_path)])
    assert exit_info.value.code == 2
