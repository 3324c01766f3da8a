"""Where runs execute: in the driver, in local worker processes, or on a Ray cluster.

Every executor takes payloads (:func:`~topoprune.runner.task.execute_spec`'s argument) and
reports outcomes: ``("ok", record)``, ``("error", traceback)`` for an exception inside the task
(never retried: it would fail again), or ``("died", message)`` for a worker killed from outside,
retried up to ``max_retries`` times first.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from topoprune.errors import TopopruneError

from .task import execute_spec

Outcome = tuple[str, Any]
EXECUTORS = ("local", "ray")
RAY_INSTALL = "pip install 'topoprune[ray]'"


def _outcome_of(payload: dict) -> Outcome:
    try:
        return "ok", execute_spec(payload)
    except Exception:
        return "error", traceback.format_exc()


class Executor:
    """What every executor shares: torch threads per task, a description, ``with`` support."""

    threads: int | None = 1
    jobs: int | None = 1

    def describe(self) -> str:
        where = f" at {self.address}" if getattr(self, "address", None) else ""
        return (f"{self.kind}{where}, {self.jobs or 'all'} jobs, {self.threads} torch thread(s) "
                "per run")  # fmt: skip

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SerialExecutor(Executor):
    """One run at a time in the driver's own process (``--jobs 1``)."""

    kind = "local"

    def __init__(self, threads: int | None = 1) -> None:
        self.threads = threads
        self._queue: deque[tuple[str, dict]] = deque()

    def submit(self, key: str, payload: dict) -> None:
        self._queue.append((key, payload))

    def wait(self) -> list[tuple[str, Outcome]]:
        """Run the next queued payload; its key and outcome."""
        key, payload = self._queue.popleft()
        return [(key, _outcome_of(payload))]

    def close(self) -> None:
        self._queue.clear()


def _serve(connection: Connection) -> None:
    """A worker process: run each payload the driver sends, answer with its outcome."""
    while True:
        try:
            payload = connection.recv()
        except EOFError:  # the driver closed the pipe: no more work
            return
        connection.send(_outcome_of(payload))


@dataclass
class _Worker:
    process: Any
    connection: Connection
    key: str | None = None  # the run it works on, None when idle
    payload: dict | None = None
    attempt: int = 0


class ProcessExecutor(Executor):
    """Up to ``jobs`` runs at once in worker processes forked from a clean server process
    (``forkserver``: no threads of the driver inherited). A worker takes one run at a time and
    keeps its imports for the next; a killed worker loses only its run, which is retried on a
    new worker."""

    kind = "local"

    def __init__(self, jobs: int, max_retries: int = 2, threads: int | None = 1) -> None:
        if jobs < 1:
            raise TopopruneError(f"--jobs must be >= 1, got {jobs}")
        self.jobs, self.max_retries, self.threads = jobs, max_retries, threads
        self._context = multiprocessing.get_context("forkserver")
        # imported once in the server, not in every worker (torch takes seconds)
        self._context.set_forkserver_preload(["torch", "numpy", "topoprune.runner.task"])
        self._queue: deque[tuple[str, dict, int]] = deque()
        self._workers: list[_Worker] = []

    def submit(self, key: str, payload: dict, attempt: int = 0) -> None:
        self._queue.append((key, payload, attempt))

    def _idle_worker(self) -> _Worker:
        for worker in self._workers:
            if worker.key is None:
                return worker
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs,), daemon=True)
        process.start()
        theirs.close()
        self._workers.append(_Worker(process, ours))
        return self._workers[-1]

    def _start(self) -> None:
        while self._queue and sum(w.key is not None for w in self._workers) < self.jobs:
            worker = self._idle_worker()
            key, payload, attempt = self._queue.popleft()
            try:
                worker.connection.send(payload)
            except OSError:  # it died while idle: the run goes to a new worker
                self._queue.appendleft((key, payload, attempt))
                worker.process.join()
                self._workers.remove(worker)
                continue
            worker.key, worker.payload, worker.attempt = key, payload, attempt

    def wait(self) -> list[tuple[str, Outcome]]:
        """Block until at least one running payload ends; the finished keys and outcomes."""
        finished: list[tuple[str, Outcome]] = []
        while not finished:
            self._start()
            busy = {w.connection: w for w in self._workers if w.key is not None}
            for ready in wait(list(busy)):
                worker = busy[ready]
                key, payload, attempt = worker.key, worker.payload, worker.attempt
                worker.key = worker.payload = None
                try:
                    finished.append((key, worker.connection.recv()))
                    continue
                except (EOFError, OSError):  # it ended without a (whole) word: killed, crashed
                    pass
                process = worker.process
                process.join()
                worker.connection.close()
                self._workers.remove(worker)
                killed = process.exitcode is not None and process.exitcode < 0
                if killed and attempt < self.max_retries:
                    self.submit(key, payload, attempt + 1)
                    continue
                how = (f"was killed by signal {-process.exitcode}" if killed else
                       f"exited with code {process.exitcode} before reporting (its output above "
                       "says why)")  # fmt: skip
                finished.append((key, ("died", f"worker process (pid {process.pid}) {how} on "
                                               f"attempt {attempt + 1} of "
                                               f"{self.max_retries + 1}")))  # fmt: skip
        return finished

    def close(self) -> None:
        for worker in self._workers:
            worker.connection.close()  # an idle worker ends on EOF
            if worker.key is not None:
                worker.process.kill()
            worker.process.join(10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        self._workers.clear()
        self._queue.clear()


def _ray():
    try:
        import ray
    except ImportError:
        raise TopopruneError(
            f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}"
        ) from None
    return ray


class RayExecutor(Executor):
    """Runs as Ray tasks, one CPU each: on a cluster at ``address`` (``auto``, ``HOST:PORT``,
    ``ray://...``), or on a local Ray started for the study (``num_cpus=jobs``) and shut down
    with it. ``jobs`` also caps the runs in flight on a cluster."""

    kind = "ray"

    def __init__(self, address: str | None = None, jobs: int | None = None,
                 max_retries: int = 2, temp_dir: str | None = None,
                 threads: int | None = 1) -> None:  # fmt: skip
        ray = _ray()
        self.jobs, self.max_retries, self.threads, self._ray = jobs, max_retries, threads, ray
        # as ray.init would, but then the local-cluster options below must not be given
        address = address or os.environ.get("RAY_ADDRESS") or None
        self.address = address
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None:
            options["num_cpus"] = jobs
            if temp_dir is not None:
                options["_temp_dir"] = temp_dir
        try:
            self._context = ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise TopopruneError(f"cannot start or reach Ray at {address or 'local'}: {error}") \
                from None  # fmt: skip
        self._remote = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(
            execute_spec
        )
        self._queue: deque[tuple[str, dict]] = deque()
        self._running: dict[Any, str] = {}

    def submit(self, key: str, payload: dict) -> None:
        self._queue.append((key, payload))

    def wait(self) -> list[tuple[str, Outcome]]:
        ray = self._ray
        while self._queue and (self.jobs is None or len(self._running) < self.jobs):
            key, payload = self._queue.popleft()
            # a run holds as many CPUs as torch threads it uses, and a GPU if it trains on one
            cuda = str(payload["settings"].get("device", "")).startswith("cuda")
            task = self._remote.options(num_cpus=payload.get("threads") or 1,
                                        num_gpus=1 if cuda else 0)  # fmt: skip
            self._running[task.remote(payload)] = key
        done, _ = ray.wait(list(self._running), num_returns=1)
        finished = []
        for ref in done:
            key = self._running.pop(ref)
            try:
                finished.append((key, ("ok", ray.get(ref))))
            except ray.exceptions.RayTaskError as error:
                finished.append((key, ("error", str(error))))
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayError) as error:
                finished.append((key, ("died", f"{type(error).__name__}: {error}")))
        return finished

    def close(self) -> None:
        for ref in self._running:
            self._ray.cancel(ref, force=True)
        self._running.clear()
        self._ray.shutdown()  # disconnects; stops only a Ray this executor started


def make_executor(kind: str = "local", *, jobs: int | None = None, address: str | None = None,
                  max_retries: int = 2, threads: int | None = 1,
                  temp_dir: str | None = None) -> Executor:  # fmt: skip
    """The executor the ``study run`` flags ask for (``--jobs 1`` runs in the driver)."""
    if max_retries < 0:
        raise TopopruneError(f"--max-retries must be >= 0, got {max_retries}")
    if kind == "local":
        if address is not None:
            raise TopopruneError("--address needs --executor ray")
        jobs = 1 if jobs is None else jobs
        if jobs == 1:
            return SerialExecutor(threads)
        return ProcessExecutor(jobs, max_retries, threads)
    if kind == "ray":
        return RayExecutor(address, jobs, max_retries, temp_dir, threads)
    raise TopopruneError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
