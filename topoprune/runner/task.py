"""Running one spec inside a worker: lock, resume, temporary folder, then rename.

The same function runs in the driver (``--jobs 1``), in a local worker process and in a Ray
worker, so a run's files do not depend on where it ran.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import json
import os
import platform
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from topoprune.data.cache import write_bytes_atomic, write_json_atomic
from topoprune.errors import TopopruneError

SUMMARY = "summary.json"
# written into the temporary folder when a task starts: which process to look at (or kill)
WORKER = "worker.json"


def partial_folder(folder: Path) -> Path:
    """Where a run works until it is complete (a killed run resumes there)."""
    return folder.with_name(folder.name + ".partial")


def read_done(folder: str | Path, digest: str) -> dict | None:
    """The record of a finished run, or None when ``folder`` holds none; paths it recorded
    inside the folder where it ran are moved to where ``folder`` is now."""
    path = Path(folder) / SUMMARY
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise TopopruneError(
            f"{path}: unreadable ({error}); delete the folder to rerun it"
        ) from None
    found = record.get("run_spec", {}).get("digest") if isinstance(record, dict) else None
    if found != digest:
        raise TopopruneError(
            f"{path} belongs to another run (digest {found}, expected {digest}); delete the "
            "folder to rerun it"
        )
    where = str(Path(folder).resolve())
    ran_in = record["run_spec"].get("folder", where)
    return _relocate(record, ran_in, where) if ran_in != where else record


def resolve_task(name: str) -> Callable[..., dict]:
    """The function a ``module:function`` name stands for (imported, never evaluated)."""
    module_name, _, function = name.partition(":")
    try:
        return getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as error:
        raise TopopruneError(f"task {name!r} cannot be imported here: {error}") from None


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One attempt at a spec at a time (a second one waits, then finds the run done). On a file
    system without locks (Lustre mounted without ``flock``) attempts are not serialised: the
    rename still leaves one complete folder."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK):
                raise
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _thread_limits(threads: int | None) -> Iterator[None]:
    """Torch's intra-op threads for the task (results depend on them) and the BLAS and OpenMP
    pools numpy and scipy use (so two runs on two cores do not each start two threads), both
    restored afterwards."""
    if threads is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def _relocate(value: Any, old: str, new: str) -> Any:
    """Paths recorded inside the temporary folder, moved to the final one."""
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old) :]
    if isinstance(value, dict):
        return {k: _relocate(v, old, new) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_relocate(v, old, new) for v in value]
    return value


def execute_spec(payload: dict) -> dict:
    """Run one spec (the payload the driver builds) unless its folder is done; return its record.

    The task works in ``<folder>.partial`` and gets the records of the runs it needs; its record
    (paths moved to the final folder, the spec added as ``run_spec``) is written as
    ``summary.json``, last and atomically, and the folder is renamed into place.
    """
    folder = Path(payload["folder"])
    digest = payload["digest"]
    record = read_done(folder, digest)
    if record is not None:
        return record
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.with_name(folder.name + ".lock")
    with _exclusive(lock):
        record = read_done(folder, digest)  # another attempt finished while this one waited
        if record is not None:
            lock.unlink(missing_ok=True)
            return record
        work = partial_folder(folder)
        work.mkdir(exist_ok=True)
        write_json_atomic(work / WORKER, {
            "pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
        })  # fmt: skip
        task = resolve_task(payload["task"])
        start = time.perf_counter()
        with _thread_limits(payload.get("threads")):
            result = task(work, payload["inputs"], **payload["settings"])
        if not isinstance(result, dict):
            raise TopopruneError(f"task {payload['task']} returned {type(result).__name__}, "
                                 "not a dict record")  # fmt: skip
        record = _relocate(result, str(work), str(folder))
        record["run_spec"] = {
            "key": payload["key"], "digest": digest, "task": payload["task"],
            "settings": payload["settings"], "needs": sorted(payload["inputs"]),
            "folder": str(folder), "task_seconds": time.perf_counter() - start,
            "threads": payload.get("threads"), "host": socket.gethostname(),
            "versions": _versions(),
        }  # fmt: skip
        (work / WORKER).unlink()
        # in the task's own key order (tables take their columns from it), read back below so a
        # new run's record and a finished one's are the same object
        write_bytes_atomic(work / SUMMARY, (json.dumps(record, indent=1) + "\n").encode())
        if folder.exists():  # left by an interrupted rename of the same digest
            shutil.rmtree(folder)
        os.rename(work, folder)
        # safe while held: whoever waits on this file, or opens a new one, then finds the run done
        lock.unlink(missing_ok=True)
    return read_done(folder, digest)


def _versions() -> dict:
    """What a run's numbers depend on besides its settings."""
    torch = sys.modules.get("torch")
    return {"python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else None}  # fmt: skip
