"""The driver loop: submit every run whose inputs are done, collect records, report failures."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from topoprune.errors import TopopruneError

from .executors import Executor, SerialExecutor
from .spec import RunSpec, run_folder, spec_digests
from .task import read_done


class StudyFailed(TopopruneError):
    """Some runs failed; the others finished (their folders are done) and a rerun resumes."""


class RunRecords(dict):
    """Records by run key, plus which keys this invocation ran (``submitted``; the others were
    done already) and where each run's folder is (``folders``)."""

    submitted: list[str]
    folders: dict[str, Path]


def run_specs(specs: Sequence[RunSpec], root: str | Path, executor: Executor | None = None, *,
              progress: bool = False) -> RunRecords:  # fmt: skip
    """Run every spec not done yet in ``root`` with ``executor`` (serial by default), each as
    soon as the runs it needs are done; return every spec's record.

    A run that fails (an exception in the task, a worker that died ``max_retries + 1`` times) does
    not stop the others; the runs that need it are not started. At the end :class:`StudyFailed`
    lists every failed run with its traceback. The executor stays open for the caller's next
    graph (close it, or use it in a ``with`` block); each task runs with the executor's torch
    thread count (1 by default, so results do not depend on the executor).

    Examples
    --------
    >>> import tempfile
    >>> specs = [RunSpec("a", "topoprune.runner.examples:square", {"x": 3}),
    ...          RunSpec("b", "topoprune.runner.examples:add_inputs", {"x": 1}, needs=("a",))]
    >>> with tempfile.TemporaryDirectory() as root:
    ...     first = run_specs(specs, root)
    ...     again = run_specs(specs, root)
    >>> first["b"]["value"], first.submitted, again.submitted
    (10, ['a', 'b'], [])
    """
    root = Path(root).resolve()  # workers may start in another folder
    digests = spec_digests(specs)
    folders = {s.key: run_folder(root, s.key, digests[s.key]) for s in specs}
    records = RunRecords()
    records.submitted, records.folders = [], folders
    for spec in specs:
        done = read_done(folders[spec.key], digests[spec.key])
        if done is not None:
            records[spec.key] = done
    pending = {s.key: s for s in specs if s.key not in records}
    executor = executor if executor is not None else SerialExecutor()
    failed: dict[str, str] = {}
    not_started: dict[str, str] = {}
    in_flight = 0
    start = time.perf_counter()
    while pending or in_flight:
        for key, spec in list(pending.items()):
            blocked = [n for n in spec.needs if n in failed or n in not_started]
            if blocked:
                not_started[key] = f"needs {', '.join(blocked)}, which did not finish"
                del pending[key]
            elif all(n in records for n in spec.needs):
                executor.submit(key, {
                    "key": key, "task": spec.task, "settings": dict(spec.settings),
                    "digest": digests[key], "folder": str(folders[key]),
                    "inputs": {n: records[n] for n in spec.needs}, "threads": executor.threads,
                })  # fmt: skip
                records.submitted.append(key)
                del pending[key]
                in_flight += 1
        if not in_flight:
            continue
        for key, (status, value) in executor.wait():
            in_flight -= 1
            if status == "ok":
                records[key] = value
            else:
                failed[key] = value
            if progress:
                print(f"[{len(records) + len(failed)}/{len(specs)}] {key}: "
                      f"{'done' if status == 'ok' else status} "
                      f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)  # fmt: skip
    if failed or not_started:
        raise StudyFailed(_failure_report(failed, not_started, len(specs)))
    return records


def _failure_report(failed: dict[str, str], not_started: dict[str, str], total: int) -> str:
    lines = [f"{len(failed)} of {total} runs failed"
             + (f", {len(not_started)} not started" if not_started else "")
             + "; the others are done, and rerunning the study resumes:"]  # fmt: skip
    for key, text in failed.items():
        lines += [f"--- run {key} failed:", text.rstrip()]
    for key, reason in not_started.items():
        lines.append(f"--- run {key} not started: {reason}")
    return "\n".join(lines)
