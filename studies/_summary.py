"""A study's summary file: configuration, provenance and the wall time of every invocation.

Studies resume, so one full run may take several invocations (an interruption, a fix, a re-run
that only rebuilds tables): each appends its own wall time, revision and date, and
``total_wall_seconds`` sums them.
"""

from __future__ import annotations

import json
from pathlib import Path

from topoprune.data.cache import write_json_atomic


def _earlier_invocations(path: Path) -> list[dict]:
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict):
        return []
    if isinstance(old.get("invocations"), list):
        return old["invocations"]
    if "wall_seconds" in old:  # written before invocations were kept
        return [_invocation(old)]
    return []


def _invocation(record: dict) -> dict:
    origin = record.get("provenance", {})
    return {key: value for key, value in {
        "wall_seconds": record.get("wall_seconds"),
        "git_revision": origin.get("git_revision"),
        "date": origin.get("date"),
        "torch_threads": origin.get("torch_threads"),
        "device": record.get("device"),
        "executor": record.get("executor"),
    }.items() if value is not None}  # fmt: skip


def write_study_summary(path: str | Path, record: dict) -> dict:
    """Write ``record`` (with ``wall_seconds``, ``provenance``) to ``path``, keeping the earlier
    invocations' wall times; returns what was written."""
    path = Path(path)
    invocations = [*_earlier_invocations(path), _invocation(record)]
    total = sum(i.get("wall_seconds", 0.0) for i in invocations)
    written = {**record, "invocations": invocations, "total_wall_seconds": total}
    write_json_atomic(path, written)
    return written
