"""Run specs: the units of work a study is made of, each named by a key and a hash.

A spec names a task function (``"package.module:function"``, importable on every worker), its
JSON settings and the keys of the specs whose records it reads. Its digest hashes the task, the
settings and the digests of what it needs, so changing a dense model's settings changes the
digest of every run that starts from it. Each spec owns one folder, ``<key>-<digest[:10]>``
(open_lth's hashed run directories, made readable): a folder holding ``summary.json`` is done.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topoprune.errors import TopopruneError

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
_TASK = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class RunSpec:
    """One unit of a study: ``task(folder, inputs, **settings)`` returns a small JSON record.

    Parameters
    ----------
    key : str
        Readable and unique in its study (``lenet300-dns-seed0``); letters, digits and ``._+=-``.
    task : str
        ``"package.module:function"``; the function writes only into ``folder`` and takes every
        seed from ``settings``.
    settings : mapping
        JSON values: the task's keyword arguments, hashed canonically.
    needs : tuple of str
        Keys of the specs whose records the task reads (``inputs[key]``).

    Examples
    --------
    >>> dense = RunSpec("dense-seed0", "topoprune.runner.examples:square", {"x": 3})
    >>> pruned = RunSpec("pruned-seed0", "topoprune.runner.examples:square", {"x": 4},
    ...                  needs=("dense-seed0",))
    >>> digests = spec_digests([dense, pruned])
    >>> run_folder("runs", pruned.key, digests[pruned.key]).name == (
    ...     "pruned-seed0-" + digests["pruned-seed0"][:10])
    True
    """

    key: str
    task: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, tuples as lists: equal settings give equal text.

    >>> canonical_json({"b": (1, 2), "a": 0.5})
    '{"a":0.5,"b":[1,2]}'
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TopopruneError(f"run settings must be finite JSON values: {error}") from None


def _check(specs: Sequence[RunSpec]) -> dict[str, RunSpec]:
    by_key: dict[str, RunSpec] = {}
    for spec in specs:
        if not _KEY.match(spec.key):
            raise TopopruneError(f"run key {spec.key!r}: use letters, digits and ._+=- only")
        if not _TASK.match(spec.task):
            raise TopopruneError(f"run {spec.key}: task {spec.task!r} is not 'module:function'")
        if spec.key in by_key:
            raise TopopruneError(f"run key {spec.key!r} appears twice in the study")
        by_key[spec.key] = spec
    for spec in specs:
        missing = [n for n in spec.needs if n not in by_key]
        if missing:
            raise TopopruneError(f"run {spec.key} needs {', '.join(missing)}: not in the study")
    return by_key


def spec_digests(specs: Sequence[RunSpec]) -> dict[str, str]:
    """SHA-256 of each spec's task, settings and the digests of the specs it needs."""
    by_key = _check(specs)
    digests: dict[str, str] = {}
    visiting: set[str] = set()

    def digest(key: str) -> str:
        if key in digests:
            return digests[key]
        if key in visiting:
            raise TopopruneError(f"runs needing one another in a cycle, through {key}")
        visiting.add(key)
        spec = by_key[key]
        text = canonical_json({
            "task": spec.task, "settings": spec.settings,
            "needs": {n: digest(n) for n in spec.needs},
        })  # fmt: skip
        visiting.discard(key)
        digests[key] = hashlib.sha256(text.encode()).hexdigest()
        return digests[key]

    for spec in specs:
        digest(spec.key)
    return digests


def run_folder(root: str | Path, key: str, digest: str) -> Path:
    """The folder a run owns: readable key, then the start of its digest."""
    return Path(root) / f"{key}-{digest[:10]}"
