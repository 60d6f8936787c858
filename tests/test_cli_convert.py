"""`compress convert`, `compress info`, `compress zoo list`, and the model file behind them."""
from __future__ import annotations

import shutil

import numpy as np
import torch

import zoo
from compress.cli import main
from compress.modelfile import load_model, save_model
from converters import caffe
from tests.nets import TINY, TINY_TRAIN_VAL, random_blobs, write_net


def _same_weights(a, b) -> None:
    for node in a.nodes:
        ma, mb = a.layer(node.name), b.layer(node.name)
        if hasattr(ma, "get_caffe_blobs"):
            for x, y in zip(ma.get_caffe_blobs(), mb.get_caffe_blobs(), strict=True):
                assert x.numpy().tobytes() == y.numpy().tobytes()


def test_convert_writes_a_model_file_that_reloads_identically(capsys, tmp_path):
    proto, model = write_net(tmp_path, TINY, seed=4)
    out = tmp_path / "tiny.pt"
    assert main(["convert", str(model), "--prototxt", str(proto), "-o", str(out)]) == 0
    assert f"Wrote {out}: tiny, 5 layers, 401 parameters" in capsys.readouterr().err
    loaded = load_model(out)
    direct = caffe.load(proto, model)
    _same_weights(loaded.net, direct)
    x = torch.randn(1, 2, 8, 8)
    assert torch.equal(loaded.net(x), direct(x))
    assert loaded.meta["source"] == str(model) and loaded.path == str(out)
    raw = torch.load(out, weights_only=True)  # plain data only
    assert raw["format"] == "compress-model" and raw["version"] == 1
    assert list(raw["blobs"]) == ["conv1", "ip1"] and raw["netdef"] == direct.netdef


def test_model_file_round_trip_keeps_meta_and_blobs(tmp_path):
    net = caffe.load(*write_net(tmp_path, TINY, seed=9))
    meta = {"method": "admm", "targets": {"conv1": 0.5}, "accuracy_after": np.float32(0.25),
            "history": [{"epoch": 1, "loss": torch.tensor(0.5)}]}
    save_model(tmp_path / "m.pt", net, meta)
    again = load_model(tmp_path / "m.pt")
    _same_weights(net, again.net)
    assert again.meta["method"] == "admm" and again.meta["targets"] == {"conv1": 0.5}
    assert again.meta["accuracy_after"] == 0.25 and again.meta["history"][0]["loss"] == 0.5
    assert "created" in again.meta
    save_model(tmp_path / "m2.pt", again.net, again.meta)
    _same_weights(net, load_model(tmp_path / "m2.pt").net)


def test_caffemodel_finds_its_sibling_prototxt_then_the_zoo(tmp_path):
    proto, model = write_net(tmp_path, TINY, seed=1)
    assert load_model(model).net.name == "tiny"  # net.prototxt beside net.caffemodel
    lenet = caffe.load("zoo/lenet.prototxt")
    for name, blobs in random_blobs(lenet, seed=0).items():
        lenet.layer(name).set_caffe_blobs([torch.from_numpy(b) for b in blobs])
    caffe.save(lenet, tmp_path / "my_lenet.caffemodel")  # no my_lenet.prototxt beside it
    found = load_model(tmp_path / "my_lenet.caffemodel")
    assert found.meta["zoo"] == "lenet" and found.meta["preprocess"]["scale"] == 0.00390625
    _same_weights(found.net, lenet)


def test_zoo_names_load(tmp_path):
    model = load_model("lenet")
    assert model.net.inputs == {"data": (1, 1, 28, 28)} and model.net.outputs == ["prob"]
    assert model.meta["zoo"] == "lenet" and model.path is None
    assert model.net(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_info_table(capsys, tmp_path):
    proto, model = write_net(tmp_path, TINY, seed=0)
    assert main(["info", str(model), "--prototxt", str(proto)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "tiny: inputs data 1x2x8x8 -> outputs prob"
    assert out[1].split() == ["layer", "type", "top", "shape", "params"]
    rows = {line.split()[0]: line.split()[1:] for line in out[2:]}
    assert rows["data"] == ["Input", "1x2x8x8", "0"]
    assert rows["conv1"] == ["Convolution", "1x4x8x8", "76"]  # 4*2*3*3 + 4
    assert rows["relu1"] == ["ReLU", "1x4x8x8", "0"]
    assert rows["pool1"] == ["Pooling", "1x4x4x4", "0"]
    assert rows["ip1"] == ["InnerProduct", "1x5", "325"]  # 5*64 + 5
    assert rows["total"] == ["401"]


def test_info_of_zoo_lenet(capsys):
    assert main(["info", "lenet"]) == 0
    out = capsys.readouterr().out
    assert "conv2  Convolution   1x50x8x8     25,050" in out
    assert out.rstrip().endswith("431,080")


def test_zoo_list(capsys):
    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:7] == ["name", "input", "params", "weights", "dataset", "top-1", "presets"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["lenet"][1:6] == ["1x1x28x28", "431,080", "trained", "mnist", "99.16%"]
    assert rows["alexnet"][1:6] == ["10x3x227x227", "60,965,224", "none", "-", "-"]  # no weights ship
    assert rows["resnet20"][1:6] == ["1x1x28x28", "273,775", "trained", "fashion-mnist", "94.24%"]
    assert list(rows) == zoo.names()


def test_convert_train_val_with_input_shape(capsys, tmp_path):
    proto = tmp_path / "train_val.prototxt"
    proto.write_text(TINY_TRAIN_VAL)
    out = tmp_path / "tv.pt"
    assert main(["convert", str(proto), "--input-shape", "1,1,8,8", "--prototxt", str(proto),
                 "-o", str(out)]) == 1  # --prototxt belongs to a .caffemodel MODEL
    capsys.readouterr()
    weights_proto, weights = write_net(tmp_path, TINY_TRAIN_VAL, input_shapes={"data": (2, 1, 8, 8)},
                                       name="tv")
    assert main(["convert", str(weights), "--prototxt", str(weights_proto), "--input-shape", "1,1,8,8",
                 "-o", str(out)]) == 0
    model = load_model(out)
    assert model.net.inputs == {"data": (1, 1, 8, 8)}
    assert model.meta["preprocess"] == {"scale": 0.00390625, "mean": None, "channel_order": "gray"}
    err = capsys.readouterr().err
    assert "dropped training-only layers: accuracy (Accuracy), loss (SoftmaxWithLoss)\n" in err


def test_convert_keeps_an_existing_output_on_failure(capsys, tmp_path):
    proto, model = write_net(tmp_path, TINY, seed=0)
    out = tmp_path / "keep.pt"
    out.write_bytes(b"previous")
    broken = tmp_path / "broken.caffemodel"
    shutil.copy(model, broken)
    broken.write_bytes(broken.read_bytes()[:100])
    assert main(["convert", str(broken), "--prototxt", str(proto), "-o", str(out)]) == 1
    assert out.read_bytes() == b"previous"
