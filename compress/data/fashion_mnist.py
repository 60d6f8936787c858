"""Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of 10 kinds of clothing, 60k train / 10k test.

Read from the idx files that Debian's ``dataset-fashion-mnist`` package installs under
``/usr/share/datasets/fashion-mnist`` (``COMPRESS_FASHION_MNIST`` names another folder holding the same four
files). Preprocessing is MNIST's (pixels scaled by 1/256, no mean), which the zoo's Fashion-MNIST nets were
trained with. Training batches are augmented by default with ``shift`` and ``mirror`` (a random translation of
up to 2 pixels and a left-right flip): the same padded random crop and mirror the zoo's Caffe recipes apply.
"""
from __future__ import annotations

import os
from pathlib import Path

from compress.data.base import Loaded, Request, register_name
from compress.errors import CompressError

NAME = "fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV = "COMPRESS_FASHION_MNIST"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")


def fashion_mnist_dir() -> Path:
    """The folder holding the four idx files; one line naming the package to install when absent."""
    from compress.data.idx import is_idx_dir

    root = Path(os.environ.get(ENV) or DEFAULT_DIR)
    if not root.is_dir() or not is_idx_dir(root):
        where = f"{ENV}={root}" if os.environ.get(ENV) else str(root)
        raise CompressError(f"Fashion-MNIST not found ({where} holds no idx files); install Debian's package "
                            "with `apt-get install dataset-fashion-mnist`, or set "
                            f"{ENV} to a folder of its idx files")
    return root


@register_name(NAME, "Fashion-MNIST (60k/10k) from Debian's dataset-fashion-mnist package")
def load_fashion_mnist(spec: str | Path, req: Request) -> Loaded:
    from compress.data.idx import load_idx_dir

    loaded = load_idx_dir(fashion_mnist_dir(), req)
    loaded.name = NAME
    loaded.meta.update(source=NAME, augment=["shift", "mirror"], classes=list(CLASSES))
    return loaded


def fashion_mnist_uint8() -> dict:
    """``{"train": (images (60000, 28, 28) uint8, labels), "test": (...)}`` in the files' order."""
    from compress.data.idx import read_split

    root = fashion_mnist_dir()
    return {"train": read_split(root, "train"), "test": read_split(root, "test")}
