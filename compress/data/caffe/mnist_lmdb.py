"""The MNIST LMDBs of Caffe's LeNet example, built from the project's offline MNIST; and Fashion-MNIST's.

    python -m compress.data.caffe.mnist_lmdb OUTDIR [--overwrite]
    python -m compress.data.caffe.mnist_lmdb OUTDIR --dataset fashion-mnist [--overwrite]

writes ``OUTDIR/mnist_train_lmdb`` (the 60,000 training images: the ``mnist`` source's train split
then its valid split, which is MNIST's own training order) and ``OUTDIR/mnist_test_lmdb`` (the 10,000
test images) as ``examples/mnist/convert_mnist_data.cpp`` writes them: keys ``%08d`` from
``00000000``, each value a ``Datum`` with channels 1, height 28, width 28, ``data`` the 784 raw
pixels, ``label``. The pickle holds the pixels divided by 256 in float32, which is exact, so the raw
bytes are recovered as ``x * 256`` (checked to be integers in 0..255).

``--dataset fashion-mnist`` reads Fashion-MNIST's idx files (:mod:`compress.data.fashion_mnist`) and writes
``fashion_mnist_train_lmdb`` and ``fashion_mnist_test_lmdb`` the same way, and also
``fashion_mnist_train_pad2_lmdb``: the training images zero-padded to 32x32, which a TRAIN Data layer with
``crop_size: 28`` turns into Caffe's form of a padded random crop (the zoo's Fashion-MNIST recipes read it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from compress.data.caffe.write import write_datum_lmdb
from compress.errors import CompressError

PAD = 2  # the padded training LMDB: 28x28 -> 32x32, for crop_size 28


def raw_pixels(x: np.ndarray, where: str) -> np.ndarray:
    """MNIST pixels stored as ``raw / 256`` -> the raw uint8 values; anything else is an error."""
    raw = np.asarray(x, np.float64) * 256
    if not (np.array_equal(raw, np.rint(raw)) and raw.min() >= 0 and raw.max() <= 255):
        raise CompressError(f"{where}: pixels are not whole multiples of 1/256 in [0, 255/256]; "
                            "cannot recover the raw MNIST bytes")
    return raw.astype(np.uint8)


def mnist_uint8(pickle_path: Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images (60000, 28, 28) uint8, labels), "test": (..10000..)}`` in MNIST's order."""
    from compress.data.mnist import mnist_arrays

    x, y, x_test, y_test = mnist_arrays(pickle_path)
    return {"train": (raw_pixels(x.numpy().reshape(-1, 28, 28), "MNIST train"), y.numpy()),
            "test": (raw_pixels(x_test.numpy().reshape(-1, 28, 28), "MNIST test"), y_test.numpy())}


def padded(images: np.ndarray, pad: int = PAD) -> np.ndarray:
    """(N, H, W) images with ``pad`` zero pixels on every side."""
    return np.pad(images, ((0, 0), (pad, pad), (pad, pad)))


def _fashion_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from compress.data.fashion_mnist import fashion_mnist_uint8

    data = fashion_mnist_uint8()
    return {**data, "train_pad2": (padded(data["train"][0]), data["train"][1])}


DATASETS = {"mnist": ("mnist", mnist_uint8), "fashion-mnist": ("fashion_mnist", _fashion_mnist)}


def write_mnist_lmdbs(outdir: str | Path, *, overwrite: bool = False, pickle_path: Path | None = None,
                      dataset: str = "mnist") -> dict[str, Path]:
    """Write the dataset's LMDBs into ``outdir`` (created if missing); returns ``{split: path}``
    (``train``, ``test``; Fashion-MNIST also ``train_pad2``)."""
    if dataset not in DATASETS:
        raise CompressError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    prefix, read = DATASETS[dataset]
    outdir = Path(outdir)
    data = read(pickle_path) if dataset == "mnist" else read()
    paths = {split: outdir / f"{prefix}_{split}_lmdb" for split in data}
    for path in paths.values():
        if path.exists() and not overwrite:
            raise CompressError(f"{path} already exists; remove it or pass --overwrite")
    outdir.mkdir(parents=True, exist_ok=True)
    for split, path in paths.items():
        write_datum_lmdb(path, *data[split], overwrite=overwrite)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compress.data.caffe.mnist_lmdb",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="folder to hold <dataset>_train_lmdb and <dataset>_test_lmdb")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist",
                        help="mnist (default) or fashion-mnist (also writes the padded train LMDB)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing LMDB folders")
    args = parser.parse_args(argv)
    try:
        paths = write_mnist_lmdbs(args.outdir, overwrite=args.overwrite, dataset=args.dataset)
    except (ValueError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
