"""Tiny task functions for the runner's examples and tests (the studies' tasks live with them)."""

from __future__ import annotations

import time
from pathlib import Path

from topoprune.data.cache import write_json_atomic


def square(folder: Path, inputs: dict, *, x: int, sleep: float = 0.0) -> dict:
    """``x * x``, after ``sleep`` seconds, also written to ``value.json`` in the run's folder."""
    time.sleep(sleep)
    write_json_atomic(Path(folder) / "value.json", {"value": x * x})
    return {"value": x * x, "file": str(Path(folder) / "value.json")}


def add_inputs(folder: Path, inputs: dict, *, x: int) -> dict:
    """``x`` plus the values of the runs it needs."""
    return {"value": x + sum(record["value"] for record in inputs.values())}


def thread_pools(folder: Path, inputs: dict) -> dict:
    """The threads torch and every BLAS or OpenMP pool would use inside this run."""
    import torch
    from threadpoolctl import threadpool_info

    return {"torch": torch.get_num_threads(),
            "pools": {f"{p['internal_api']}:{p['filepath']}": p["num_threads"]
                      for p in threadpool_info()}}  # fmt: skip


def fail(folder: Path, inputs: dict, *, message: str) -> dict:
    """Raise ``ValueError(message)``: a task that fails inside (each attempt adds a line to
    ``attempts`` in its folder, so a test can see it was not retried)."""
    with open(Path(folder) / "attempts", "a") as handle:
        handle.write("attempt\n")
    raise ValueError(message)
