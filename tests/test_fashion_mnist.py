"""Fashion-MNIST: ``--data fashion-mnist``, its LMDBs for Caffe, and the zoo's Fashion-MNIST Caffe files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compress.data import get_data
from compress.data.idx import write_idx
from compress.errors import CompressError

REAL = Path("/usr/share/datasets/fashion-mnist")


def _standin(root: Path, n_train: int = 6, n_test: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A small idx folder in Fashion-MNIST's layout: images with distinct pixels, labels 0..9."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    x = rng.integers(1, 256, (n_train, 28, 28)).astype(np.uint8)
    xt = rng.integers(1, 256, (n_test, 28, 28)).astype(np.uint8)
    write_idx(root / "train-images-idx3-ubyte.gz", x)
    write_idx(root / "train-labels-idx1-ubyte.gz", (np.arange(n_train) % 10).astype(np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte.gz", xt)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", (np.arange(n_test) + 7).astype(np.uint8) % 10)
    return x, xt


def test_missing_dataset_is_one_line_naming_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(CompressError, match=r"Fashion-MNIST not found .*apt-get install dataset-fashion"):
        get_data("fashion-mnist", (1, 1, 28, 28))


def test_fashion_mnist_reads_the_idx_folder_with_mnist_preprocessing(tmp_path, monkeypatch):
    x, xt = _standin(tmp_path / "fm")
    monkeypatch.setenv("COMPRESS_FASHION_MNIST", str(tmp_path / "fm"))
    splits = get_data("fashion-mnist", (1, 1, 28, 28), batch_size=3)
    assert splits.name == "fashion-mnist" and splits.num_classes == 10
    assert splits.meta["sizes"] == {"train": 6, "test": 3}
    assert splits.meta["augment"] == ["shift", "mirror"]
    assert splits.meta["preprocess"] == {"scale": 0.00390625, "channel_order": "gray", "mean": None}
    xb, yb = next(iter(splits.test))
    np.testing.assert_array_equal(xb.numpy()[:, 0] * 256, xt.astype(np.float32))
    assert yb.tolist() == [7, 8, 9]


def test_fashion_mnist_lmdbs_hold_raw_and_padded_images(tmp_path, monkeypatch):
    from compress.data.caffe import build_feeder
    from compress.data.caffe.mnist_lmdb import main
    from converters.caffe.proto import caffe_pb2

    x, xt = _standin(tmp_path / "fm")
    monkeypatch.setenv("COMPRESS_FASHION_MNIST", str(tmp_path / "fm"))
    assert main([str(tmp_path / "out"), "--dataset", "fashion-mnist"]) == 0

    def feed(name: str, batch: int, transform: str = "", phase: str = "TEST") -> dict:
        layer = caffe_pb2.LayerParameter(name="data", type="Data", top=["data", "label"])
        layer.data_param.source = str(tmp_path / "out" / name)
        layer.data_param.batch_size = batch
        layer.data_param.backend = caffe_pb2.DataParameter.LMDB
        if transform:
            layer.transform_param.crop_size = 28
        return build_feeder(layer, phase).next_batch()

    raw = feed("fashion_mnist_train_lmdb", 6)
    np.testing.assert_array_equal(raw["data"].numpy()[:, 0], x)
    assert raw["label"].tolist() == list(range(6))
    pad = feed("fashion_mnist_train_pad2_lmdb", 6)["data"].numpy()[:, 0]
    assert pad.shape == (6, 32, 32)
    np.testing.assert_array_equal(pad[:, 2:30, 2:30], x)
    assert pad.sum() == x.astype(np.int64).sum()  # the border is zero
    centre = feed("fashion_mnist_train_pad2_lmdb", 6, "crop")["data"].numpy()[:, 0]
    np.testing.assert_array_equal(centre, x)  # TEST's centre crop of the padded image is the image
    np.testing.assert_array_equal(feed("fashion_mnist_test_lmdb", 3)["data"].numpy()[:, 0], xt)
    assert main([str(tmp_path / "out"), "--dataset", "fashion-mnist"]) == 1  # exists: nothing overwritten


def test_zoo_fashion_mnist_files_are_what_make_nets_writes():
    from zoo.make_nets import main

    assert main(["--check"]) == 0


@pytest.mark.parametrize("name", ["mobilenet_v1_0.25", "mobilenet_v1_0.5", "resnet20"])
def test_zoo_fashion_mnist_nets_build_in_both_phases(name):
    import torch

    from converters.caffe import load
    from converters.caffe.phase import build_phase_net
    from converters.caffe.prototxt import read_net_text
    from zoo import ZOO_DIR

    deploy = load(str(ZOO_DIR / f"{name}.prototxt"))
    assert deploy(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    train_val = read_net_text(str(ZOO_DIR / "train" / name / "train_val.prototxt"))
    shapes = {"data": (4, 1, 28, 28), "label": (4,)}
    train = build_phase_net(train_val, "TRAIN", input_shapes=shapes,
                            generator=torch.Generator().manual_seed(0))
    out = train.run({"data": torch.rand(4, 1, 28, 28), "label": torch.tensor([0, 1, 2, 3])})
    assert torch.isfinite(out.objective)
    grouped = [m for m in train.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert all(m.groups == m.in_channels == m.out_channels for m in grouped)  # depthwise
    assert len(grouped) == (13 if name.startswith("mobilenet") else 0)


@pytest.mark.skipif(not REAL.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_has_its_sizes_and_ten_balanced_classes():
    splits = get_data("fashion-mnist", (1, 1, 28, 28), batch_size=10000)
    assert splits.meta["sizes"] == {"train": 60000, "test": 10000}
    _, y = next(iter(splits.test))
    assert np.bincount(y.numpy()).tolist() == [1000] * 10


GOALS = {"mobilenet_v1_0.5": 0.920, "mobilenet_v1_0.25": 0.905, "resnet20": 0.925}  # issue 18's baselines


@pytest.mark.skipif(not REAL.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
@pytest.mark.parametrize("name", sorted(GOALS))
def test_shipped_fashion_mnist_weights_score_what_the_zoo_says(name):
    """The zoo's recorded top-1 is what compress eval measures on the 10,000 test images, and it reaches
    the baseline the models were trained for."""
    from compress.evaluate import evaluate_model
    from zoo import get

    entry = get(name)
    if not entry.has_weights:
        pytest.skip(f"{name} is not trained yet (zoo/{name}.caffemodel does not ship)")
    report = evaluate_model(name, "fashion-mnist", device="cpu")
    assert report.test_images == 10000
    assert report.result.top1 == pytest.approx(entry.accuracy, abs=3e-4)  # another CPU may flip an image
    assert entry.accuracy >= GOALS[name]
