"""MNIST-style idx files (LeCun's format, also Fashion-MNIST): a directory holding
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte``, each optionally ``.gz``.

Format: two zero bytes, a type code, the number of dimensions, then each dimension as a big-endian
uint32, then the data in big-endian C order. Pixels are scaled by 1/256 as Caffe's MNIST nets expect.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from compress.data.base import (
    ArrayDataset,
    Loaded,
    Request,
    check_classes,
    check_gray_shape,
    gray_tensor,
    parse_preprocess,
    register_layout,
)
from compress.data.mnist import MNIST_PREPROCESS
from compress.errors import CompressError

IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one idx file (gzipped if it ends in ``.gz``) into an array of its stored type."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except gzip.BadGzipFile as e:
        raise CompressError(f"{path}: not a gzip file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise CompressError(f"{path}: not an idx file (expected magic 00 00 <type> <ndim>, "
                            f"found {data[:4].hex(' ') or 'an empty file'})")
    dtype, ndim = IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CompressError(f"{path}: idx header declares {ndim} dimensions but the file has "
                            f"{len(data)} bytes")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise CompressError(f"{path}: expected {expected} bytes of data for shape {dims}, "
                            f"found {len(data) - header}")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an idx file (gzipped if ``path`` ends in ``.gz``); the inverse of read_idx."""
    path = Path(path)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    a = np.asarray(array)
    code = codes.get(a.dtype.newbyteorder("="))
    if code is None:
        raise CompressError(f"{path}: idx cannot store dtype {a.dtype}; expected one of "
                            f"{', '.join(str(d) for d in codes)}")
    body = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + \
        np.ascontiguousarray(a, IDX_TYPES[code]).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(body)


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def is_idx_dir(root: Path) -> bool:
    return any(_find(root, stem) for stem in FILES.values())


def _split(root: Path, images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(_find(root, FILES[images])), read_idx(_find(root, FILES[labels]))
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise CompressError(f"{root}: expected (N, H, W) images and (N,) labels, found {x.shape} "
                            f"images and {y.shape} labels in {FILES[images]} / {FILES[labels]}")
    if x.dtype != np.uint8:
        raise CompressError(f"{root}: expected uint8 pixels in {FILES[images]}, found {x.dtype}")
    return x, y


def read_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, H, W) uint8, labels (N,))`` of the ``train`` or ``test`` split of an idx folder."""
    missing = [FILES[f"{split}_{kind}"] for kind in ("images", "labels")
               if _find(root, FILES[f"{split}_{kind}"]) is None]
    if missing:
        raise CompressError(f"{root}: idx directory is missing {', '.join(missing)} (or .gz)")
    return _split(root, f"{split}_images", f"{split}_labels")


@register_layout("idx", is_idx_dir, "MNIST-style idx files (train-images-idx3-ubyte[.gz], ...)")
def load_idx_dir(root: Path, req: Request) -> Loaded:
    missing = [stem for stem in FILES.values() if _find(root, stem) is None]
    if missing:
        raise CompressError(f"{root}: idx directory is missing {', '.join(missing)} (or .gz)")
    (x, y), (xt, yt) = read_split(root, "train"), read_split(root, "test")
    where = str(root)
    check_gray_shape(req.chw, x.shape[1:], where)
    if xt.shape[1:] != x.shape[1:]:
        raise CompressError(f"{root}: train images are {x.shape[1:]} but test images are {xt.shape[1:]}")
    if min(y.min(initial=0), yt.min(initial=0)) < 0:
        raise CompressError(f"{root}: labels must be >= 0, found {min(y.min(), yt.min())}")
    pp = parse_preprocess(req.preprocess, MNIST_PREPROCESS, where)
    found = int(max(y.max(initial=0), yt.max(initial=0))) + 1
    n_cls = check_classes(found, req.num_classes, where)
    return Loaded(ArrayDataset(gray_tensor(x, pp, where), torch.from_numpy(y.astype(np.int64))),
                  ArrayDataset(gray_tensor(xt, pp, where), torch.from_numpy(yt.astype(np.int64))),
                  f"idx:{root}", n_cls, pp, {"source": "idx", "root": str(root), "augment": ["shift"]},
                  classes_found=found)
