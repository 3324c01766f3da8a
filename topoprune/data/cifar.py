"""CIFAR-10 from the standard python-pickle batches (``cifar-10-batches-py``) in a user folder.

CIFAR-10 cannot be downloaded by topoprune; users put the extracted folder somewhere and pass it.
The batches are pickles, so they are read with an unpickler that resolves only the few numpy names
an array needs: a file that references anything else (a code payload) is refused, not run.
"""

from __future__ import annotations

import datetime as _dt
import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import torch

from topoprune.data.cache import (
    data_home,
    publish_folder,
    staging_folder,
    user_data_dir,
    write_json_atomic,
)
from topoprune.data.images import DEFAULT_VAL_SIZE, ImageDataset, make_dataset, to_float_images
from topoprune.errors import DataError

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

_RECONSTRUCT = np.zeros(1).__reduce__()[0]
# (module, name) pairs a numpy-array pickle legitimately needs, across numpy 1.x and 2.x.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, name: str) -> None:
        super().__init__(file, encoding="bytes")
        self._name = name

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("_codecs", "encode"):
            # Python 3 writes bytes at protocol 2 as _codecs.encode(text, "latin1").
            return _latin1_encode
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._name}: refusing to load: the pickle references {module}.{name}, which "
                "could run code. A CIFAR-10 batch holds only arrays, lists and strings."
            ) from None


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected codec {encoding!r}")
    return text.encode("latin1")


def read_pickle_batch(path: str | Path) -> dict:
    """Read one CIFAR batch file safely; keys come back as ``str``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(raw), str(path)).load()
    except DataError:
        raise
    except Exception as exc:  # any malformed pickle: truncated, wrong opcodes, ...
        raise DataError(
            f"{path}: not a readable CIFAR batch ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, found {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def read_batch_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one batch, validated."""
    batch = read_pickle_batch(path)
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: missing 'data' or 'labels' (keys: {sorted(batch)})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072)")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' has {data.shape[1]} columns, expected 3072")
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def find_cifar10(folder: Path) -> Path | None:
    """``folder`` itself if it holds the batches, else ``folder/cifar-10-batches-py`` or
    ``folder/cifar10/cifar-10-batches-py``; None when neither does."""
    for candidate in (folder, folder / FOLDER, folder / "cifar10" / FOLDER):
        if (candidate / TEST_BATCH).is_file():
            return candidate
    return None


def _missing(folder: Path | None) -> DataError:
    where = f"in {folder}" if folder else "in the cache"
    names = ", ".join((*TRAIN_BATCHES, TEST_BATCH))
    return DataError(
        f"CIFAR-10 not found {where}. topoprune cannot download it: extract the python version "
        f"(cifar-10-python.tar.gz) so that a folder {FOLDER}/ holds {names} and {META}, then "
        "pass its parent folder with --data-dir (or TOPOPRUNE_DATA_DIR), or run "
        "`topoprune data fetch cifar10 --data-dir FOLDER` once to copy it into the cache."
    )


def locate_cifar10(data_dir: str | Path | None = None, root: str | Path | None = None) -> Path:
    """The folder of CIFAR-10 batches: ``data_dir`` / ``$TOPOPRUNE_DATA_DIR``, else the cache."""
    folder = user_data_dir(data_dir)
    base = folder if folder is not None else data_home(root)
    found = find_cifar10(base) if base.is_dir() else None
    if found is None:
        raise _missing(folder)
    missing = [n for n in TRAIN_BATCHES if not (found / n).is_file()]
    if missing:
        raise DataError(f"{found}: missing {', '.join(missing)}")
    return found


def load_cifar10(
    *,
    data_dir: str | Path | None = None,
    root: str | Path | None = None,
    val_size: int = DEFAULT_VAL_SIZE,
    normalize: bool = False,
) -> ImageDataset:
    """CIFAR-10 (Krizhevsky 2009): images ``(N, 3, 32, 32)``; the last ``val_size`` training
    images (from ``data_batch_5``) are the validation split."""
    folder = locate_cifar10(data_dir, root)
    parts = [read_batch_arrays(folder / name) for name in TRAIN_BATCHES]
    train_pixels = np.concatenate([p for p, _ in parts])
    train_labels = np.concatenate([labels for _, labels in parts])
    test_pixels, test_labels = read_batch_arrays(folder / TEST_BATCH)
    classes = CLASSES
    if (folder / META).is_file():
        names = read_pickle_batch(folder / META).get("label_names")
        if isinstance(names, list) and len(names) == len(CLASSES):
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return make_dataset(
        "cifar10",
        to_float_images(train_pixels),
        torch.from_numpy(train_labels),
        to_float_images(test_pixels),
        torch.from_numpy(test_labels),
        classes,
        val_size=min(val_size, len(train_labels) - 1),
        normalize=normalize,
        info={"source": str(folder)},
    )


def fetch_cifar10(
    *, data_dir: str | Path | None = None, root: str | Path | None = None, force: bool = False
) -> Path:
    """Validate CIFAR-10 batches in a user folder and copy them into the cache atomically."""
    cache = data_home(root) / "cifar10"
    if cache.is_dir() and not force:
        return cache / FOLDER
    folder = user_data_dir(data_dir)
    if folder is None:
        raise _missing(None)
    source = locate_cifar10(folder)
    names = [*TRAIN_BATCHES, TEST_BATCH]
    for name in names:
        read_batch_arrays(source / name)
    with staging_folder(data_home(root)) as tmp:
        staged = tmp / "cifar10"
        (staged / FOLDER).mkdir(parents=True)
        for name in [*names, META]:
            if (source / name).is_file():
                shutil.copyfile(source / name, staged / FOLDER / name)
        write_json_atomic(
            staged / "SOURCE.json",
            {
                "dataset": "cifar10",
                "source": f"folder:{source}",
                "fetched": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )
        publish_folder(staged, cache, replace=force)
    return cache / FOLDER
