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
import struct

import numpy as np

from compress.data.caffe.resize import resize_linear
from compress.errors import CompressError
from converters.caffe.names import shown_path

MODES = ("unchanged", "color", "gray")
BACKEND_ORDER = ("cv2", "Pillow")
_MODULES = {"cv2": "cv2", "Pillow": "PIL"}
MAX_SIDE = 1 << 20  # OpenCV's CV_IO_MAX_IMAGE_WIDTH and _HEIGHT
MAX_PIXELS = 1 << 30  # OpenCV's CV_IO_MAX_IMAGE_PIXELS


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
    size = header_size(buf)
    if size is not None and (max(size) > MAX_SIDE or size[0] * size[1] > MAX_PIXELS):
        raise CompressError(f"{where}: the image's header declares {size[0]:,} x {size[1]:,} pixels; at most "
                            f"{MAX_SIDE:,} a side and {MAX_PIXELS:,} in all are decoded (OpenCV's limits)")
    name = backend()
    img = _decode_cv2(buf, mode, where) if name == "cv2" else _decode_pillow(buf, mode, where)
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
        raise CompressError(f"{where}: cannot read image {shown_path(path)} ({e.strerror or e})") from None
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


def header_size(buf: bytes) -> tuple[int, int] | None:
    """(width, height) that an image file's header declares, read without decoding anything: PNG,
    JPEG, GIF, BMP; None for other formats or a header too short to say."""
    if buf[:8] == b"\x89PNG\r\n\x1a\n" and buf[12:16] == b"IHDR" and len(buf) >= 24:
        return struct.unpack(">II", buf[16:24])
    if buf[:6] in (b"GIF87a", b"GIF89a") and len(buf) >= 10:
        return struct.unpack("<HH", buf[6:10])
    if buf[:2] == b"BM" and len(buf) >= 26:
        if struct.unpack("<I", buf[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sides
            return struct.unpack("<HH", buf[18:22])
        width, height = struct.unpack("<ii", buf[18:26])  # a negative height: rows top-down
        return abs(width), abs(height)
    if buf[:2] == b"\xff\xd8":
        return _jpeg_size(buf)
    return None


# JPEG start-of-frame markers (SOF0..SOF15 but DHT, JPG and DAC): the frame's height and width follow
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(buf: bytes) -> tuple[int, int] | None:
    """Walk the JPEG marker segments up to the first frame header (or the scan: no size found)."""
    i = 2
    while i + 4 <= len(buf):
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # a fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker == 0xDA:
            return None
        if marker in _SOF:
            if i + 9 > len(buf):
                return None
            height, width = struct.unpack(">HH", buf[i + 5:i + 9])
            return width, height
        i += 2 + struct.unpack(">H", buf[i + 2:i + 4])[0]
    return None


def _refused(where: str, name: str, e: BaseException) -> CompressError:
    """The decoder's own refusal (an OpenCV assertion, Pillow's decompression-bomb check) as one line."""
    text = " ".join(str(e).split())
    reason = text.split(" error: ", 1)[-1][:200] or type(e).__name__  # OpenCV's: "<file>:<line>: error: ..."
    return CompressError(f"{where}: {name} refuses to decode the image ({reason})")


def _decode_cv2(buf: bytes, mode: str, where: str) -> np.ndarray | None:
    import cv2

    flag = {"unchanged": cv2.IMREAD_UNCHANGED, "color": cv2.IMREAD_COLOR,
            "gray": cv2.IMREAD_GRAYSCALE}[mode]
    if not buf:
        return None
    try:
        return cv2.imdecode(np.frombuffer(buf, np.uint8), flag)
    except cv2.error as e:
        raise _refused(where, "cv2", e) from None


def _decode_pillow(buf: bytes, mode: str, where: str) -> np.ndarray | None:
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
    except Image.DecompressionBombError as e:
        raise _refused(where, "Pillow", e) from None
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
