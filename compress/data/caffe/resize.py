"""OpenCV's ``cv::resize(src, dst, Size(w, h))`` (INTER_LINEAR) for 8-bit images, in numpy.

ImageData's ``new_height``/``new_width`` resize with OpenCV's default interpolation
(``ReadImageToCVMat`` in BVLC ``src/caffe/util/io.cpp``). When OpenCV is not installed this
transcription of its 8-bit path (``modules/imgproc/src/resize.cpp``) gives the same bytes:

- half-pixel centres: source coordinate ``f = (d + 0.5) * (src / dst) - 0.5`` in float32;
- columns: ``f < 0`` or ``floor(f) >= src - 1`` clamp to the edge pixel with weight 1; rows are not
  clamped, their two indices are clipped to the image (so edge rows still mix two equal rows);
- weights in 11-bit fixed point, ``round(w * 2048)``; the horizontal pass keeps 22 bits, the
  vertical pass computes ``((b0 * (S0 >> 4)) >> 16) + ((b1 * (S1 >> 4)) >> 16) + 2 >> 2``, exactly
  OpenCV's SIMD-compatible rounding;
- an exact 2x reduction in both directions is OpenCV's INTER_AREA fast path, ``(a+b+c+d+2) >> 2``.

``tests/test_caffe_data_image.py`` checks this against ``cv2.resize`` byte for byte.
"""
from __future__ import annotations

import numpy as np

_BITS = 11
_ONE = np.float32(1 << _BITS)


def _weights(dst: int, src: int) -> tuple[np.ndarray, np.ndarray]:
    """(floor index, float32 fractional part) of each destination pixel's source coordinate."""
    f = ((np.arange(dst) + 0.5) * (1.0 / (dst / src)) - 0.5).astype(np.float32)
    i = np.floor(f).astype(np.int64)
    return i, (f - i.astype(np.float32)).astype(np.float32)


def _fixed(frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.rint((np.float32(1) - frac) * _ONE).astype(np.int64),
            np.rint(frac * _ONE).astype(np.int64))


def _columns(dst: int, src: int):
    i, frac = _weights(dst, src)
    edge = (i < 0) | (i >= src - 1)
    frac[edge] = 0
    i = np.where(i < 0, 0, np.minimum(i, src - 1))
    return i, np.minimum(i + 1, src - 1), *_fixed(frac)


def _rows(dst: int, src: int):
    i, frac = _weights(dst, src)
    return np.clip(i, 0, src - 1), np.clip(i + 1, 0, src - 1), *_fixed(frac)


def resize_linear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) uint8 image to (height, width) as OpenCV's INTER_LINEAR does."""
    src_h, src_w = img.shape[:2]
    if (src_h, src_w) == (height, width):
        return img.copy()
    x = img.astype(np.int64)
    if src_h == 2 * height and src_w == 2 * width:
        total = x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]
        return ((total + 2) >> 2).astype(np.uint8)
    per_channel = (slice(None),) + (None,) * (img.ndim - 2)
    c0, c1, a0, a1 = _columns(width, src_w)
    horizontal = x[:, c0] * a0[per_channel] + x[:, c1] * a1[per_channel]
    r0, r1, b0, b1 = _rows(height, src_h)
    rows = (slice(None),) + (None,) * (img.ndim - 1)
    out = (((b0[rows] * (horizontal[r0] >> 4)) >> 16) + ((b1[rows] * (horizontal[r1] >> 4)) >> 16) + 2) >> 2
    return out.astype(np.uint8)
