"""compress.data.caffe: the Data layer over LMDB, transform_param, cursors, resume, the LMDB writer.

Expectations are hand-computed or transcribed from BVLC's ``data_transformer.cpp`` loops; LMDBs are
built in tmp_path from small arrays whose values say where they came from (pixel = record index,
or a distinct value per position).
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from compress.data.caffe import build_feeder, datum_bytes, write_datum_lmdb, write_lmdb
from compress.data.caffe.rng import CaffeRng
from compress.errors import CompressError
from converters.caffe.binaryproto import write_mean

MEMORY_MODES = [pytest.param(1 << 30, id="in-memory"), pytest.param(0, id="streamed")]


def layer(text: str):
    """A LayerParameter from prototxt text."""
    from google.protobuf import text_format

    from converters.caffe.proto import caffe_pb2

    return text_format.Parse(text, caffe_pb2.LayerParameter())


def data_layer(source, batch: int, transform: str = "", extra: str = "", tops=("data", "label")) -> object:
    top_text = " ".join(f'top: "{t}"' for t in tops)
    return layer(f'name: "mnist" type: "Data" {top_text} transform_param {{ {transform} }} '
                 f'data_param {{ source: "{source}" batch_size: {batch} backend: LMDB {extra} }}')


def indexed_db(path, n: int = 5, shape=(1, 2, 3)) -> np.ndarray:
    """An LMDB whose record i has every pixel = i and label i; returns the images."""
    images = np.stack([np.full(shape, i, np.uint8) for i in range(n)])
    write_datum_lmdb(path, images, np.arange(n))
    return images


def feed(f, batches: int) -> list[dict[str, torch.Tensor]]:
    return [f.next_batch() for _ in range(batches)]


def assert_resume_is_exact(spec, before: int, after: int, **options) -> None:
    """Run ``before`` batches, save the state through torch.save/load(weights_only), load it into a
    feeder built with another seed: the next ``after`` batches are identical."""
    a = build_feeder(spec, "TRAIN", seed=5, **options)
    feed(a, before)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = build_feeder(spec, "TRAIN", seed=99, **options)
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    for x, y in zip(feed(a, after), feed(b, after), strict=True):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# --- writer: convert_mnist_data's bytes ----------------------------------------------------------

def test_writer_keys_and_values_are_convert_mnist_datas(tmp_path):
    import lmdb

    images = np.arange(3 * 6, dtype=np.uint8).reshape(3, 1, 2, 3)
    write_datum_lmdb(tmp_path / "db", images, [7, 0, 300])
    with lmdb.open(str(tmp_path / "db"), readonly=True, lock=False) as env, env.begin() as txn:
        items = list(txn.cursor())
    assert [k for k, _ in items] == [b"00000000", b"00000001", b"00000002"]
    for (_, value), img, label in zip(items, images, [7, 0, 300], strict=True):
        # Datum wire format, field by field: channels=1, height=2, width=3, data (6 bytes), label
        label_varint = bytes([label & 0x7F | 0x80, label >> 7]) if label > 127 else bytes([label])
        assert value == b"\x08\x01\x10\x02\x18\x03\x22\x06" + img.tobytes() + b"\x28" + label_varint
    assert not any(p.name.startswith(".db.") for p in tmp_path.iterdir())  # the temp folder is gone


def test_writer_refuses_existing_output_unless_overwrite(tmp_path):
    indexed_db(tmp_path / "db", 2)
    with pytest.raises(CompressError, match="already exists"):
        indexed_db(tmp_path / "db", 3)
    write_datum_lmdb(tmp_path / "db", np.zeros((3, 1, 1, 1), np.uint8), [0, 1, 2], overwrite=True)
    f = build_feeder(data_layer(tmp_path / "db", 3), "TEST")
    assert f.next_batch()["label"].tolist() == [0, 1, 2]


def test_writer_leaves_nothing_when_interrupted(tmp_path):
    def values():
        yield datum_bytes(np.zeros((1, 1, 1), np.uint8), 0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_lmdb(tmp_path / "db", values())
    assert list(tmp_path.iterdir()) == []


# --- order, wrap-around, cursors -----------------------------------------------------------------

@pytest.mark.parametrize("memory_limit", MEMORY_MODES)
def test_records_in_key_order_wrapping_at_the_end(tmp_path, memory_limit):
    indexed_db(tmp_path / "db", 5)
    f = build_feeder(data_layer(tmp_path / "db", 2), "TRAIN", memory_limit=memory_limit)
    assert f.records.in_memory == (memory_limit > 0)
    assert f.shapes == {"data": (2, 1, 2, 3), "label": (2,)}
    first = f.next_batch()
    first["label"] += 100
    first["data"] += 100  # the caller owns what it gets: the records are not changed
    batches = feed(f, 4)
    assert [b["label"].tolist() for b in batches] == [[2, 3], [4, 0], [1, 2], [3, 4]]
    for b in batches:
        assert b["data"].dtype == torch.float32 and b["label"].dtype == torch.int64
        assert b["data"].shape == (2, 1, 2, 3)
        assert torch.equal(b["data"][:, 0, 0, 0], b["label"].float())  # pixel value = record index


def test_feeder_without_label_top_gives_data_only(tmp_path):
    indexed_db(tmp_path / "db", 3)
    f = build_feeder(data_layer(tmp_path / "db", 2, tops=("data",)), "TEST")
    assert f.shapes == {"data": (2, 1, 2, 3)}
    assert list(f.next_batch()) == ["data"]


def test_each_layer_keeps_its_own_cursor_and_test_passes_see_successive_slices(tmp_path):
    indexed_db(tmp_path / "db", 10)
    train = build_feeder(data_layer(tmp_path / "db", 4), "TRAIN")
    test = build_feeder(data_layer(tmp_path / "db", 3), "TEST")
    test_pass = lambda: [x for b in feed(test, 2) for x in b["label"].tolist()]  # noqa: E731  (test_iter 2)
    assert train.next_batch()["label"].tolist() == [0, 1, 2, 3]
    assert test_pass() == [0, 1, 2, 3, 4, 5]
    assert train.next_batch()["label"].tolist() == [4, 5, 6, 7]
    assert test_pass() == [6, 7, 8, 9, 0, 1]


# --- transform_param: hand-computed results ------------------------------------------------------

def _pattern_db(path, n=3, shape=(1, 4, 5), seed=0) -> np.ndarray:
    images = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
    write_datum_lmdb(path, images, np.arange(n))
    return images


def test_scale_only_is_pixel_times_scale_in_float32(tmp_path):
    images = _pattern_db(tmp_path / "db")
    f = build_feeder(data_layer(tmp_path / "db", 3, "scale: 0.00390625"), "TRAIN")
    out = f.next_batch()["data"].numpy()
    np.testing.assert_array_equal(out, images.astype(np.float32) * np.float32(0.00390625))


@pytest.mark.parametrize("means", [[10.5], [10.5, 20.25, 30.0]])
def test_mean_value_one_or_per_channel(tmp_path, means):
    images = _pattern_db(tmp_path / "db", shape=(3, 2, 2))
    values = " ".join(f"mean_value: {m}" for m in means)
    f = build_feeder(data_layer(tmp_path / "db", 3, f"scale: 0.5 {values}"), "TEST")
    per_channel = np.array(means * (3 // len(means)), np.float32).reshape(3, 1, 1)
    expected = (images.astype(np.float32) - per_channel) * np.float32(0.5)
    np.testing.assert_array_equal(f.next_batch()["data"].numpy(), expected)


def test_test_phase_crops_the_centre_and_the_mean_file_with_it(tmp_path):
    images = _pattern_db(tmp_path / "db", shape=(2, 5, 6))
    mean = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6) / 4
    write_mean(tmp_path / "mean.binaryproto", mean)
    f = build_feeder(data_layer(tmp_path / "db", 3, f'crop_size: 3 scale: 2 mean_file: '
                                                    f'"{tmp_path / "mean.binaryproto"}"'), "TEST")
    assert f.shapes["data"] == (3, 2, 3, 3)
    # centre offsets: h_off = (5-3)/2 = 1, w_off = (6-3)/2 = 1 (integer division)
    expected = (images[:, :, 1:4, 1:4].astype(np.float32) - mean[:, 1:4, 1:4]) * np.float32(2)
    np.testing.assert_array_equal(f.next_batch()["data"].numpy(), expected)


def _caffe_transform(img, mean, scale, crop, mirror, train, rng):
    """BVLC DataTransformer::Transform(const Datum&, Dtype*) transcribed loop by loop; also returns
    whether the image was mirrored."""
    c_n, h_n, w_n = img.shape
    do_mirror = bool(mirror and rng.rand(2))
    height, width, h_off, w_off = h_n, w_n, 0, 0
    if crop:
        height = width = crop
        if train:
            h_off, w_off = rng.rand(h_n - crop + 1), rng.rand(w_n - crop + 1)
        else:
            h_off, w_off = (h_n - crop) // 2, (w_n - crop) // 2
    out = np.zeros(c_n * height * width, np.float32)
    flat, flat_mean = img.reshape(-1), mean.reshape(-1)
    for c in range(c_n):
        for h in range(height):
            for w in range(width):
                data_index = (c * h_n + h_off + h) * w_n + w_off + w
                top_index = (c * height + h) * width + (width - 1 - w if do_mirror else w)
                out[top_index] = (np.float32(flat[data_index]) - flat_mean[data_index]) * np.float32(scale)
    return out.reshape(c_n, height, width), do_mirror


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("memory_limit", MEMORY_MODES)
def test_random_crop_and_mirror_follow_caffes_draws(tmp_path, phase, memory_limit):
    images = _pattern_db(tmp_path / "db", n=7, shape=(2, 6, 7))
    mean = np.random.default_rng(1).random((2, 6, 7), dtype=np.float32) * 100
    write_mean(tmp_path / "m.binaryproto", mean)
    transform = f'crop_size: 4 mirror: true scale: 0.25 mean_file: "{tmp_path / "m.binaryproto"}"'
    f = build_feeder(data_layer(tmp_path / "db", 5, transform), phase, seed=123, memory_limit=memory_limit)
    got = np.concatenate([b["data"].numpy() for b in feed(f, 3)])
    rng = CaffeRng(123)
    train = phase == "TRAIN"
    expected = [_caffe_transform(images[i % 7], mean, 0.25, 4, True, train, rng) for i in range(15)]
    np.testing.assert_array_equal(got, np.stack([out for out, _ in expected]))
    mirrored = sum(m for _, m in expected)
    assert 0 < mirrored < 15  # Caffe mirrors at random in TEST too when mirror is set


def test_float_data_records_are_transformed_like_bytes(tmp_path):
    images = np.random.default_rng(0).normal(size=(4, 1, 3, 3)).astype(np.float32)
    write_datum_lmdb(tmp_path / "db", images, np.arange(4))
    f = build_feeder(data_layer(tmp_path / "db", 4, "scale: 3 mean_value: 0.5"), "TRAIN")
    np.testing.assert_array_equal(f.next_batch()["data"].numpy(),
                                  (images - np.float32(0.5)) * np.float32(3))


def test_deprecated_data_param_fields_apply_like_caffes_upgrade(tmp_path):
    images = _pattern_db(tmp_path / "db", shape=(1, 4, 4))
    f = build_feeder(data_layer(tmp_path / "db", 3, "scale: 1", "scale: 0.5 crop_size: 2"), "TEST")
    np.testing.assert_array_equal(f.next_batch()["data"].numpy(),
                                  images[:, :, 1:3, 1:3].astype(np.float32) * np.float32(0.5))


# --- encoded records ------------------------------------------------------------------------------

def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("decoder", ["cv2", "Pillow"])
def test_encoded_png_decodes_to_bgr(tmp_path, monkeypatch, decoder):
    pytest.importorskip("PIL")
    if decoder == "cv2":
        pytest.importorskip("cv2")
    monkeypatch.setattr("compress.data.caffe.image.BACKEND_ORDER", (decoder,))
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30  # R, G, B
    rgb[1, 2] = (200, 100, 50)
    grey = np.full((2, 3, 3), 77, np.uint8)
    write_lmdb(tmp_path / "db", [datum_bytes(encoded=_png(rgb), label=4),
                                 datum_bytes(encoded=_png(grey), label=5)])
    f = build_feeder(data_layer(tmp_path / "db", 2, "force_color: true"), "TEST")
    batch = f.next_batch()
    assert batch["label"].tolist() == [4, 5]
    np.testing.assert_array_equal(batch["data"][0].numpy(), rgb[..., ::-1].transpose(2, 0, 1))
    np.testing.assert_array_equal(batch["data"][1].numpy(), np.full((3, 2, 3), 77))
    g = build_feeder(data_layer(tmp_path / "db", 2, "force_gray: true"), "TEST").next_batch()["data"]
    assert g.shape == (2, 1, 2, 3) and (g[1] == 77).all()


# --- resume ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("memory_limit", MEMORY_MODES)
def test_resume_continues_bit_exactly(tmp_path, memory_limit):
    _pattern_db(tmp_path / "db", n=7, shape=(3, 6, 6))
    spec = data_layer(tmp_path / "db", 3, "crop_size: 4 mirror: true scale: 0.1 mean_value: 5")
    assert_resume_is_exact(spec, 4, 5, memory_limit=memory_limit)  # saved past a wrap


def test_state_of_another_layer_or_db_is_refused(tmp_path):
    indexed_db(tmp_path / "a", 4)
    indexed_db(tmp_path / "b", 5)
    a = build_feeder(data_layer(tmp_path / "a", 2), "TRAIN")
    with pytest.raises(CompressError, match="for layer 'mnist' .*TRAIN.*not this layer in TEST"):
        build_feeder(data_layer(tmp_path / "a", 2), "TEST").load_state_dict(a.state_dict())
    with pytest.raises(CompressError, match="LMDB of 4 records, .* has 5"):
        build_feeder(data_layer(tmp_path / "b", 2), "TRAIN").load_state_dict(a.state_dict())


# --- paths ------------------------------------------------------------------------------------------

def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    indexed_db(tmp_path / "work" / "db", 2, shape=(1, 2, 2))
    write_mean(tmp_path / "work" / "mean.binaryproto", np.ones((1, 2, 2), np.float32))
    monkeypatch.chdir(tmp_path / "work")
    f = build_feeder(data_layer("db", 2, 'mean_file: "mean.binaryproto"'), "TEST")
    assert f.next_batch()["data"][:, 0, 0, 0].tolist() == [-1.0, 0.0]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CompressError, match=rf"data_param.source: no LMDB folder 'db' \(relative paths "
                                            rf"resolve against the working directory {tmp_path}\)"):
        build_feeder(data_layer("db", 2), "TEST")


# --- bad input: one clear line each ----------------------------------------------------------------

def _raw_db(path, records) -> None:
    write_lmdb(path, [datum_bytes(r, i) if isinstance(r, np.ndarray) else r for i, r in enumerate(records)])


def _bad(tmp_path, case):
    db = tmp_path / "db"
    if case == "missing":
        return data_layer(db, 1)
    if case == "leveldb":
        indexed_db(db, 1)
        return layer(f'name: "d" type: "Data" top: "data" data_param {{ source: "{db}" batch_size: 1 }}')
    if case == "file":
        db.write_text("x")
        return data_layer(db, 1)
    if case == "empty":
        write_lmdb(db, [])
        return data_layer(db, 1)
    if case == "size":
        _raw_db(db, [np.zeros((1, 4, 4), np.uint8)] * 2 + [np.zeros((1, 4, 3), np.uint8)])
        return data_layer(db, 1)
    if case == "channels":
        _raw_db(db, [np.zeros((1, 4, 4), np.uint8), np.zeros((3, 5, 5), np.uint8)])
        return data_layer(db, 1, "crop_size: 2")
    if case == "crop":
        indexed_db(db, 1, shape=(1, 4, 5))
        return data_layer(db, 1, "crop_size: 5")
    if case == "mean_shape":
        indexed_db(db, 1, shape=(1, 4, 4))
        write_mean(tmp_path / "m.binaryproto", np.zeros((3, 4, 4), np.float32))
        return data_layer(db, 1, f'mean_file: "{tmp_path / "m.binaryproto"}"')
    if case == "mean_missing":
        indexed_db(db, 1)
        return data_layer(db, 1, f'mean_file: "{tmp_path / "nope.binaryproto"}"')
    if case == "mean_both":
        indexed_db(db, 1)
        return data_layer(db, 1, f'mean_file: "{tmp_path / "m"}" mean_value: 1')
    if case == "mean_count":
        indexed_db(db, 1, shape=(3, 2, 2))
        return data_layer(db, 1, "mean_value: 1 mean_value: 2")
    if case == "undecodable":
        _raw_db(db, [datum_bytes(encoded=b"not an image at all", label=0)])
        return data_layer(db, 1)
    if case == "not_datum":
        _raw_db(db, [b"\xff\xff\xff"])
        return data_layer(db, 1)
    if case == "short_data":
        from converters.caffe.proto import caffe_pb2

        _raw_db(db, [caffe_pb2.Datum(channels=1, height=2, width=2, data=b"\0\0").SerializeToString()])
        return data_layer(db, 1)
    if case == "batch":
        indexed_db(db, 1)
        return data_layer(db, 0)
    if case == "force_both":
        indexed_db(db, 1)
        return data_layer(db, 1, "force_color: true force_gray: true")
    raise AssertionError(case)


BAD = {
    "missing": r"layer 'mnist' \(Data\): data_param.source: no LMDB folder '.*db'$",
    "leveldb": r"layer 'd' \(Data\): data_param.backend is LEVELDB \(caffe.proto's default when backend "
               r"is not set\); only LMDB is supported",
    "file": r"data_param.source: '.*db' is a file; an LMDB is a folder holding data.mdb",
    "empty": r"data_param.source: LMDB '.*db' has no records",
    "size": r"record '00000002' of '.*db': image is 1x4x3, the first one is 1x4x4 \(without crop_size",
    "channels": r"record '00000001' of '.*db': image is 3x5x5, the first one is 1x4x4$",
    "crop": r"first record of '.*db': transform_param.crop_size 5 is larger than the image 4x5",
    "mean_shape": r"mean_file '.*m.binaryproto' holds a 3x4x4 mean, the image is 1x4x4",
    "mean_missing": r"transform_param.mean_file: no file '.*nope.binaryproto'",
    "mean_both": r"cannot specify mean_file and mean_value at the same time",
    "mean_count": r"transform_param has 2 mean_value entries for 3-channel images; give 1 or 3",
    "undecodable": r"record '00000000' of '.*db': cannot decode the image \(\w+ does not recognise its "
                   r"19 bytes\)",
    "not_datum": r"record '00000000' of '.*db': not a serialized Datum",
    "short_data": r"record '00000000' of '.*db': Datum 1x2x2 needs 4 bytes of data, found 2",
    "batch": r"data_param.batch_size must be positive, found 0",
    "force_both": r"sets both force_color and force_gray",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_clear_error(tmp_path, case):
    spec = _bad(tmp_path, case)
    with pytest.raises(CompressError, match=BAD[case]) as info:
        build_feeder(spec, "TRAIN")
    assert "\n" not in str(info.value)


def test_unsupported_layer_types_are_named(tmp_path):
    with pytest.raises(CompressError, match=r"layer 'x' \(MemoryData\): MemoryData is not supported .*; "
                                            r"supported: Data, HDF5Data, ImageData"):
        build_feeder(layer('name: "x" type: "MemoryData" top: "data"'), "TRAIN")
    with pytest.raises(CompressError, match="phase must be one of TRAIN, TEST"):
        build_feeder(data_layer(tmp_path / "db", 1), "train")


# --- the generator ---------------------------------------------------------------------------------

def test_rng_is_mt19937_with_caffes_mappings():
    # C++11 [rand.predef]: the 10000th output of a default-constructed (seed 5489) mt19937 is 4123659995
    assert CaffeRng(5489).raw(10000)[-1] == 4123659995
    a, b = CaffeRng(42), np.random.RandomState(42)
    assert a.rand(7, 5).tolist() == [int(v) % 7 for v in b.randint(0, 2**32, 5, dtype=np.uint32)]


def _boost_shuffle(items: list, stream) -> list:
    """caffe::shuffle with boost::uniform_int<>(0, i), one raw 32-bit draw at a time."""
    items = list(items)
    for i in range(len(items) - 1, 0, -1):
        bucket = (2**32 - 1) // (i + 1) + ((2**32 - 1) % (i + 1) == i)
        while (j := int(stream.randint(0, 2**32, dtype=np.uint32)) // bucket) > i:
            pass
        items[i], items[j] = items[j], items[i]
    return items


def test_shuffle_is_caffes_and_state_round_trips():
    rng = CaffeRng(7)
    items = list(range(50))
    rng.shuffle(items)
    reference = np.random.RandomState(7)
    assert items == _boost_shuffle(range(50), reference)
    state = rng.state_dict()
    after = rng.raw(3).tolist()
    assert after == reference.randint(0, 2**32, 3, dtype=np.uint32).tolist()  # same stream position
    clone = CaffeRng(0)
    clone.load_state_dict(state)
    assert clone.raw(3).tolist() == after


def _untemper(y: int) -> int:
    """The mt19937 state word whose tempered output is ``y`` (MT's tempering steps undone in reverse)."""
    def undo(value, shift, mask=0xFFFFFFFF):
        x = value
        for _ in range(32 // abs(shift) + 1):
            x = value ^ (((x << -shift) if shift < 0 else (x >> shift)) & mask & 0xFFFFFFFF)
        return x

    return undo(undo(undo(undo(y, 18), -15, 0xEFC60000), -7, 0x9D2C5680), 11)


def _crafted(outputs: list[int]) -> dict:
    """A generator state whose next raw outputs are ``outputs``."""
    keys = np.random.RandomState(0).get_state()[1].astype(np.int64)
    keys[: len(outputs)] = [_untemper(v) for v in outputs]
    return {"mt19937": torch.from_numpy(keys), "pos": 0}


def test_shuffle_rewinds_at_a_rejected_draw():
    # uniform_int(0, 2) uses buckets of (2**32 - 1) // 3 values: the top raw value, 2**32 - 1, falls
    # outside them and boost draws again; the bulk pass must rewind there and consume exactly that.
    state = _crafted([2**32 - 1, 5, 3_000_000_000, 77])
    rng = CaffeRng(0)
    rng.load_state_dict(state)
    assert rng.raw(4).tolist() == [2**32 - 1, 5, 3_000_000_000, 77]
    rng.load_state_dict(state)
    items = ["a", "b", "c"]
    rng.shuffle(items)
    # i=2: 2**32-1 rejected, then 5 // 1431655765 = 0 -> swap 2,0; i=1: 3e9 // 2**31 = 1 -> no swap
    assert items == ["c", "b", "a"]
    assert rng.raw(1).tolist() == [77]


# --- MNIST LMDBs (from a small stand-in pickle) ---------------------------------------------------

def test_mnist_lmdbs_hold_raw_bytes_in_mnist_order(tmp_path):
    import gzip
    import pickle

    from compress.data.caffe.mnist_lmdb import main

    rng = np.random.default_rng(0)
    raw = [rng.integers(0, 256, (n, 784)).astype(np.uint8) for n in (3, 2, 2)]
    splits = tuple((r.astype(np.float32) / 256, np.arange(len(r), dtype=np.int64) + 10 * k)
                   for k, r in enumerate(raw))
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(splits, f, protocol=2)
    from compress.data.caffe.mnist_lmdb import write_mnist_lmdbs

    paths = write_mnist_lmdbs(tmp_path / "out", pickle_path=tmp_path / "mnist.pkl.gz")
    train = build_feeder(data_layer(paths["train"], 5), "TEST").next_batch()
    test = build_feeder(data_layer(paths["test"], 2), "TEST").next_batch()
    assert train["label"].tolist() == [0, 1, 2, 10, 11]  # the train split, then the valid split
    assert test["label"].tolist() == [20, 21]
    np.testing.assert_array_equal(train["data"].numpy().reshape(5, 784), np.concatenate(raw[:2]))
    np.testing.assert_array_equal(test["data"].numpy().reshape(2, 784), raw[2])
    assert main([str(tmp_path / "out")]) == 1  # exists already: one error line, nothing overwritten


def test_mnist_pixels_must_be_whole_multiples_of_a_256th():
    from compress.data.caffe.mnist_lmdb import raw_pixels

    assert raw_pixels(np.array([0, 255 / 256], np.float32), "x").tolist() == [0, 255]
    with pytest.raises(CompressError, match="x: pixels are not whole multiples of 1/256"):
        raw_pixels(np.array([0.3], np.float32), "x")


@pytest.mark.slow
def test_real_mnist_lmdbs_give_caffes_first_loss_and_test_outputs(tmp_path, caffe_lenet):
    """With the reference run present: Caffe's loss at iteration 0 and its test outputs at 0."""
    import json

    from compress.data.caffe.mnist_lmdb import write_mnist_lmdbs
    from converters.caffe.builder import build_net
    from converters.caffe.prototxt import parse_net_text
    from converters.caffe.reader import read_caffemodel

    write_mnist_lmdbs(tmp_path)
    with open(caffe_lenet / "train_val.prototxt") as f:
        net_param = parse_net_text(f.read().replace("@L", str(tmp_path)))
    train, test = (build_feeder(lay, phase) for lay, phase in zip(
        [x for x in net_param.layer if x.type == "Data"], ["TRAIN", "TEST"], strict=True))
    net = build_net(net_param, read_caffemodel(caffe_lenet / "init.caffemodel").blobs, "TEST",
                    input_shapes={"data": test.shapes["data"]})
    with open(caffe_lenet / "reference.json") as f:
        caffe_run = json.load(f)
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        b = train.next_batch()
        assert ce(net(b["data"]), b["label"]).item() == pytest.approx(caffe_run["loss"]["0"], rel=1e-5)
        outs = [(net(b["data"]), b["label"]) for b in feed(test, 100)]
    accuracy = sum(int((o.argmax(1) == y).sum()) for o, y in outs) / 10000
    loss = sum(ce(o, y).item() for o, y in outs) / 100
    assert accuracy == caffe_run["test"]["0"]["accuracy"]
    assert loss == pytest.approx(caffe_run["test"]["0"]["loss"], rel=1e-5)
