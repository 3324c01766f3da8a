"""The scale-free study in quick mode: structure and sanity of the whole pipeline, not paper
numbers (train, prune, random baseline, fit every node layer, table, figures)."""

import csv
import json

import pytest

from topoprune.cli import main
from topoprune_studies import scale_free


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale_free")
    command = ["study", "run", "scale-free", "--quick", "--out", str(out), "--quiet",
               "--device", "cpu"]  # fmt: skip
    assert main(command) == 0
    return out, command


def test_every_node_layer_fitted_or_explained(quick):
    out, _ = quick
    rows = list(csv.DictReader((out / "fits.csv").open()))
    config = scale_free.QUICK
    methods = {m for m in config.methods} | {f"random-{m}" for m in config.methods}
    assert {r["method"] for r in rows} == methods
    assert {r["model"] for r in rows} == set(config.models)
    assert {r["mode"] for r in rows} == set(config.modes)
    # mlp1024 has 4 node layers (input, fc1, fc2, output) in its one view
    mlp = [r for r in rows if r["model"] == "mlp1024" and r["method"] == "dns"]
    assert len(mlp) == 4 * len(config.modes)
    assert {r["view"] for r in rows if r["model"] == "cnn_mnist"} == {"channel", "im2col"}
    for r in rows:
        if r["fittable"] == "True":
            assert 0 <= float(r["p"]) <= 1
            assert float(r["xmin"]) >= 1 and float(r["alpha_se"]) > 0
            assert int(r["n_in_range"]) >= 10
        else:
            assert r["verdict"].startswith("cannot fit: ") and len(r["verdict"]) > 13
        # a scale-free reading needs a fit that beats the random null
        if r["scale_free"] == "True":
            assert r["beats_null"] == "True"
    # the random baseline has the pruned network's per-layer sparsity
    fits = {p.stem: json.loads(p.read_text()) for p in (out / "fits").glob("*.json")}
    for name, record in fits.items():
        if "-random-" in name:
            pruned = fits[name.replace("random-", "")]
            assert record["kept_percent"] == pytest.approx(pruned["kept_percent"], abs=0.01)
            assert record["fit_settings"]["n_boot"] == config.n_boot


def test_summary_table_and_resume(quick, capsys):
    out, command = quick
    summary = json.loads((out / "summary.json").read_text())
    assert "git_revision" in summary["provenance"]
    assert summary["wall_seconds"] > 0
    runs = {r["run"] for r in summary["runs"]}
    # one dense model per seed serves both methods and both baselines
    assert {r for r in runs if "-dense-" in r} == {"mlp1024-mnist-dense-seed0",
                                                   "cnn_mnist-mnist-dense-seed0"}  # fmt: skip
    table = (out / "table.md").read_text()
    assert table.startswith("| model | data | method |") and "| mlp1024 | mnist | dns |" in table
    digest = (out / "digest.md").read_text()
    assert "## window mode" in digest and "## clauset mode" in digest
    assert "| mlp1024 | mnist | random-dns | 1 |" in digest  # networks: every role
    # the totals the README quotes agree with the tidy table
    rows = list(csv.DictReader((out / "fits.csv").open()))
    window = digest.split("## window mode")[1]
    pruned = next(line for line in window.splitlines() if line.startswith("| pruned |"))
    fits = [r for r in rows if r["mode"] == "window" and not r["method"].startswith("random-")]
    fitted = sum(r["fittable"] == "True" for r in fits)
    supported = sum(r["scale_free"] == "True" for r in fits)
    assert pruned.startswith(f"| pruned | {len(fits)} | {fitted} |")
    assert pruned.endswith(f"| {supported} |")
    # one line per pruned method's node layer and view; the baseline is a column, not a line
    lines = [line for line in digest.splitlines()
             if line.startswith("| mlp1024 | mnist |") and "| channel |" in line]  # fmt: skip
    assert len(lines) == 4 * len(scale_free.QUICK.methods) * len(scale_free.QUICK.modes)
    assert not any("| random-" in line for line in lines)
    assert summary["executor"].startswith("local, 1 jobs")
    # every training run and every fit is a run spec in its own runs/<key>-<hash>/ folder
    folders = {p.name.rsplit("-", 1)[0] for p in (out / "runs").iterdir()}
    fitted = {f"{r}-fit" for r in runs if "-dense-" not in r}
    assert folders == runs | fitted
    # a second run finds everything done: no training, no fitting
    before = {p: p.stat().st_mtime_ns for p in (out / "fits").glob("*.json")}
    assert main(command) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "fits").glob("*.json")} == before
    again = json.loads((out / "summary.json").read_text())
    assert len(again["invocations"]) == 2
    walls = [i["wall_seconds"] for i in again["invocations"]]
    assert again["total_wall_seconds"] == pytest.approx(sum(walls))
    assert "0 runs this time" in capsys.readouterr().out


def test_figures_from_results_alone(quick, tmp_path, capsys):
    out, _ = quick
    figures = tmp_path / "figures"
    assert main(["figures", "--study", "scale-free", "--results", str(out),
                 "--out", str(figures)]) == 0  # fmt: skip
    names = {p.name for p in figures.glob("*.png")}
    assert "alpha_per_layer.png" in names
    assert "mlp1024-mnist-dns-channel.png" in names
    assert "cnn_mnist-mnist-magnitude-im2col.png" in names
    assert all((figures / n).stat().st_size > 10_000 for n in names)


def test_cifar_is_skipped_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("TOPOPRUNE_DATA", str(tmp_path / "empty"))
    cases, skipped = scale_free._cases(scale_free.Config(models=("mlp1024",), datasets=("mnist",)))
    assert cases == [("mlp1024", "mnist")]
    assert skipped[0]["model"] == "cnn_cifar" and "not in the cache" in skipped[0]["reason"]


def test_figures_need_results(tmp_path, capsys):
    assert main(["figures", "--study", "scale-free", "--results", str(tmp_path)]) == 2
    assert "run `topoprune study run scale-free` first" in capsys.readouterr().err
    assert main(["figures", "--study", "pruning-table", "--results", str(tmp_path)]) == 2
    assert "draws no figures" in capsys.readouterr().err
