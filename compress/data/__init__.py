"""Datasets for training and evaluation: ``get_data(spec, input_shape) -> DataSplits``.

``spec`` is a registered name (``mnist``, ``synthetic``) or a directory whose layout a registered probe
recognizes (MNIST idx files, an image folder); see :mod:`compress.data.base` for the registry.
A name wins over a directory of the same name (pass ``./mnist`` for the directory).
"""
from __future__ import annotations

from pathlib import Path

from compress.data import fashion_mnist, idx, imagefolder, lmdb_dir, mnist, synthetic  # noqa: F401  (register the sources)
from compress.data.base import LAYOUTS, NAMED, DataSplits, Request, build_splits
from compress.errors import CompressError

__all__ = ["DataSplits", "get_data", "sources"]


def sources() -> dict[str, str]:
    """Every registered name and directory layout with its one-line description."""
    return {**{n: h for n, (_, h) in NAMED.items()}, **{f"<dir: {n}>": h for n, (_, _, h) in LAYOUTS.items()}}


def get_data(spec: str, input_shape: tuple[int, ...], *, batch_size: int = 64, seed: int = 0,
             num_classes: int | None = None, preprocess: dict | None = None, limit: int | None = None,
             distributed: bool = False) -> DataSplits:
    """Train/test loaders for ``spec`` shaped for a net whose input is ``input_shape`` (N, C, H, W).

    ``num_classes`` is the net's output size (the data's labels must fit; synthetic data uses it);
    ``preprocess`` overrides the source's Caffe preprocessing (``scale``, ``mean``, ``channel_order``,
    ``resize``); ``limit`` keeps the first N samples of each split; ``distributed`` shards both splits
    with ``DistributedSampler`` (train shuffled from ``seed``).
    """
    shape = tuple(input_shape)
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        raise CompressError(f"data {spec!r}: input_shape must be (N, C, H, W) with positive C, H, W, "
                            f"found {shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise CompressError(f"data {spec!r}: batch_size must be a positive integer, found {batch_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise CompressError(f"data {spec!r}: limit must be a positive integer, found {limit!r}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes <= 0):
        raise CompressError(f"data {spec!r}: num_classes must be a positive integer, found {num_classes!r}")
    req = Request(str(spec), shape[1:], seed, num_classes, preprocess)
    loaded = NAMED[req.spec][0](req.spec, req) if req.spec in NAMED else _load_dir(Path(spec), req)
    return build_splits(loaded, batch_size=batch_size, seed=seed, limit=limit, distributed=distributed)


def _load_dir(root: Path, req: Request):
    expected = f"a dataset name ({', '.join(NAMED)}) or a directory of " + \
        "; or ".join(h for _, _, h in LAYOUTS.values())
    if not root.exists():
        raise CompressError(f"data {str(root)!r}: no such dataset name or directory; expected {expected}")
    if not root.is_dir():
        raise CompressError(f"data {str(root)!r}: is a file; expected {expected}")
    for detect, load, _ in LAYOUTS.values():
        if detect(root):
            return load(root, req)
    raise CompressError(f"data {str(root)!r}: directory layout not recognized; expected {expected}")
