"""The runner on tiny tasks (topoprune.runner.examples): digests, folders, resume, failures,
killed workers, concurrent attempts; Ray where it is installed."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import shutil
from pathlib import Path

import pytest

from topoprune.errors import TopopruneError
from topoprune.runner import (
    RunSpec,
    StudyFailed,
    make_executor,
    run_folder,
    run_specs,
    spec_digests,
)
from topoprune.runner.task import execute_spec, partial_folder

SQUARE = "topoprune.runner.examples:square"
ADD = "topoprune.runner.examples:add_inputs"
FAIL = "topoprune.runner.examples:fail"


def _graph(sleep: float = 0.0) -> list[RunSpec]:
    """Three squares and a sum that needs them all."""
    squares = [RunSpec(f"square-{x}", SQUARE, {"x": x, "sleep": sleep}) for x in (1, 2, 3)]
    return [*squares, RunSpec("sum", ADD, {"x": 0}, needs=tuple(s.key for s in squares))]


def test_digest_covers_settings_and_what_a_run_needs():
    base = spec_digests(_graph())
    changed = spec_digests([RunSpec("square-1", SQUARE, {"x": 1, "sleep": 0.5}), *_graph()[1:]])
    assert changed["square-1"] != base["square-1"]
    assert changed["sum"] != base["sum"]  # it reads square-1's record
    assert changed["square-2"] == base["square-2"]
    # key order and tuple/list spelling do not change a digest
    again = spec_digests([RunSpec("square-1", SQUARE, {"sleep": 0.0, "x": 1})])
    assert again["square-1"] == base["square-1"]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([RunSpec("a b", SQUARE)], "letters, digits"),
        ([RunSpec("a", "no_colon")], "module:function"),
        ([RunSpec("a", SQUARE, {"x": 1}), RunSpec("a", SQUARE, {"x": 2})], "twice"),
        ([RunSpec("a", ADD, {"x": 1}, needs=("b",))], "needs b"),
        ([RunSpec("a", ADD, {}, needs=("b",)), RunSpec("b", ADD, {}, needs=("a",))], "cycle"),
        ([RunSpec("a", SQUARE, {"x": float("nan")})], "finite JSON"),
        ([RunSpec("a", SQUARE, {"x": object()})], "finite JSON"),
    ],
)
def test_bad_graphs_are_clear_errors(specs, message):
    with pytest.raises(TopopruneError, match=message):
        spec_digests(specs)


def test_serial_run_writes_one_folder_per_run_and_resumes(tmp_path):
    records = run_specs(_graph(), tmp_path)
    assert records["sum"]["value"] == 1 + 4 + 9
    assert records.submitted == ["square-1", "square-2", "square-3", "sum"]
    digests = spec_digests(_graph())
    for key, digest in digests.items():
        folder = run_folder(tmp_path, key, digest)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["run_spec"]["digest"] == digest and summary["run_spec"]["key"] == key
        assert not partial_folder(folder).exists()
    # paths the task recorded inside its temporary folder now name the final one
    square = records.folders["square-2"]
    assert records["square-2"]["file"] == str(square / "value.json")
    assert json.loads(Path(records["square-2"]["file"]).read_text()) == {"value": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        run_folder(tmp_path, k, d).name for k, d in digests.items()
    )  # no lock files or temporary folders left
    # a new run's record is what a later invocation reads back, in the task's own key order
    again = run_specs(_graph(), tmp_path)
    assert again.submitted == [] and again == records
    assert list(again["square-2"]) == list(records["square-2"]) == ["value", "file", "run_spec"]
    for key in ("square-3", "sum"):
        for path in records.folders[key].iterdir():
            path.unlink()
        records.folders[key].rmdir()
    # deleting two folders reruns exactly those two
    again = run_specs(_graph(), tmp_path)
    assert sorted(again.submitted) == ["square-3", "sum"]
    assert {k: v["value"] for k, v in again.items()} == {k: v["value"] for k, v in records.items()}


def test_a_moved_results_folder_reads_its_runs_where_they_are(tmp_path):
    run_specs(_graph(), tmp_path / "before")
    shutil.move(tmp_path / "before", tmp_path / "after")
    moved = run_specs(_graph(), tmp_path / "after")
    assert moved.submitted == []
    assert moved["square-2"]["file"] == str(moved.folders["square-2"] / "value.json")
    assert json.loads(Path(moved["square-2"]["file"]).read_text()) == {"value": 4}


def test_a_folder_of_another_run_is_an_error(tmp_path):
    records = run_specs(_graph()[:1], tmp_path)
    summary = records.folders["square-1"] / "summary.json"
    summary.write_text(json.dumps({"run_spec": {"digest": "0" * 64}}))
    with pytest.raises(TopopruneError, match="belongs to another run"):
        run_specs(_graph()[:1], tmp_path)
    summary.write_text("{not json")
    with pytest.raises(TopopruneError, match="unreadable"):
        run_specs(_graph()[:1], tmp_path)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_run_is_reported_after_the_others_finish(tmp_path, jobs):
    specs = [*_graph(), RunSpec("broken", FAIL, {"message": "no such layer"}),
             RunSpec("after-broken", ADD, {"x": 1}, needs=("broken",))]  # fmt: skip
    with make_executor("local", jobs=jobs) as executor, pytest.raises(StudyFailed) as failure:
        run_specs(specs, tmp_path, executor)
    text = str(failure.value)
    assert "1 of 6 runs failed, 1 not started" in text
    assert "--- run broken failed:" in text and "ValueError: no such layer" in text
    assert "Traceback" in text  # the worker's traceback, not only the message
    assert "run after-broken not started: needs broken" in text
    # an exception inside a run is not retried
    (attempts,) = tmp_path.glob("broken-*.partial/attempts")
    assert attempts.read_text() == "attempt\n"
    # the others are done: a rerun submits only the failed run and the one that needs it
    done = [p.name for p in tmp_path.iterdir() if (p / "summary.json").exists()]
    assert len(done) == 4
    with pytest.raises(StudyFailed):
        run_specs(specs, tmp_path)
    assert not any(p.name.startswith("square") and p.name.endswith(".partial")
                   for p in tmp_path.iterdir())  # fmt: skip


def test_two_workers_give_the_serial_records(tmp_path):
    serial = run_specs(_graph(), tmp_path / "serial")
    with make_executor("local", jobs=2) as executor:
        parallel = run_specs(_graph(sleep=0.0), tmp_path / "parallel", executor)
    assert {k: v["value"] for k, v in parallel.items()} == {
        k: v["value"] for k, v in serial.items()
    }
    assert sorted(parallel.submitted) == sorted(serial.submitted)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_run_holds_its_threads_in_torch_and_every_blas_pool(tmp_path, threads):
    from topoprune.runner.examples import thread_pools

    before = thread_pools(tmp_path, {})
    spec = RunSpec("pools", "topoprune.runner.examples:thread_pools", {})
    with make_executor("local", jobs=1, threads=threads) as executor:  # in this process
        record = run_specs([spec], tmp_path, executor)["pools"]
    assert record["torch"] == threads
    assert record["pools"] and set(record["pools"].values()) == {threads}
    assert record["run_spec"]["threads"] == threads
    assert thread_pools(tmp_path, {}) == before  # the driver's own settings come back


def test_a_killed_local_worker_is_retried(tmp_path, kill_when_started):
    killed: list[int] = []
    watcher = kill_when_started(tmp_path, "square-2", killed)
    with make_executor("local", jobs=2, max_retries=1) as executor:
        records = run_specs(_graph(sleep=1.0), tmp_path, executor)
    watcher.join()
    assert len(killed) == 1
    assert records["sum"]["value"] == 14 and "square-2" in records


def test_a_killed_local_worker_without_retries_fails_the_run(tmp_path, kill_when_started):
    killed: list[int] = []
    watcher = kill_when_started(tmp_path, "square-2", killed)
    with make_executor("local", jobs=2, max_retries=0) as executor, \
            pytest.raises(StudyFailed) as failure:  # fmt: skip
        run_specs(_graph(sleep=1.0), tmp_path, executor)
    watcher.join()
    assert killed
    assert f"--- run square-2 failed:\nworker process (pid {killed[0]}) was killed by signal 9" in (
        str(failure.value)
    )
    assert "run sum not started: needs square-2" in str(failure.value)


def _attempt(payload: dict, queue) -> None:
    queue.put(execute_spec(payload)["value"])


def test_two_attempts_at_once_leave_one_complete_folder(tmp_path):
    spec = RunSpec("slow", SQUARE, {"x": 5, "sleep": 1.0})
    digest = spec_digests([spec])["slow"]
    folder = run_folder(tmp_path, "slow", digest)
    payload = {"key": "slow", "task": SQUARE, "settings": dict(spec.settings), "digest": digest,
               "folder": str(folder), "inputs": {}, "threads": None}  # fmt: skip
    context = multiprocessing.get_context("forkserver")
    queue = context.Queue()
    attempts = [context.Process(target=_attempt, args=(payload, queue)) for _ in range(2)]
    for process in attempts:
        process.start()
    for process in attempts:
        process.join(60)
        assert process.exitcode == 0
    assert sorted(queue.get(timeout=5) for _ in attempts) == [25, 25]
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert sorted(p.name for p in folder.iterdir()) == ["summary.json", "value.json"]


def test_unknown_executor_and_bad_flags():
    with pytest.raises(TopopruneError, match="executor must be one of local, ray"):
        make_executor("slurm")
    with pytest.raises(TopopruneError, match="--address needs --executor ray"):
        make_executor("local", address="auto")
    with pytest.raises(TopopruneError, match="--max-retries must be >= 0"):
        make_executor("local", max_retries=-1)


def test_ray_missing_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(TopopruneError, match=r"pip install 'topoprune\[ray\]'"):
        make_executor("ray")


requires_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray is not installed (pip install 'topoprune[ray]')",
)


@requires_ray
def test_ray_killed_worker_is_retried_and_failures_are_reported(
    tmp_path, ray_temp_dir, kill_when_started
):
    killed: list[int] = []
    watcher = kill_when_started(tmp_path / "a", "square-2", killed)
    specs = [*_graph(sleep=1.0), RunSpec("broken", FAIL, {"message": "bad settings"})]
    with make_executor("ray", jobs=2, max_retries=1, temp_dir=ray_temp_dir) as executor:
        with pytest.raises(StudyFailed) as failure:
            run_specs(specs, tmp_path / "a", executor)
        watcher.join()
        assert killed
        text = str(failure.value)
        assert "1 of 5 runs failed" in text and "ValueError: bad settings" in text
        (attempts,) = (tmp_path / "a").glob("broken-*.partial/attempts")
        assert attempts.read_text() == "attempt\n"  # not retried
        records = run_specs(specs[:-1], tmp_path / "a", executor)
        assert records.submitted == [] and records["sum"]["value"] == 14
        # with retries off, a killed worker fails its run, named
        killed.clear()
        watcher = kill_when_started(tmp_path / "b", "square-3", killed)
    with make_executor("ray", jobs=2, max_retries=0, temp_dir=ray_temp_dir) as executor, \
            pytest.raises(StudyFailed) as failure:  # fmt: skip
        run_specs(_graph(sleep=1.0), tmp_path / "b", executor)
    watcher.join()
    assert killed and "--- run square-3 failed:\nWorkerCrashedError" in str(failure.value)
