"""Studies as graphs of run specs, executed locally or on Ray (docs/running.md).

A study lists its runs as :class:`RunSpec` (a key, a task function, JSON settings, the runs it
needs); :func:`run_specs` runs those not done yet on an executor from :func:`make_executor`.
"""

from .driver import RunRecords, StudyFailed, run_specs
from .executors import EXECUTORS, ProcessExecutor, RayExecutor, SerialExecutor, make_executor
from .spec import RunSpec, canonical_json, run_folder, spec_digests

__all__ = [
    "EXECUTORS",
    "ProcessExecutor",
    "RayExecutor",
    "RunRecords",
    "RunSpec",
    "SerialExecutor",
    "StudyFailed",
    "canonical_json",
    "make_executor",
    "run_folder",
    "run_specs",
    "spec_digests",
]
