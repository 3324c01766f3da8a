"""The continual-learning preferential-attachment study in quick mode: structure and sanity."""

import csv
import json

import pytest

from topoprune.cli import main
from topoprune_studies import continual_pa


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("continual_pa")
    command = ["study", "run", "continual-pa", "--quick", "--out", str(out), "--quiet",
               "--device", "cpu"]  # fmt: skip
    assert main(command) == 0
    return out, command


def test_connections_created_and_measured(quick):
    out, _ = quick
    rates = list(csv.DictReader((out / "rates.csv").open()))
    assert {r["task"] for r in rates} == {"square14", "control"}
    assert [r["layer"] for r in rates if r["task"] == "square14"] == ["1", "3", "5"]
    # connections given back at zero come back where the new task needs them
    assert sum(int(r["created"]) for r in rates if r["task"] == "square14") > 0
    for r in rates:
        assert int(r["kept_after"]) == int(r["kept_before"]) + int(r["created"]) - int(r["removed"])
        if int(r["created"]) == 0:
            assert "no connection was created" in r["note"]
        if r["beta"]:
            assert float(r["beta_low"]) <= float(r["beta"]) <= float(r["beta_high"])
    growth = list(csv.DictReader((out / "growth.csv").open()))
    assert {g["node_layer"] for g in growth} == {"input", "1", "3", "5"}
    for g in growth:
        assert 0 <= float(g["r_squared"]) <= 1 and 0 < float(g["p_same"]) <= 1
    accuracy = list(csv.DictReader((out / "accuracy.csv").open()))
    for row in accuracy:
        assert all(0 <= float(row[k]) <= 1 for k in ("A_on_A", "A_on_B", "B_on_B", "B_on_A"))
        # the models are measured as their runs evaluated them (DNS keeps hidden pruned weights)
        a = _summary(out, "lenet300-dns-A-seed0")
        b = _summary(out, f"lenet300-dns-B-{row['task']}-seed0")
        assert float(row["A_on_A"]) == a["test_error"] and float(row["B_on_B"]) == b["test_error"]
        assert float(row["A_on_B"]) == b["init_test_error"]
    digest = (out / "digest.md").read_text()
    assert digest.count("## Claim") == 3 and "| lenet300 | dns | input-fc1 |" in digest
    record = json.loads(next((out / "attach").glob("*square14*.json")).read_text())
    assert record["regrown"] > 0
    assert len(record["degrees"]) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["regrow"] == "zero" and "git_revision" in summary["provenance"]


def _summary(out, key: str) -> dict:
    """The record of run ``key`` (its folder is ``runs/<key>-<hash>``)."""
    (folder,) = (p for p in (out / "runs").iterdir() if p.name.rsplit("-", 1)[0] == key)
    return json.loads((folder / "summary.json").read_text())


def test_one_task_a_model_serves_every_task(quick, capsys):
    out, command = quick
    runs = sorted(p.name.rsplit("-", 1)[0] for p in (out / "runs").iterdir())
    assert runs == ["lenet300-dense-seed0", "lenet300-dns-A-seed0",
                    "lenet300-dns-B-control-seed0", "lenet300-dns-B-square14-seed0",
                    "lenet300-dns-control-seed0-attach",
                    "lenet300-dns-square14-seed0-attach"]  # fmt: skip
    a, b = _summary(out, "lenet300-dns-A-seed0"), _summary(out, "lenet300-dns-B-square14-seed0")
    assert b["init"]["checkpoint"] == a["checkpoint"]
    assert b["run_spec"]["needs"] == ["lenet300-dns-A-seed0"]
    measured = _summary(out, "lenet300-dns-square14-seed0-attach")["run_spec"]["needs"]
    assert measured == ["lenet300-dns-A-seed0", "lenet300-dns-B-square14-seed0"]
    # a second run finds every run done and rebuilds the tables only
    before = {p: p.stat().st_mtime_ns for p in (out / "attach").glob("*.json")}
    assert main(command) == 0
    assert "0 runs this time" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "attach").glob("*.json")} == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"].startswith("local, 1 jobs") and len(summary["invocations"]) == 2


def test_figures(quick, tmp_path):
    out, _ = quick
    assert main(["figures", "--study", "continual-pa", "--results", str(out),
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    names = {p.name for p in tmp_path.glob("*.png")}
    assert names == {f"lenet300-dns-{task}-{kind}.png" for task in ("square14", "control")
                     for kind in ("attachment", "growth", "degrees")}  # fmt: skip


def test_task_data():
    assert continual_pa.tasks(continual_pa.Config()) == ["square8", "square14", "square20",
                                                          "control"]  # fmt: skip
