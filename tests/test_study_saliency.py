"""The saliency study in quick mode (the MLP and LeNet-300-100 on 2000 training images, one
seed): structure and the invariants that hold whatever the training, not paper numbers."""

import csv
import io
import json

import pytest

from topoprune.cli import main


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("saliency")
    command = ["study", "run", "saliency", "--quick", "--out", str(out), "--quiet",
               "--device", "cpu"]  # fmt: skip
    assert main(command) == 0
    return out, command


def rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_table_has_the_issue_columns_and_every_part(quick):
    out, _ = quick
    table = rows(out / "table.csv")
    for column in ("model", "method", "sparsity", "seeds", "test_error_mean", "test_error_std"):
        assert column in table[0]
    assert {r["part"] for r in table} == {"oneshot", "retrain", "units"}
    oneshot = [r for r in table if r["part"] == "oneshot"]
    methods = {r["method"] for r in oneshot}
    assert methods == {"magnitude", "obd", "diag-fisher", "obs", "woodfisher", "taylor", "random"}
    # layer-wise OBS has no global ranking; every other criterion has both
    assert {r["variant"] for r in oneshot if r["method"] == "obs"} == {"one-shot uniform"}
    assert len(oneshot) == (2 * 7 - 1) * 2  # criteria x allocations x two sparsities
    units = [r for r in table if r["part"] == "units"]
    assert {r["method"] for r in units} == {"skeletonization", "activation", "nisp",
                                            "units-random"}  # fmt: skip


def test_oneshot_rows_keep_the_requested_sparsity_and_the_claims_are_measured(quick):
    out, _ = quick
    raw = rows(out / "oneshot.csv")
    assert all(0 <= float(r["test_accuracy"]) <= 100 for r in raw)
    claims = rows(out / "claims.csv")
    assert {r["layer"] for r in claims} == {"1", "3", "5"}
    for r in claims:
        # OBS removes the weights it chooses and moves the others: its removed set is a
        # set of the same size as magnitude's, so overlaps are fractions
        for key in ("overlap_magnitude_obd", "overlap_magnitude_obs", "overlap_obd_obs"):
            assert 0 <= float(r[key]) <= 1
        assert r["mag_ge_obd"] in ("True", "False")


def test_units_remove_the_fraction_asked(quick):
    out, _ = quick
    for r in rows(out / "units.csv"):
        # half of the 300 and 100 hidden units: their rows and columns go
        assert float(r["kept_percent"]) < 60
        # exactly: 150 of fc1's rows, fc2's 50 rows x 150 columns, fc3's 50 columns
        kept = 150 * 784 + 50 * 150 + 10 * 50
        assert float(r["kept_percent"]) == round(100 * kept / 266200, 3)


def test_figures_and_summary(quick, tmp_path):
    out, _ = quick
    summary = json.loads((out / "summary.json").read_text())
    assert "git_revision" in summary["provenance"]
    assert summary["paper"]["woodfisher"] == 84.18
    assert summary["timings"][0]["obs_seconds"] > 0
    figures = json.loads((out / "figures.json").read_text())
    assert figures["oneshot"] and figures["units"]
    assert main(["figures", "--study", "saliency", "--results", str(out),
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    assert (tmp_path / "oneshot-mlp40.png").stat().st_size > 0
    assert (tmp_path / "units.png").stat().st_size > 0
