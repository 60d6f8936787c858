"""compress.data.caffe images: OpenCV-compatible decoding and resizing, and the ImageData layer."""
from __future__ import annotations

import io

import numpy as np
import pytest

from compress.data.caffe import build_feeder
from compress.data.caffe.image import MODES, imdecode
from compress.data.caffe.resize import resize_linear
from compress.data.caffe.rng import CaffeRng
from compress.errors import CompressError
from tests.test_caffe_data import _boost_shuffle, _caffe_transform, assert_resume_is_exact, feed, layer

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def _encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


# --- resize: OpenCV's bytes ------------------------------------------------------------------------

def test_resize_linear_is_opencvs_byte_for_byte():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    cases = [(int(h), int(w), int(nh), int(nw), c) for (h, w, nh, nw), c in
             zip(rng.integers(1, 40, (60, 4)), [None, 3, 4] * 20, strict=True)]
    cases += [(20, 30, 10, 15, 3), (375, 500, 256, 256, 3), (28, 28, 28, 28, None), (3, 5, 40, 41, 3)]
    for h, w, nh, nw, c in cases:
        img = rng.integers(0, 256, (h, w) if c is None else (h, w, c), dtype=np.uint8)
        expected = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        got = resize_linear(img, nh, nw)
        assert got.shape == expected.shape and np.array_equal(got, expected), (h, w, nh, nw, c)


# --- decoding: OpenCV and the Pillow fallback agree ------------------------------------------------

def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    return {"rgb": rgb, "grey": rgb[..., 0], "rgba": rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)}


@pytest.mark.parametrize("decoder", ["cv2", "Pillow"])
def test_png_decodes_in_opencvs_layout(monkeypatch, decoder):
    if decoder == "cv2":
        pytest.importorskip("cv2")
    monkeypatch.setattr("compress.data.caffe.image.BACKEND_ORDER", (decoder,))
    imgs = _images()
    rgb, grey, rgba = imgs["rgb"], imgs["grey"], imgs["rgba"]
    assert np.array_equal(imdecode(_encode(rgb), "unchanged", "x"), rgb[..., ::-1])  # BGR
    assert np.array_equal(imdecode(_encode(rgba), "unchanged", "x"), rgba[..., [2, 1, 0, 3]])  # BGRA
    assert np.array_equal(imdecode(_encode(rgba), "color", "x"), rgba[..., [2, 1, 0]])
    assert np.array_equal(imdecode(_encode(grey), "unchanged", "x"), grey)
    assert np.array_equal(imdecode(_encode(grey), "color", "x"), np.repeat(grey[..., None], 3, 2))
    assert np.array_equal(imdecode(_encode(grey), "gray", "x"), grey)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
@pytest.mark.parametrize("mode", MODES)
def test_pillow_fallback_matches_opencv(monkeypatch, fmt, mode):
    pytest.importorskip("cv2")
    buf = _encode(_images()["rgb"], fmt)
    monkeypatch.setattr("compress.data.caffe.image.BACKEND_ORDER", ("cv2",))
    reference = imdecode(buf, mode, "x")
    monkeypatch.setattr("compress.data.caffe.image.BACKEND_ORDER", ("Pillow",))
    got = imdecode(buf, mode, "x")
    # libpng's own colour-to-grey conversion (OpenCV's PNG path) rounds differently by one level
    tolerance = 1 if (fmt, mode) == ("PNG", "gray") else 0
    assert got.shape == reference.shape
    assert np.abs(got.astype(int) - reference).max() <= tolerance


def test_undecodable_bytes_and_16_bit_images_are_refused(monkeypatch):
    with pytest.raises(CompressError, match=r"^where: cannot decode the image \(\w+ does not recognise"):
        imdecode(b"\x89PNG garbage", "unchanged", "where")
    buf = io.BytesIO()
    Image.fromarray(np.full((2, 2), 40000, np.uint16)).save(buf, format="PNG")
    with pytest.raises(CompressError, match="decodes to uint16 pixels; Caffe's data layers take 8-bit"):
        imdecode(buf.getvalue(), "unchanged", "where")


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 2x2 PNG whose IHDR (CRC recomputed) declares ``width`` x ``height``."""
    import struct
    import zlib

    buf = bytearray(_encode(np.zeros((2, 2), np.uint8)))
    buf[16:24] = struct.pack(">II", width, height)
    buf[29:33] = struct.pack(">I", zlib.crc32(bytes(buf[12:29])))
    return bytes(buf)


@pytest.mark.parametrize("decoder", ["cv2", "Pillow"])
def test_a_header_declaring_too_many_pixels_is_refused_before_decoding(monkeypatch, decoder):
    """A 60000 x 60000 PNG header made OpenCV assert (cv2.error, a traceback); a 20000 x 20000 one is
    within its limit and fails as undecodable."""
    if decoder == "cv2":
        pytest.importorskip("cv2")
    monkeypatch.setattr("compress.data.caffe.image.BACKEND_ORDER", (decoder,))
    with pytest.raises(CompressError, match=r"^where: the image's header declares 60,000 x 60,000 pixels; at "
                                            r"most 1,048,576 a side and 1,073,741,824 in all are decoded"):
        imdecode(_png_claiming(60000, 60000), "unchanged", "where")
    with pytest.raises(CompressError, match="header declares 2,000,000 x 1 pixels"):
        imdecode(_png_claiming(2_000_000, 1), "color", "where")
    with pytest.raises(CompressError, match=r"^where: (cannot decode the image|Pillow refuses)"):
        imdecode(_png_claiming(20000, 20000), "unchanged", "where")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF"])
def test_header_size_reads_what_the_encoder_wrote(fmt):
    from compress.data.caffe.image import header_size

    pixels = _images()["rgb"] if fmt != "GIF" else _images()["grey"]
    assert header_size(_encode(pixels, fmt)) == (7, 6)
    assert header_size(_encode(pixels, fmt)[:9]) is None and header_size(b"II*\x00") is None


def test_a_jpeg_frame_declaring_65000_squared_is_refused():
    import struct

    buf = bytearray(_encode(_images()["rgb"], "JPEG"))
    sof = buf.find(b"\xff\xc0")
    buf[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    with pytest.raises(CompressError, match="header declares 65,000 x 65,000 pixels"):
        imdecode(bytes(buf), "color", "where")


# --- ImageData --------------------------------------------------------------------------------------

def _image_set(tmp_path, n=5, size=(6, 8), grey=False) -> list[np.ndarray]:
    """Images img<i>.png in tmp_path/imgs (pixel values distinct per image) and list.txt."""
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(2)
    shape = size if grey else (*size, 3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / "imgs" / f"img {i}.png")  # a space in the name
    (tmp_path / "list.txt").write_text("".join(f"img {i}.png {10 + i}\n" for i in range(n)) + "\n")
    return images


def image_layer(tmp_path, batch: int, params: str = "", transform: str = "") -> object:
    return layer(f'name: "images" type: "ImageData" top: "data" top: "label" '
                 f'transform_param {{ {transform} }} image_data_param {{ source: "{tmp_path / "list.txt"}" '
                 f'root_folder: "{tmp_path / "imgs"}/" batch_size: {batch} {params} }}')


def test_image_data_reads_the_list_in_order_in_bgr_and_wraps(tmp_path):
    images = _image_set(tmp_path, 3)
    f = build_feeder(image_layer(tmp_path, 2, transform="scale: 0.5"), "TRAIN")
    assert f.shapes == {"data": (2, 3, 6, 8), "label": (2,)}
    batches = feed(f, 3)
    assert [b["label"].tolist() for b in batches] == [[10, 11], [12, 10], [11, 12]]
    bgr = [img[..., ::-1].transpose(2, 0, 1).astype(np.float32) * np.float32(0.5) for img in images]
    np.testing.assert_array_equal(batches[0]["data"].numpy(), np.stack(bgr[:2]))
    np.testing.assert_array_equal(batches[1]["data"].numpy(), np.stack([bgr[2], bgr[0]]))


def test_image_data_resizes_and_reads_grey(tmp_path):
    images = _image_set(tmp_path, 2, size=(9, 7), grey=True)
    f = build_feeder(image_layer(tmp_path, 2, "new_height: 5 new_width: 4 is_color: false"), "TEST")
    assert f.shapes["data"] == (2, 1, 5, 4)
    expected = np.stack([resize_linear(img, 5, 4)[None] for img in images]).astype(np.float32)
    np.testing.assert_array_equal(f.next_batch()["data"].numpy(), expected)


def test_image_data_shuffles_like_caffe_and_again_at_each_wrap(tmp_path):
    _image_set(tmp_path, 5)
    f = build_feeder(image_layer(tmp_path, 5, "shuffle: true"), "TRAIN", seed=11)
    epochs = [f.next_batch()["label"].tolist() for _ in range(3)]
    shuffle_stream = np.random.RandomState(int(CaffeRng(11).raw(1)[0]))  # the layer's shuffle seed
    order = list(range(10, 15))
    for epoch in epochs:
        order = _boost_shuffle(order, shuffle_stream)
        assert epoch == order
    assert len({tuple(e) for e in epochs}) > 1


def test_image_data_crops_and_mirrors_with_the_transformer(tmp_path):
    images = _image_set(tmp_path, 3)
    f = build_feeder(image_layer(tmp_path, 3, transform="crop_size: 4 mirror: true"), "TRAIN", seed=4)
    rng = CaffeRng(4)
    rng.raw(1)  # the draw that seeded the shuffling generator
    zero = np.zeros((3, 6, 8), np.float32)
    expected = [_caffe_transform(img[..., ::-1].transpose(2, 0, 1), zero, 1, 4, True, True, rng)[0]
                for img in images]
    np.testing.assert_array_equal(f.next_batch()["data"].numpy(), np.stack(expected))


@pytest.mark.parametrize("memory_limit", [1 << 30, 0])
def test_image_data_resume_is_exact(tmp_path, memory_limit):
    _image_set(tmp_path, 5)
    spec = image_layer(tmp_path, 2, "shuffle: true", "crop_size: 5 mirror: true")
    assert_resume_is_exact(spec, 3, 6, memory_limit=memory_limit)


def test_rand_skip_starts_at_a_drawn_line(tmp_path):
    _image_set(tmp_path, 5)
    f = build_feeder(image_layer(tmp_path, 1, "rand_skip: 4"), "TRAIN", seed=6)
    rng = CaffeRng(6)
    rng.raw(1)
    assert f.next_batch()["label"].tolist() == [10 + int(rng.rand(4))]


BAD = {
    "no_list": ("", r"image_data_param.source: cannot read the image list '.*nope.txt' \(No such file"),
    "empty_list": ("", r"the image list '.*list.txt' is empty"),
    "bad_line": ("", r"list.txt:2: expected 'PATH LABEL' with an integer label, found 'img 1.png one'"),
    "missing_image": ("", r"image '.*imgs/img 9.png' \(entry 2 of '.*list.txt'\): cannot read image"),
    "not_an_image": ("", r"image '.*imgs/img 1.png' \(entry 2 .*\): cannot decode the image"),
    "half_size": ("new_height: 4", r"new_height and new_width must be set together, found 4 and 0"),
    "crop": ("", r"image '.*img 0.png' \(entry 1 .*\): transform_param.crop_size 9 is larger than the image"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_image_data_bad_input_is_one_clear_error(tmp_path, case):
    _image_set(tmp_path, 2)
    params, message = BAD[case]
    spec = image_layer(tmp_path, 2, params, "crop_size: 9" if case == "crop" else "")
    if case == "no_list":
        spec.image_data_param.source = str(tmp_path / "nope.txt")
    elif case == "empty_list":
        (tmp_path / "list.txt").write_text("\n  \n")
    elif case == "bad_line":
        (tmp_path / "list.txt").write_text("img 0.png 1\nimg 1.png one\n")
    elif case == "missing_image":
        (tmp_path / "list.txt").write_text("img 0.png 1\nimg 9.png 2\n")
    elif case == "not_an_image":
        (tmp_path / "imgs" / "img 1.png").write_bytes(b"text, not a PNG")
    with pytest.raises(CompressError, match=message) as info:
        feed(build_feeder(spec, "TRAIN"), 1)
    assert "\n" not in str(info.value)


def test_image_data_needs_exactly_two_tops(tmp_path):
    _image_set(tmp_path, 1)
    spec = image_layer(tmp_path, 1)
    del spec.top[1]
    with pytest.raises(CompressError, match=r"layer 'images' \(ImageData\): has 1 top\(s\), expected 2"):
        build_feeder(spec, "TRAIN")
