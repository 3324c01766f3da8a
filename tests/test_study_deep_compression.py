"""The deep-compression study in quick mode (LeNet-300-100 on 2000 training images, one seed):
structure and the invariants that hold whatever the training, not paper numbers."""

import csv
import io
import json

import pytest

from topoprune.cli import main


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("deep-compression")
    assert main(command(out)) == 0
    return out


def command(out):
    return ["study", "run", "deep-compression", "--quick", "--out", str(out), "--quiet",
            "--device", "cpu"]  # fmt: skip


def rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_table_has_the_issue_columns_and_every_stage(quick):
    table = rows(quick / "table.csv")
    for column in ("model", "stage", "bytes", "ratio", "test_error_mean", "test_error_std",
                   "seeds"):  # fmt: skip
        assert column in table[0]
    stage = {r["stage"]: r for r in table}
    assert list(stage)[:4] == ["dense", "pruned", "quantised", "huffman"]
    ratios = [float(stage[s]["ratio"]) for s in ("dense", "pruned", "quantised", "huffman")]
    assert ratios[0] == 1 and ratios == sorted(ratios)  # each stage stores less
    # Huffman coding is lossless: the decoded file's error is the quantised model's
    assert stage["huffman"]["test_error_mean"] == stage["quantised"]["test_error_mean"]
    assert all(r["decoded_exactly"] == "True" for r in table)


def test_per_layer_rows_sit_beside_the_papers(quick):
    layers = rows(quick / "layers.csv")
    assert [r["layer"] for r in layers] == ["1.weight", "3.weight", "5.weight", "total"]
    assert [float(r["paper_kept_percent"]) for r in layers] == [8, 9, 26, 8]
    assert float(layers[0]["kept_percent"]) == pytest.approx(8, abs=0.01)
    assert float(layers[0]["weight_bits"]) == 6


def test_bits_sweep_and_footprint(quick):
    bits = rows(quick / "bits.csv")
    assert {(r["bits"], r["centroids"]) for r in bits} == {
        ("2", "k-means"), ("2", "trained"), ("6", "k-means"), ("6", "trained")}  # fmt: skip
    footprint = {r["storage"]: r for r in rows(quick / "footprint.csv")}
    dense = float(footprint["dense float32"]["bytes"])
    assert float(footprint["dense float32"]["kept_percent"]) == pytest.approx(1.03, abs=0.01)
    assert float(footprint["CSR (float32, int32 indices)"]["bytes"]) < dense
    assert (float(footprint["this format, Huffman (file)"]["bytes"])
            < float(footprint["this format, fixed width (file)"]["bytes"])
            < float(footprint["CSR (float32, int32 indices)"]["bytes"]))  # fmt: skip
    assert "small dense MLP (no biases), float32" in footprint


def test_compressed_files_are_runs_that_need_their_checkpoints(quick):
    keys = {}
    for path in (quick / "runs").glob("*/summary.json"):
        spec = json.loads(path.read_text())["run_spec"]
        assert path.parent.name == f"{spec['key']}-{spec['digest'][:10]}"
        keys[spec["key"]] = spec
    trained = "lenet300-magnitude-quantized-conv8-fc6-e1-seed0"
    assert keys[trained]["needs"] == ["lenet300-magnitude-seed0"]
    assert keys["lenet300-magnitude-seed0"]["needs"] == ["lenet300-dense-seed0"]
    assert keys[trained.replace("-seed0", "-compressed-seed0")]["needs"] == [trained]
    for bits in (2, 6):
        assert keys[f"lenet300-magnitude-kmeans-conv{bits}-fc{bits}-compressed-seed0"][
            "needs"] == ["lenet300-magnitude-seed0"]  # fmt: skip
    assert len(keys) == 14


def test_a_rerun_resumes_and_figures_are_drawn(quick, tmp_path, capsys):
    out = quick
    table = (out / "table.csv").read_text()
    capsys.readouterr()
    assert main(command(out)) == 0  # everything finished: only the tables are rebuilt
    assert "0 runs this time" in capsys.readouterr().out
    assert (out / "table.csv").read_text() == table
    assert json.loads((out / "summary.json").read_text())["part_seconds"]["pipeline"] == 0
    assert main(["figures", "--study", "deep-compression", "--results", str(out),
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    assert (tmp_path / "error-bits.png").stat().st_size > 0
