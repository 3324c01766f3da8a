"""The sparse-training study in quick mode (LeNet-300-100 on 2000 training images, one seed):
structure and the invariants that hold whatever the training, not paper numbers."""

import csv
import io
import json
import time

import pytest

from topoprune.cli import main


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("sparse-training")
    command = ["study", "run", "sparse-training", "--quick", "--out", str(out), "--quiet",
               "--device", "cpu"]  # fmt: skip
    assert main(command) == 0
    return out, command


def rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_table_has_the_issue_columns_and_every_part(quick):
    out, _ = quick
    table = rows(out / "table.csv")
    for column in ("model", "method", "kept_percent", "seeds", "test_error_mean",
                   "test_error_std"):  # fmt: skip
        assert column in table[0]
    parts = {r["part"] for r in table}
    assert parts == {"snip (1 epochs)", "snip (2 epochs)", "lottery",
                     "dynamic sparse training (mnist)"}  # fmt: skip
    snip = {r["method"]: r for r in table if r["part"] == "snip (1 epochs)"}
    assert float(snip["dense"]["kept_percent"]) == 100
    assert float(snip["snip"]["kept_percent"]) == pytest.approx(5, abs=0.01)  # 95% sparsity


def test_lottery_rounds_keep_the_papers_fractions_and_controls_match_the_ticket(quick):
    out, _ = quick
    lottery = rows(out / "lottery.csv")
    kept = {(r["round"], r["variant"]): float(r["kept_percent"]) for r in lottery}
    assert kept[("0", "ticket")] == 100
    # 20% of each hidden layer and 10% of the output layer per round
    expected = (235200 * 0.8**2 + 30000 * 0.8**2 + 1000 * 0.9**2) / 266200
    assert kept[("2", "ticket")] == pytest.approx(100 * expected, abs=0.01)
    assert {v for (r, v) in kept if r != "0"} == {"ticket", "reinit", "random"}
    for r in lottery:
        assert 1 <= int(r["early_stop_epoch"]) <= 1  # one epoch per round in quick mode


def test_dynamic_sparse_training_matches_densities_across_methods(quick):
    out, _ = quick
    dst = rows(out / "dst.csv")
    assert {r["method"] for r in dst} == {"set", "rigl", "random", "magnitude"}
    kept = [float(r["kept_percent"]) for r in dst]
    assert max(kept) - min(kept) < 0.05  # SET's Erdos-Renyi densities for every method


def test_the_initialisation_check_runs_each_method_with_and_without_sparse_init(quick):
    out, _ = quick
    check = rows(out / "init_check.csv")
    assert {(r["method"], r["sparse_init"]) for r in check} == {
        (m, s) for m in ("set", "rigl", "random") for s in ("True", "False")
    }
    assert all(0 <= float(r["test_error"]) <= 100 for r in check)


def test_attachment_and_fits_are_measured_during_training(quick):
    out, _ = quick
    attachment = rows(out / "attachment.csv")
    assert {r["method"] for r in attachment} == {"set", "rigl"}
    assert all(int(r["created"]) >= 0 for r in attachment)
    rigl = [r for r in attachment if r["method"] == "rigl" and r["beta"]]
    assert rigl, "no RigL update was measured"
    for r in rigl:
        assert float(r["beta_low"]) <= float(r["beta"]) <= float(r["beta_high"])
    fits = rows(out / "fits.csv")
    assert {r["time"] for r in fits} == {"start", "middle", "end"}
    assert {r["mode"] for r in fits} == {"window", "clauset"}
    assert {r["node_layer"] for r in fits} == {"input", "1", "3", "5"}  # node layers of LeNet-300


def test_every_run_and_measurement_is_a_run_spec_in_its_hashed_folder(quick):
    out, _ = quick
    keys = {}
    for path in (out / "runs").glob("*/summary.json"):
        spec = json.loads(path.read_text())["run_spec"]
        assert path.parent.name == f"{spec['key']}-{spec['digest'][:10]}"
        keys[spec["key"]] = spec
    assert len(keys) == 20
    # the lottery controls need their ticket; the measurements need their SET or RigL run
    for r in (1, 2):
        assert keys[f"lenet300-mnist-reinit-round{r}-seed1000"]["needs"] == [
            "lenet300-mnist-lottery-seed0"]  # fmt: skip
        assert keys[f"lenet300-mnist-random-round{r}-seed0"]["needs"] == [
            "lenet300-mnist-lottery-seed0"]  # fmt: skip
    for method in ("set", "rigl"):
        assert keys[f"attach-lenet300-mnist-{method}-seed0"]["needs"] == [
            f"lenet300-mnist-{method}-seed0"]  # fmt: skip


def test_a_rerun_resumes_and_figures_are_drawn(quick, tmp_path, capsys):
    out, command = quick
    start = time.perf_counter()
    capsys.readouterr()
    assert main(command) == 0  # everything finished: only the tables are rebuilt
    assert "0 runs this time" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["part_seconds"]["snip"] == 0  # seconds of the runs run this time
    assert summary["executor"].startswith("local, 1 jobs")
    assert time.perf_counter() - start < 60
    assert main(["figures", "--study", "sparse-training", "--results", str(out),
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    for name in ("accuracy-sparsity.png", "lottery.png", "attachment.png",
                 "degrees-lenet300-set.png", "degrees-lenet300-rigl.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0
