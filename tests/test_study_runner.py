"""A quick study (pruning-table) through every executor gives the same results as one run at a
time: same run keys and folders, same tables and summaries apart from wall times, bit-identical
checkpoints; killed workers are retried, failed runs reported, finished runs never rerun."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks.study_executors import comparable
from topoprune.cli import main
from topoprune_studies import pruning_table

requires_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray is not installed (pip install 'topoprune[ray]')",
)

COMMAND = ["study", "run", "pruning-table", "--quick", "--quiet", "--device", "cpu"]


def _results(out: Path) -> dict:
    root = str(out.resolve())
    runs = {p.name: comparable(json.loads((p / "summary.json").read_text()), root)
            for p in sorted((out / "runs").iterdir())}  # fmt: skip
    table = json.loads((out / "table.json").read_text())
    return {"runs": runs, "rows": table["rows"], "csv": (out / "table.csv").read_text()}


def _weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.parent.name: torch.load(p, weights_only=True)["extra"]["model_state"]
            for p in sorted((out / "runs").glob("*/checkpoint.pt"))}  # fmt: skip


def assert_same_study(ours: Path, reference: Path) -> None:
    assert _results(ours) == _results(reference)
    mine, theirs = _weights(ours), _weights(reference)
    assert list(mine) == list(theirs) and len(mine) == 3
    for run, state in mine.items():
        for name, tensor in state.items():
            assert torch.equal(tensor, theirs[run][name]), f"{run}: {name} differs"


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "table"
    assert main([*COMMAND, "--out", str(out)]) == 0
    return out


def test_two_local_workers_with_a_killed_one_match_one_at_a_time(
    serial, tmp_path, capsys, kill_when_started
):
    out = tmp_path / "table"
    killed: list[int] = []
    # killed after its first epoch's checkpoint: the retry resumes from it
    watcher = kill_when_started(out / "runs", "lenet300-dense-seed0", killed,
                                after="checkpoint.pt")  # fmt: skip
    assert main([*COMMAND, "--out", str(out), "--jobs", "2"]) == 0
    watcher.join()
    assert len(killed) == 1
    assert_same_study(out, serial)
    assert "3 runs this time" in capsys.readouterr().out
    # resume: two deleted run folders are the only runs submitted again
    for folder in sorted((out / "runs").glob("lenet300-*-seed0-*"))[1:]:
        shutil.rmtree(folder)
    assert main([*COMMAND, "--out", str(out), "--jobs", "2"]) == 0
    assert "2 runs this time" in capsys.readouterr().out
    assert_same_study(out, serial)
    invocations = json.loads((out / "table.json").read_text())["invocations"]
    assert [i["executor"] for i in invocations] == ["local, 2 jobs, 1 torch thread(s) per run"] * 2


def test_a_failing_run_exits_nonzero_naming_it_after_the_others(tmp_path, monkeypatch, capsys):
    broken = dataclasses.replace(pruning_table.QUICK,
                                 overrides={"lenet300-dns": {"c": (1.0, 2.0)}})  # fmt: skip
    monkeypatch.setattr(pruning_table, "QUICK", broken)
    out = tmp_path / "table"
    assert main([*COMMAND, "--out", str(out), "--jobs", "2"]) == 2
    error = capsys.readouterr().err
    assert "1 of 3 runs failed" in error and "--- run lenet300-dns-seed0 failed:" in error
    assert "Traceback" in error and "c: give 1 value or 3" in error
    done = sorted(p.name.rsplit("-", 1)[0] for p in (out / "runs").glob("*/summary.json")
                  for p in [p.parent])  # fmt: skip
    assert done == ["lenet300-dense-seed0", "lenet300-magnitude-seed0"]


@requires_ray
def test_a_local_ray_cluster_with_a_killed_worker_matches(
    serial, tmp_path, ray_temp_dir, kill_when_started
):
    out = tmp_path / "table"
    killed: list[int] = []
    watcher = kill_when_started(out / "runs", "lenet300-magnitude-seed0", killed,
                                after="checkpoint.pt")  # fmt: skip
    from topoprune.runner import make_executor

    with make_executor("ray", jobs=2, temp_dir=ray_temp_dir) as executor:
        pruning_table.run(dataclasses.replace(pruning_table.QUICK, device="cpu"), out,
                          executor=executor)  # fmt: skip
    watcher.join()
    assert len(killed) == 1
    assert_same_study(out, serial)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@requires_ray
def test_attaching_to_a_ray_head_matches(serial, tmp_path, tmp_path_factory):
    port = _free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", f"--temp-dir={tmp_path_factory.mktemp('head')}",
         "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "head.log").open("w"),
    )  # fmt: skip
    try:
        out = tmp_path / "table"
        for _ in range(120):  # the head takes a few seconds to listen
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"the Ray head never listened: {(tmp_path / 'head.log').read_text()}")
        assert main([*COMMAND, "--out", str(out), "--executor", "ray",
                     "--address", f"127.0.0.1:{port}"]) == 0  # fmt: skip
        assert_same_study(out, serial)
    finally:
        head.terminate()  # --block: the head's processes end with it (never `ray stop`)
        head.wait(60)
