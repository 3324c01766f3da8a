"""The progressive-network study in quick mode: structure and sanity."""

import csv
import json

from topoprune.cli import main
from topoprune_studies import progressive


def test_quick_progressive(tmp_path):
    out = tmp_path / "progressive"
    command = ["study", "run", "progressive", "--quick", "--out", str(out), "--quiet",
               "--device", "cpu"]  # fmt: skip
    assert main(command) == 0
    first = {name: (out / name).read_text() for name in ("runs.csv", "tests.csv", "table.md")}
    # a rerun finds every run done and rebuilds the same tables from the records read back
    assert main(command) == 0
    assert {name: (out / name).read_text() for name in first} == first
    rows = list(csv.DictReader((out / "runs.csv").open()))
    config = progressive.QUICK
    expected = len(config.seeds) * len(config.tasks) * len(progressive.conditions(config))
    assert len(rows) == expected
    by = {(r["sampler"], r["fraction"], r["seed"]): r for r in rows}
    # the separate network has no laterals; the dense one every pair (300*32 + 100*10)
    assert int(by[("none", "0.0", "0")]["lateral_connections"]) == 0
    assert int(by[("dense", "1.0", "0")]["lateral_connections"]) == 300 * 32 + 100 * 10
    assert int(by[("preferential", "0.05", "0")]["lateral_connections"]) == round(
        0.05 * 300 * 32
    ) + round(0.05 * 100 * 10)
    for r in rows:
        assert 0 <= float(r["test_error"]) < 0.8  # column 2 learned something
    tests = list(csv.DictReader((out / "tests.csv").open()))
    assert {t["against"] for t in tests} == {"random", "none", "dense"}
    summary = json.loads((out / "summary.json").read_text())
    assert "git_revision" in summary["provenance"]
    assert main(["figures", "--study", "progressive", "--results", str(out),
                 "--out", str(tmp_path / "fig")]) == 0  # fmt: skip
    assert (tmp_path / "fig" / "accuracy_vs_fraction.png").stat().st_size > 10_000
