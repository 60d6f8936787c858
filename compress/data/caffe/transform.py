"""``transform_param``: Caffe's ``DataTransformer`` (BVLC ``src/caffe/data_transformer.cpp``), per batch.

For every image, in Caffe's order of draws: ``do_mirror = mirror && Rand(2)``; with ``crop_size``,
the offsets ``h_off = Rand(H - crop + 1)``, ``w_off = Rand(W - crop + 1)`` in TRAIN and the centre
``(H - crop) / 2``, ``(W - crop) / 2`` in TEST. Each output pixel is the input pixel at
``(c, h_off + h, w_off + w)`` and is computed as ``(pixel - mean) * scale`` in float32, where the
mean is the ``mean_file`` image at that same position (the mean is cropped with the image), or
``mean_value[c]`` (one value serves every channel), or absent (``pixel * scale``); mirroring then puts
column ``w`` at ``width - 1 - w``. Note that Caffe mirrors in TEST too when ``mirror`` is set (only
the crop depends on the phase), and so does this.

Checks as Caffe's: ``crop_size`` no larger than the image, a mean file of the images' own shape, one
mean value or one per channel, not both ``mean_file`` and ``mean_value``. Deprecated copies of
``scale``/``mean_file``/``crop_size``/``mirror`` in ``data_param``/``image_data_param`` override
``transform_param`` as Caffe's upgrade of old nets (``UpgradeNetDataTransformation``) makes them.
Random draws come from :class:`compress.data.caffe.rng.CaffeRng` (see there why Caffe's own
sequence cannot be reproduced).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from compress.data.caffe.datum import chw_text
from compress.data.caffe.rng import CaffeRng
from compress.errors import CompressError
from converters.caffe.names import shown_path

_DEPRECATED_HOLDERS = {"Data": "data_param", "ImageData": "image_data_param"}
_DEPRECATED_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


@dataclass(frozen=True)
class TransformConfig:
    """The fields of ``TransformationParameter`` that the data layers use."""

    scale: float = 1.0
    mirror: bool = False
    crop_size: int = 0
    mean_file: str | None = None
    mean_values: tuple[float, ...] = ()
    force_color: bool = False
    force_gray: bool = False

    def __post_init__(self):
        if not math.isfinite(self.scale):
            raise CompressError(f"transform_param.scale must be finite, found {self.scale}")
        if self.mean_file is not None and self.mean_values:
            raise CompressError("transform_param: cannot specify mean_file and mean_value at the same time")


def transform_config(layer, where: str) -> TransformConfig:
    """The layer's ``transform_param`` (with deprecated per-layer copies applied), validated."""
    t = layer.transform_param
    values = {"scale": t.scale, "mirror": t.mirror, "crop_size": t.crop_size,
              "mean_file": t.mean_file if t.HasField("mean_file") else None,
              "mean_values": tuple(float(v) for v in t.mean_value),
              "force_color": t.force_color, "force_gray": t.force_gray}
    holder = _DEPRECATED_HOLDERS.get(layer.type)
    if holder and layer.HasField(holder):
        old = getattr(layer, holder)
        values.update({f: getattr(old, f) for f in _DEPRECATED_FIELDS if old.HasField(f)})
    try:
        return TransformConfig(**values)
    except CompressError as e:
        raise CompressError(f"{where}: {e}") from None


class Transformer:
    """``DataTransformer`` of one layer in one phase: validates images, transforms batches."""

    def __init__(self, cfg: TransformConfig, phase: str, where: str):
        self.cfg, self.train, self.where = cfg, phase == "TRAIN", where
        self.mean = _read_mean(cfg.mean_file, where) if cfg.mean_file is not None else None
        self.mean_values = np.asarray(cfg.mean_values, np.float32) if cfg.mean_values else None
        self.image_chw: tuple[int, int, int] | None = None

    def setup(self, chw: tuple[int, ...], where: str) -> tuple[int, int, int]:
        """Check the first image against the parameters; return the output (C, H, W)."""
        self.image_chw = tuple(int(d) for d in chw)
        self.check(self.image_chw, where)
        c, h, w = self.image_chw
        crop = self.cfg.crop_size
        return (c, crop, crop) if crop else (c, h, w)

    def check(self, chw: tuple[int, ...], where: str) -> None:
        """Refuse an image this layer cannot transform (Caffe's CHECKs in ``Transform``)."""
        c, h, w = chw
        c0, h0, w0 = self.image_chw
        crop = self.cfg.crop_size
        if c != c0 or (not crop and (h, w) != (h0, w0)):
            same = "" if crop else " (without crop_size every image must have the same size)"
            raise CompressError(f"{where}: image is {chw_text(chw)}, the first one is "
                                f"{chw_text(self.image_chw)}{same}")
        if crop and (h < crop or w < crop):
            raise CompressError(f"{where}: transform_param.crop_size {crop} is larger than the image "
                                f"{h}x{w}")
        if self.mean is not None and self.mean.shape != tuple(chw):
            raise CompressError(f"{where}: transform_param.mean_file {shown_path(self.cfg.mean_file)} holds "
                                f"a {chw_text(self.mean.shape)} mean, the image is {chw_text(chw)}; the mean "
                                "must have the image's shape (it is cropped with the image)")
        if self.mean_values is not None and len(self.mean_values) not in (1, c):
            raise CompressError(f"{self.where}: transform_param has {len(self.mean_values)} mean_value "
                                f"entries for {c}-channel images; give 1 or {c}")

    def __call__(self, images: np.ndarray | list[np.ndarray], rng: CaffeRng) -> np.ndarray:
        """Transform a batch: a (B, C, H, W) array or a list of (C, H, W) images -> float32 (B, C, h, w)."""
        n, crop, mirror = len(images), self.cfg.crop_size, self.cfg.mirror
        random_crop = bool(crop) and self.train
        k = int(mirror) + 2 * random_crop
        draws = rng.raw(n * k).reshape(n, k) if k else None
        sizes = (np.array([img.shape[1:] for img in images]) if isinstance(images, list)
                 else np.broadcast_to(np.array(images.shape[2:]), (n, 2)))
        if random_crop:
            h_off = draws[:, int(mirror)] % (sizes[:, 0] - crop + 1)
            w_off = draws[:, int(mirror) + 1] % (sizes[:, 1] - crop + 1)
        elif crop:
            h_off, w_off = (sizes[:, 0] - crop) // 2, (sizes[:, 1] - crop) // 2
        out = (_crop(images, h_off, w_off, crop) if crop else _stack(images)).astype(np.float32)
        if self.mean is not None:
            out -= _crop_mean(self.mean, h_off, w_off, crop) if crop else self.mean
        elif self.mean_values is not None:
            out -= self.mean_values.reshape(-1, 1, 1)
        if self.cfg.scale != 1:
            out *= np.float32(self.cfg.scale)
        if mirror:
            flip = draws[:, 0] % 2 == 1
            out[flip] = out[flip][..., ::-1]
        return out


def _stack(images: np.ndarray | list[np.ndarray]) -> np.ndarray:
    return images if isinstance(images, np.ndarray) else np.stack(images)


def _crop(images, h_off: np.ndarray, w_off: np.ndarray, crop: int) -> np.ndarray:
    """Each image's crop x crop window at its own offsets: (B, C, crop, crop)."""
    if isinstance(images, list):
        pairs = zip(images, h_off, w_off, strict=True)
        return np.stack([img[:, h:h + crop, w:w + crop] for img, h, w in pairs])
    if (h_off == h_off[0]).all() and (w_off == w_off[0]).all():
        return images[:, :, h_off[0]:h_off[0] + crop, w_off[0]:w_off[0] + crop]
    windows = sliding_window_view(images, (crop, crop), axis=(2, 3))
    return windows[np.arange(len(images)), :, h_off, w_off]


def _crop_mean(mean: np.ndarray, h_off: np.ndarray, w_off: np.ndarray, crop: int) -> np.ndarray:
    """The mean image cropped at each image's offsets: (B, C, crop, crop)."""
    windows = sliding_window_view(mean, (crop, crop), axis=(1, 2))
    return windows[:, h_off, w_off].transpose(1, 0, 2, 3)


def _read_mean(path: str, where: str) -> np.ndarray:
    from converters.caffe.binaryproto import read_mean

    if not os.path.isfile(path):
        cwd = "" if os.path.isabs(path) else \
            f" (relative paths resolve against the working directory {os.getcwd()})"
        raise CompressError(f"{where}: transform_param.mean_file: no file {shown_path(path)}{cwd}")
    try:
        return read_mean(path)
    except ValueError as e:
        raise CompressError(f"{where}: transform_param.mean_file: {e}") from None
