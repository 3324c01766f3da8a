"""CIFAR-10 reader, on small batches written exactly like the official python-pickle files.

The official files were written by Python 2 cPickle at protocol 2: a dict whose keys are byte
strings, labels a list of ints, data a uint8 ndarray pickled through
numpy.core.multiarray._reconstruct with its buffer as a (byte) string.
"""

import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from topoprune.data import cifar, load_dataset
from topoprune.data.cifar import fetch_cifar10, read_pickle_batch
from topoprune.errors import DataError

N_PER_BATCH = 7


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 str opcodes and numpy's reconstructor under its numpy 1.x name."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    # Python 2 str is a byte string: numpy's dtype state ("|", field names) was written so too.
    dispatch[str] = lambda self, obj: self.save_py2_str(obj.encode("latin1"))

    def save_global(self, obj, name=None):
        if obj is cifar._RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def batch(seed, n=N_PER_BATCH, label=b"training batch 1 of 5"):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    return {
        b"batch_label": label,
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def write_cifar(folder, protocol2_py2=True):
    folder.mkdir(parents=True)
    dump = py2_pickle if protocol2_py2 else (lambda obj: pickle.dumps(obj, protocol=4))
    batches = {}
    for i, name in enumerate([*cifar.TRAIN_BATCHES, cifar.TEST_BATCH]):
        batches[name] = batch(i)
        (folder / name).write_bytes(dump(batches[name]))
    meta = {b"num_cases_per_batch": N_PER_BATCH, b"num_vis": 3072,
            b"label_names": [c.encode() for c in cifar.CLASSES]}  # fmt: skip
    (folder / cifar.META).write_bytes(dump(meta))
    return batches


def test_written_files_look_like_python2_cpickle(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert raw.startswith(b"\x80\x02}")
    assert b"numpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw


@pytest.mark.parametrize("py2", [True, False])
def test_reads_batches_into_tensors(tmp_path, py2):
    batches = write_cifar(tmp_path / "cifar-10-batches-py", protocol2_py2=py2)
    data = load_dataset("cifar10", data_dir=tmp_path, val_size=3)
    assert data.train.images.shape == (5 * N_PER_BATCH - 3, 3, 32, 32)
    assert data.val.images.shape == (3, 3, 32, 32) and len(data.test) == N_PER_BATCH
    assert data.classes[0] == "airplane" and data.classes[9] == "truck"
    first = batches["data_batch_1"][b"data"][0]
    # the row is 1024 red, then green, then blue values of a 32x32 image, row-major
    expected = torch.from_numpy(first.reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.allclose(data.train.images[0], expected)
    assert data.test.labels.tolist() == batches["test_batch"][b"labels"]
    assert data.val.labels.tolist() == batches["data_batch_5"][b"labels"][-3:]


def test_folder_itself_or_parent(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    a = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py", val_size=1)
    b = load_dataset("cifar10", data_dir=tmp_path, val_size=1)
    assert torch.equal(a.test.images, b.test.images)


def test_code_payload_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Payload()}, protocol=2))
    with pytest.raises(DataError, match=r"test_batch: refusing to load: .*(posix|os)\.system"):
        load_dataset("cifar10", data_dir=tmp_path, val_size=1)
    assert not marker.exists()


def test_truncated_and_malformed_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3: not a readable CIFAR batch"):
        load_dataset("cifar10", data_dir=tmp_path, val_size=1)
    path.write_bytes(py2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="100 columns, expected 3072"):
        load_dataset("cifar10", data_dir=tmp_path, val_size=1)
    path.write_bytes(py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(DataError, match="2 images but 1 labels"):
        load_dataset("cifar10", data_dir=tmp_path, val_size=1)
    path.write_bytes(py2_pickle([1, 2]))
    with pytest.raises(DataError, match="expected a dict"):
        read_pickle_batch(path)


def test_missing_cifar_explains_what_to_do(cache_root, tmp_path):
    with pytest.raises(DataError, match=r"cannot download it.*cifar-10-batches-py.*data_batch_1"):
        load_dataset("cifar10")
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError, match="missing data_batch_4"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_fetch_copies_into_cache(cache_root, tmp_path):
    write_cifar(tmp_path / "user" / "cifar-10-batches-py")
    path = fetch_cifar10(data_dir=tmp_path / "user")
    assert path == cache_root / "cifar10" / "cifar-10-batches-py"
    data = load_dataset("cifar10", val_size=2)  # now from the cache, no data_dir
    assert len(data.test) == N_PER_BATCH
    assert sorted(p.name for p in cache_root.iterdir()) == ["cifar10"]
