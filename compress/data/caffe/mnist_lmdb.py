"""The MNIST LMDBs of Caffe's LeNet example, built from the project's offline MNIST.

    python -m compress.data.caffe.mnist_lmdb OUTDIR [--overwrite]

writes ``OUTDIR/mnist_train_lmdb`` (the 60,000 training images: the ``mnist`` source's train split
then its valid split, which is MNIST's own training order) and ``OUTDIR/mnist_test_lmdb`` (the 10,000
test images) as ``examples/mnist/convert_mnist_data.cpp`` writes them: keys ``%08d`` from
``00000000``, each value a ``Datum`` with channels 1, height 28, width 28, ``data`` the 784 raw
pixels, ``label``. The pickle holds the pixels divided by 256 in float32, which is exact, so the raw
bytes are recovered as ``x * 256`` (checked to be integers in 0..255).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from compress.data.caffe.write import write_datum_lmdb
from compress.errors import CompressError

TRAIN, TEST = "mnist_train_lmdb", "mnist_test_lmdb"


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


def write_mnist_lmdbs(outdir: str | Path, *, overwrite: bool = False,
                      pickle_path: Path | None = None) -> dict[str, Path]:
    """Write both LMDBs into ``outdir`` (created if missing); returns ``{"train": path, "test": path}``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"train": outdir / TRAIN, "test": outdir / TEST}
    for path in paths.values():
        if path.exists() and not overwrite:
            raise CompressError(f"{path} already exists; remove it or pass --overwrite")
    data = mnist_uint8(pickle_path)
    for split, path in paths.items():
        write_datum_lmdb(path, *data[split], overwrite=overwrite)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compress.data.caffe.mnist_lmdb",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="folder to hold mnist_train_lmdb and mnist_test_lmdb")
    parser.add_argument("--overwrite", action="store_true", help="replace existing LMDB folders")
    args = parser.parse_args(argv)
    try:
        paths = write_mnist_lmdbs(args.outdir, overwrite=args.overwrite)
    except (ValueError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
