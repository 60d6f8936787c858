"""What every data source shares: the result type, the preprocessing record, the source registry,
and the loaders (seeded shuffling, ``limit``, ``DistributedSampler``).

A source is a function ``load(spec, request) -> Loaded`` registered either under a name
(``mnist``, ``synthetic``) or as a directory layout with a ``detect(path) -> bool`` probe
(idx files, image folder). :func:`compress.data.get_data` dispatches through the registry, so a new
source is one decorated function in one new file.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from compress.errors import CompressError
from compress.numbers import finite_number
from converters.caffe.names import shown, shown_path

CHANNEL_ORDERS = ("BGR", "RGB", "gray")


@dataclass(frozen=True)
class DataSplits:
    """Train and test loaders yielding ``(x float32 NCHW, y int64)`` batches.

    ``meta`` holds ``preprocess`` (the model-file ``meta["preprocess"]`` record of what was applied),
    ``sizes`` ({"train": n, "test": n}), ``source`` (the source kind) and source-specific keys
    (``classes`` for an image folder; ``augment``, the training-batch augmentations of
    :mod:`compress.data.augment` the source suggests when the caller names none: ``shift`` for
    MNIST-style digits; image folders crop and mirror inside the dataset, as Caffe does). With
    ``distributed=True`` call ``train.sampler.set_epoch(epoch)`` each epoch, as with any
    ``DistributedSampler``.
    """

    train: DataLoader
    test: DataLoader
    name: str
    num_classes: int
    meta: dict


@dataclass(frozen=True)
class Preprocess:
    """Caffe's transform, ``(pixel - mean) * scale`` on 0..255 pixels, then the crop.

    ``mean`` is per-channel values, a ``mean.binaryproto`` path, or None; ``resize`` is the square
    size images are warped to before cropping (image folders only).
    """

    scale: float = 1.0
    mean: tuple[float, ...] | str | None = None
    channel_order: str = "BGR"
    resize: int | None = None

    def to_meta(self) -> dict:
        out: dict[str, Any] = {"scale": self.scale, "channel_order": self.channel_order,
                               "mean": list(self.mean) if isinstance(self.mean, tuple) else None}
        if isinstance(self.mean, str):
            out["mean_file"] = self.mean
        if self.resize is not None:
            out["resize"] = self.resize
        return out


def parse_preprocess(user: dict | None, defaults: Preprocess, where: str) -> Preprocess:
    """Overlay the user's ``preprocess`` dict on a source's defaults, validating every key."""
    if user is None:
        return defaults
    if not isinstance(user, dict):
        raise CompressError(f"{where}: preprocess must be a dict, found {type(user).__name__}")
    allowed = {f.name for f in fields(Preprocess)} | {"mean_file"}
    unknown = sorted(set(user) - allowed)
    if unknown:
        from converters.caffe.names import listed

        raise CompressError(f"{where}: unknown preprocess key(s) {listed(unknown)}; "
                            f"expected {', '.join(sorted(allowed))}")
    values = {k: user[k] for k in allowed - {"mean_file"} if k in user}
    if user.get("mean_file") is not None:
        values["mean"] = str(user["mean_file"])  # model-file meta: mean_file wins over its summary
    pp = Preprocess(**{**defaults.__dict__, **values})
    scale = pp.scale
    if not finite_number(scale) or scale <= 0:
        raise CompressError(f"{where}: preprocess scale must be a positive number, found {_cut(scale)}")
    mean = pp.mean
    if isinstance(mean, (list, tuple)):
        if not mean or not all(finite_number(v) for v in mean):
            raise CompressError(f"{where}: preprocess mean must be a list of finite numbers, found "
                                f"{_cut(list(mean))}")
        mean = tuple(float(v) for v in mean)
    elif isinstance(mean, Path):
        mean = str(mean)
    elif mean is not None and not isinstance(mean, str):
        raise CompressError(f"{where}: preprocess mean must be a list of numbers, a .binaryproto "
                            f"path or null, found {_cut(mean)}")
    if pp.channel_order not in CHANNEL_ORDERS:
        raise CompressError(f"{where}: preprocess channel_order must be one of "
                            f"{', '.join(CHANNEL_ORDERS)}, found {_cut(pp.channel_order)}")
    if pp.resize is not None and (isinstance(pp.resize, bool) or not isinstance(pp.resize, int)
                                  or pp.resize <= 0):
        raise CompressError(f"{where}: preprocess resize must be a positive integer, found {_cut(pp.resize)}")
    return Preprocess(scale=float(scale), mean=mean, channel_order=pp.channel_order, resize=pp.resize)


def _cut(value: Any) -> str:
    from converters.caffe.names import cut

    return cut(repr(value), 120)


@dataclass(frozen=True)
class Request:
    """What a source is asked for: the net's input ``(C, H, W)`` and the caller's options."""

    spec: str
    chw: tuple[int, int, int]
    seed: int
    num_classes: int | None
    preprocess: dict | None


@dataclass
class Loaded:
    """What a source returns; :func:`build_splits` turns it into loaders."""

    train: Dataset
    test: Dataset
    name: str
    num_classes: int
    preprocess: Preprocess
    meta: dict = field(default_factory=dict)
    worker_init_fn: Callable[[int], None] | None = None
    classes_found: int | None = None  # classes in the data itself (num_classes: the net's, maybe more)


Loader = Callable[[Path | str, Request], Loaded]
NAMED: dict[str, tuple[Loader, str]] = {}
LAYOUTS: dict[str, tuple[Callable[[Path], bool], Loader, str]] = {}


def register_name(name: str, help_: str) -> Callable[[Loader], Loader]:
    """Register ``fn`` as the source for the literal spec ``name`` (``--data mnist``)."""

    def deco(fn: Loader) -> Loader:
        if name in NAMED:
            raise RuntimeError(f"data source {name!r} registered twice")
        NAMED[name] = (fn, help_)
        return fn

    return deco


def register_layout(name: str, detect: Callable[[Path], bool], help_: str) -> Callable[[Loader], Loader]:
    """Register ``fn`` for directories where ``detect(path)`` is true; probed in registration order."""

    def deco(fn: Loader) -> Loader:
        if name in LAYOUTS:
            raise RuntimeError(f"data layout {name!r} registered twice")
        LAYOUTS[name] = (detect, fn, help_)
        return fn

    return deco


class ArrayDataset(Dataset):
    """In-memory ``(x, y)`` tensors whose batches are one indexing operation, not per-sample stacking.

    ``__getitems__`` (used by ``DataLoader`` when present) returns a finished batch, and
    :func:`_collate` passes it through: 3x less loader overhead than ``TensorDataset`` on MNIST.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if len(x) != len(y):
            raise CompressError(f"{len(x)} images but {len(y)} labels")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> _Batch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return _Batch((self.x[idx], self.y[idx]))


class _Batch(tuple):
    """A batch that is already collated."""


def _collate(samples):
    if isinstance(samples, _Batch):
        return tuple(samples)
    return torch.utils.data.default_collate(samples)


def check_classes(found: int, requested: int | None, where: str) -> int:
    """The net's output size must cover the data's labels; return the class count to report."""
    if requested is None:
        return found
    if requested < found:
        raise CompressError(f"{where}: the net has {requested} outputs but the data has {found} classes")
    return requested


def check_gray_shape(chw: tuple[int, int, int], hw: tuple[int, int], where: str) -> None:
    if chw != (1, *hw):
        raise CompressError(f"{where}: images are (1, {hw[0]}, {hw[1]}) but the net's input is "
                            f"{tuple(chw)} (C, H, W)")


def gray_tensor(raw: np.ndarray, pp: Preprocess, where: str) -> torch.Tensor:
    """(N, H, W) pixels in 0..255 -> (N, 1, H, W) float32 ``(raw - mean) * scale``."""
    if pp.channel_order != "gray":
        raise CompressError(f"{where}: images are grayscale, preprocess channel_order is "
                            f"{shown(pp.channel_order)}")
    if isinstance(pp.mean, str):
        raise CompressError(f"{where}: a mean file is supported for image folders only, found "
                            f"{shown_path(pp.mean)}")
    x = raw.astype(np.float32, copy=True)
    if pp.mean is not None:
        if len(pp.mean) != 1:
            raise CompressError(f"{where}: grayscale images need 1 mean value, found {len(pp.mean)}")
        x -= np.float32(pp.mean[0])
    x *= np.float32(pp.scale)
    return torch.from_numpy(x).unsqueeze(1)


def _limited(ds: Dataset, limit: int | None) -> Dataset:
    if limit is None or limit >= len(ds):
        return ds
    if isinstance(ds, ArrayDataset):
        return ArrayDataset(ds.x[:limit], ds.y[:limit])
    return Subset(ds, range(limit))


def build_splits(loaded: Loaded, *, batch_size: int, seed: int, limit: int | None,
                 distributed: bool) -> DataSplits:
    """Loaders over a source's datasets: seeded shuffle for train, fixed order for test."""
    train, test = _limited(loaded.train, limit), _limited(loaded.test, limit)
    for split, ds in (("train", train), ("test", test)):
        if len(ds) == 0 and loaded.meta.get("single_split") != "test":
            raise CompressError(f"{loaded.name}: the {split} split is empty")
    common = {"batch_size": batch_size, "num_workers": 0, "collate_fn": _collate,
              "worker_init_fn": loaded.worker_init_fn}
    if distributed:
        import torch.distributed as dist
        from torch.utils.data.distributed import DistributedSampler

        if not (dist.is_available() and dist.is_initialized()):
            raise CompressError("distributed=True needs an initialized torch.distributed process group "
                                "(run under torchrun and call init_process_group first)")
        train_loader = DataLoader(train, sampler=DistributedSampler(train, shuffle=True, seed=seed),
                                  **common)
        # Each rank sees 1/world of the test set, padded by repeating up to world-1 samples.
        test_loader = DataLoader(test, sampler=DistributedSampler(test, shuffle=False), **common)
    else:
        g = torch.Generator().manual_seed(seed)
        train_loader = DataLoader(train, shuffle=len(train) > 0, generator=g, **common)
        test_loader = DataLoader(test, shuffle=False, **common)
    extra = dict(loaded.meta)
    meta = {"source": extra.pop("source", "unknown"), "preprocess": loaded.preprocess.to_meta(),
            "sizes": {"train": len(train), "test": len(test)},
            "sizes_whole": {"train": len(loaded.train), "test": len(loaded.test)}, **extra}
    if loaded.classes_found is not None:
        meta["classes_found"] = loaded.classes_found
    return DataSplits(train_loader, test_loader, loaded.name, loaded.num_classes, meta)
