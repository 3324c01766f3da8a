"""The pruning-table study in quick mode: structure and sanity, not paper numbers."""

import json

from topoprune.cli import main


def test_quick_pruning_table(tmp_path, capsys):
    out = tmp_path / "table"
    command = ["study", "run", "pruning-table", "--quick", "--out", str(out), "--quiet",
               "--device", "cpu"]  # fmt: skip
    assert main(command) == 0
    table = json.loads((out / "table.json").read_text())
    rows = {(r["model"], r["method"]): r for r in table["rows"]}
    assert set(rows) == {("lenet300", "magnitude"), ("lenet300", "dns")}
    magnitude = rows[("lenet300", "magnitude")]
    # the magnitude targets are the paper's kept fractions: reached exactly
    assert [round(v, 1) for v in magnitude["kept_percent_mean"]] == [8.0, 9.0, 26.0]
    assert magnitude["paper"]["compression"] == 12
    for row in rows.values():
        assert 0 < row["error_mean"] < 100 and row["compression_mean"] > 1
    assert "git_revision" in table["provenance"]
    assert (out / "table.csv").read_text().startswith("model,method,seeds")
    assert (out / "table.md").read_text().count("| lenet300 |") == 2
    # a second run finds every run finished and only rebuilds the table
    assert main(command) == 0
    assert "2 rows" in capsys.readouterr().out


def test_unknown_study(capsys):
    assert main(["study", "run", "no-such-study"]) == 2
    from topoprune_studies import STUDIES

    valid = ", ".join(sorted(STUDIES.names()))
    assert f"unknown study 'no-such-study'; valid: {valid}" in capsys.readouterr().err
    assert "deep-compression" in valid and "pruning-table" in valid
