"""The regularisation study in quick mode (LeNet-300-100, one seed, 2000 training images):
structure and sanity, not paper numbers."""

import csv
import io
import json

import pytest

from topoprune.cli import main


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("regularisation")
    command = ["study", "run", "regularisation", "--quick", "--out", str(out), "--quiet",
               "--device", "cpu"]  # fmt: skip
    assert main(command) == 0
    return out, command


def rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_table_has_the_issue_columns_and_every_method(quick):
    out, _ = quick
    every = rows(out / "table.csv")
    for column in ("model", "method", "seeds", "kept_percent", "test_error_mean",
                   "test_error_std", "kept_percent_per_layer", "paper_kept_percent"):  # fmt: skip
        assert column in every[0]
    assert {r["part"] for r in every} == {"table1", "control", "claims", "growl", "figure1"}
    assert len(every) == len({(r["model"], r["method"]) for r in every}) == 13
    table = rows(out / "table1.csv")
    assert [r["method"] for r in table] == [
        "reweighted-l1", "reweighted-l2", "focuss", "dns", "magnitude"
    ]  # fmt: skip
    ast = {r["method"]: r for r in table[:3]}
    for row in ast.values():  # thresholded at the given target: 10 % kept in every layer
        assert row["kept_percent_per_layer"] == "10.0/10.0/10.0"
        assert row["oneshot_error_before_retraining"] != "-"
        assert row["oneshot_retrained_error"] != "-"
        assert 0 < float(row["test_error_mean"]) < 100


def test_claims_count_zeros_before_the_threshold(quick):
    out, _ = quick
    claims = {r["method"]: r for r in rows(out / "claims.csv")}
    assert set(claims) == {"l2", "l1-subgradient", "l1-proximal"}
    # the subgradient step leaves no exact zeros; the proximal step at the same lambda does
    assert float(claims["l1-subgradient"]["exact_zero_percent"]) == 0
    assert float(claims["l1-proximal"]["exact_zero_percent"]) > 0
    assert claims["l1-proximal"]["lam"] == claims["l1-subgradient"]["lam"]


def test_figure_data_and_figure(quick, tmp_path):
    out, _ = quick
    figure = json.loads((out / "figure1.json").read_text())
    assert set(figure["curves"]) == {"noisy", "greedy"}
    for curve in figure["curves"].values():
        assert curve["iterations"] == [0, 1, 2]
        assert len(curve["val_error"]) == 3 and None not in curve["val_error"]
        assert all(len(v) == 3 for v in curve["kurtosis"].values())
    assert main(["figures", "--study", "regularisation", "--results", str(out),
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    assert (tmp_path / "figure1-kurtosis-error.png").stat().st_size > 0


def test_growl_and_summary(quick, capsys):
    out, command = quick
    growl = rows(out / "growl.csv")
    assert len(growl) == 1 and int(growl[0]["rows"]) == 400  # the output layer stays dense
    summary = json.loads((out / "summary.json").read_text())
    assert "git_revision" in summary["provenance"]
    assert summary["paper"]["focuss"]["total"] == 1.7
    # a second invocation finds every run finished and only rebuilds the tables
    assert main(command) == 0
    assert "5 rows" in capsys.readouterr().out
