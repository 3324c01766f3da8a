"""Where data sets live on disk, and how they get there without leaving partial files.

The cache root is ``$TOPOPRUNE_DATA`` or ``~/.cache/topoprune``. A data set is a folder under it
that appears in one atomic rename once every file in it has been verified, so a folder that exists
is complete; interrupted fetches leave only ``.tmp-*`` folders, removed by the next fetch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from topoprune.errors import DataError

DATA_ENV = "TOPOPRUNE_DATA"
DATA_DIR_ENV = "TOPOPRUNE_DATA_DIR"
TMP_PREFIX = ".tmp-"


def data_home(root: str | Path | None = None) -> Path:
    """The cache root: ``root`` if given, else ``$TOPOPRUNE_DATA``, else ``~/.cache/topoprune``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "topoprune"


def user_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """A user folder of data files: ``data_dir``, else ``$TOPOPRUNE_DATA_DIR``, else None."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete ``.tmp-<pid>-*`` folders left by fetches whose process is gone; return them."""
    removed = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        if not entry.name.startswith(TMP_PREFIX):
            continue
        pid_text = entry.name[len(TMP_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue  # another live process is fetching
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def staging_folder(root: Path) -> Iterator[Path]:
    """A temporary folder in ``root`` (same file system: a rename is atomic), always removed."""
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=root))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_folder(staged: Path, target: Path, *, replace: bool = False) -> None:
    """Move a complete, verified folder to ``target`` in one rename.

    With ``replace``, an existing ``target`` is first renamed aside and deleted after the swap, so a
    reader never sees a half-written folder.
    """
    if target.exists():
        if not replace:
            raise DataError(f"{target} already exists; use --force to replace it")
        aside = target.with_name(f"{TMP_PREFIX}{os.getpid()}-old-{target.name}")
        os.replace(target, aside)
        os.replace(staged, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staged, target)


def write_json_atomic(path: Path, payload: object) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    write_bytes_atomic(path, (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: an interrupted write
    leaves the old file (or none), never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
