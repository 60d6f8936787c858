"""Image decoding and resizing as Caffe's OpenCV calls do them, with OpenCV or (without it) Pillow.

Caffe decodes encoded ``Datum`` records with ``cv::imdecode`` (``DecodeDatumToCVMatNative``: flag
-1, the file's own channels; ``DecodeDatumToCVMat``: colour or grey when ``force_color`` /
``force_gray`` is set) and ImageData files with ``cv::imread`` (colour or grey by ``is_color``),
then ``cv::resize`` (``src/caffe/util/io.cpp``). Results are uint8, (H, W) for one channel or
(H, W, C) in OpenCV's order: BGR, BGRA with alpha.

OpenCV is used when installed. The Pillow fallback converts to the same layout and channel order,
applies the EXIF orientation where OpenCV does (colour and grey reads, not "unchanged"), decodes
grey JPEGs from their luma as libjpeg does, turns other colour images grey with OpenCV's fixed-point
formula, and resizes with :func:`resize.resize_linear` (OpenCV's bytes). Measured against OpenCV
4.14: colour and "unchanged" decodes of PNG, BMP and JPEG are identical, as are grey reads of grey
images, of JPEG, BMP and TIFF; a grey read of a colour PNG or WebP can differ by one level (libpng's
own conversion).
"""
from __future__ import annotations

import importlib.util
import io

import numpy as np

from compress.data.caffe.resize import resize_linear
from compress.errors import CompressError

MODES = ("unchanged", "color", "gray")
BACKEND_ORDER = ("cv2", "Pillow")
_MODULES = {"cv2": "cv2", "Pillow": "PIL"}


def backend() -> str:
    """The decoder in use: the first of :data:`BACKEND_ORDER` that is installed."""
    for name in BACKEND_ORDER:
        if importlib.util.find_spec(_MODULES[name]) is not None:
            return name
    raise CompressError("encoded images need an image decoder; install OpenCV "
                        "(`pip install opencv-python-headless`) or Pillow (`pip install Pillow`)")


def imdecode(buf: bytes, mode: str, where: str) -> np.ndarray:
    """Decode an encoded image like ``cv::imdecode`` with IMREAD_UNCHANGED / COLOR / GRAYSCALE."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, found {mode!r}")
    name = backend()
    img = _decode_cv2(buf, mode) if name == "cv2" else _decode_pillow(buf, mode)
    if img is None:
        raise CompressError(f"{where}: cannot decode the image ({name} does not recognise its "
                            f"{len(buf)} bytes)")
    if img.dtype != np.uint8:
        raise CompressError(f"{where}: the image decodes to {img.dtype} pixels; Caffe's data layers "
                            "take 8-bit images only")
    return img


def imread(path: str, color: bool, where: str) -> np.ndarray:
    """``cv::imread(path, is_color ? IMREAD_COLOR : IMREAD_GRAYSCALE)``: the file's bytes, decoded."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise CompressError(f"{where}: cannot read image {path!r} ({e.strerror or e})") from None
    return imdecode(buf, "color" if color else "gray", where)


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv::resize(img, out, Size(width, height))``: bilinear, OpenCV's fixed-point rounding."""
    if backend() == "cv2":
        import cv2

        return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return resize_linear(img, height, width)


def to_chw(img: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) -> (C, H, W), the layout of ``CVMatToDatum`` and the transformer."""
    return img[None] if img.ndim == 2 else img.transpose(2, 0, 1)


def _decode_cv2(buf: bytes, mode: str) -> np.ndarray | None:
    import cv2

    flag = {"unchanged": cv2.IMREAD_UNCHANGED, "color": cv2.IMREAD_COLOR,
            "gray": cv2.IMREAD_GRAYSCALE}[mode]
    if not buf:
        return None
    return cv2.imdecode(np.frombuffer(buf, np.uint8), flag)


def _decode_pillow(buf: bytes, mode: str) -> np.ndarray | None:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(buf)) as im:
            if mode != "unchanged":
                if mode == "gray" and im.format == "JPEG":
                    im.draft("L", im.size)  # libjpeg's grey output is the luma channel
                im = ImageOps.exif_transpose(im)
            a = _pillow_array(im, mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
    if a.ndim == 3:  # RGB(A) -> BGR(A)
        a = a[..., [2, 1, 0, 3][: a.shape[2]]]
    return np.ascontiguousarray(a)


def _bgr_to_gray(bgr: np.ndarray) -> np.ndarray:
    """OpenCV's colour-to-grey for decoded images (``icvCvt_BGR2Gray_8u_C3C1R``): 14-bit fixed point."""
    b, g, r = (bgr[..., i].astype(np.int32) for i in range(3))
    return ((b * 1868 + g * 9617 + r * 4899 + (1 << 13)) >> 14).astype(np.uint8)


def _pillow_array(im, mode: str) -> np.ndarray:
    if mode == "gray":
        if im.mode in ("L", "1", "I;16", "I;16B", "I;16L", "I", "F"):
            return np.asarray(im.convert("L"))
        return _bgr_to_gray(np.asarray(im.convert("RGB"))[..., ::-1])
    if mode == "color":
        return np.asarray(im.convert("RGB"))
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(im)  # wider than 8 bits: refused by imdecode's dtype check
    if im.mode in ("L", "RGB", "RGBA"):
        return np.asarray(im)
    if im.mode == "1":
        return np.asarray(im.convert("L"))
    alpha = im.mode in ("LA", "PA", "La", "RGBa") or "transparency" in im.info
    return np.asarray(im.convert("RGBA" if alpha else "RGB"))
