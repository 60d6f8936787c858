"""``compress info`` without torch (``compress/netinfo.py``, ``compress/skeleton.py``): for every kind of
model the same output, warnings and errors as loading the model with torch, which it hands over to when
unsure."""
from __future__ import annotations

import shutil
import warnings
import zipfile

import pytest
import torch

from compress import netinfo
from compress.cli import main
from compress.modelfile import load_model, save_model
from compress.skeleton import BlobSkeleton, Unreadable, read_skeleton
from converters import caffe
from tests.nets import TINY, TINY_TRAIN_VAL, TINY_V1, random_blobs, write_net


def _loaded_with_torch(*args, **kwargs):
    raise netinfo._HandOver


def _info(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = main(["info", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _same_as_torch(capsys, monkeypatch, argv: list[str]) -> tuple[int, str, str]:
    """``compress info ARGV`` as it runs, and with the torch-free reading switched off: equal (Python
    warnings shown each time, as in two processes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        fast = _info(capsys, argv)
        with monkeypatch.context() as m:
            m.setattr(netinfo, "_without_torch", _loaded_with_torch)
            slow = _info(capsys, argv)
    assert fast == slow
    return fast


@pytest.fixture
def models(tmp_path):
    """kind -> (MODEL, --prototxt or None) of ``compress info``, one model of every kind."""
    proto, weights = write_net(tmp_path, TINY, seed=3, name="tiny")
    v1_proto, v1_weights = write_net(tmp_path, TINY_V1, seed=4, name="tiny_v1")
    lenet_weights = tmp_path / "lenet_copy.caffemodel"  # no prototxt beside it: matched to the zoo LeNet
    shutil.copy("zoo/lenet.caffemodel", lenet_weights)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(weights, alone / "w.caffemodel")
    model_file = tmp_path / "tiny.pt"
    save_model(model_file, caffe.load(proto, weights), {"source": "test"})
    lenet_file = tmp_path / "lenet.pt"
    lenet = load_model("lenet")
    save_model(lenet_file, lenet.net, lenet.meta)
    short = tmp_path / "short.prototxt"  # the caffemodel's ip1 is not in it: ignored, with a warning
    short.write_text(TINY.split('layer { name: "ip1"')[0])
    return {
        "zoo lenet": ("lenet", None), "zoo alexnet": ("alexnet", None),
        "zoo resnet20 prototxt": ("zoo/resnet20.prototxt", None),
        "zoo mobilenet prototxt": ("zoo/mobilenet_v1_0.25.prototxt", None),
        "caffemodel + prototxt": (str(weights), str(proto)),
        "caffemodel beside its prototxt": (str(weights), None),
        "caffemodel matched to the zoo": (str(lenet_weights), None),
        "caffemodel matching nothing": (str(alone / "w.caffemodel"), None),
        "V1 prototxt": (str(v1_proto), None), "V1 caffemodel": (str(v1_weights), None),
        "model file": (str(model_file), None), "zoo lenet model file": (str(lenet_file), None),
        "caffemodel with a layer the definition lacks": (str(weights), str(short)),
    }


KINDS = ["zoo lenet", "zoo alexnet", "zoo resnet20 prototxt", "zoo mobilenet prototxt",
         "caffemodel + prototxt", "caffemodel beside its prototxt", "caffemodel matched to the zoo",
         "caffemodel matching nothing", "V1 prototxt", "V1 caffemodel", "model file", "zoo lenet model file",
         "caffemodel with a layer the definition lacks"]


def _argv(spec: str, prototxt: str | None) -> list[str]:
    return [spec] + (["--prototxt", prototxt] if prototxt else [])


@pytest.mark.parametrize("kind", KINDS)
def test_info_is_the_same_without_torch(capsys, monkeypatch, models, kind):
    rc, out, err = _same_as_torch(capsys, monkeypatch, _argv(*models[kind]))
    if kind == "caffemodel matching nothing":
        assert rc == 1 and "no net definition found" in err
        return
    assert rc == 0 and out.rstrip().splitlines()[-1].startswith("total")
    untrained = ("zoo alexnet", "zoo resnet20 prototxt", "zoo mobilenet prototxt", "V1 prototxt")
    assert ("weights are initialized" in err) == (kind in untrained)
    if kind == "caffemodel with a layer the definition lacks":
        assert "ignored layers of caffemodel" in err and "ip1" in err


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "caffemodel matching nothing"])
def test_the_common_kinds_are_read_without_torch(models, kind):
    assert not netinfo.net_info(*models[kind]).with_torch


@pytest.mark.parametrize("change, in_the_definition", [
    (("num_output: 5", "num_output: 6"), False),  # blob shape mismatch
    (("num_output: 4 kernel_size: 3", "num_output: 4 bias_term: false kernel_size: 3"), False),  # blob count
    (("kernel_size: 3 pad: 1", "kernel_size: 30"), True),  # a kernel larger than its input: torch's words
    (('bottom: "pool1" top: "ip1"', 'bottom: "nothing" top: "ip1"'), True),
    (("num_output: 5 }", "num_output: 5"), True),  # a syntax error
])
def test_errors_are_the_loaders(capsys, monkeypatch, tmp_path, change, in_the_definition):
    proto, weights = write_net(tmp_path, TINY, seed=0, name="tiny")
    bad = tmp_path / "bad.prototxt"
    bad.write_text(TINY.replace(*change))
    for argv in [[str(weights), "--prototxt", str(bad)]] + [[str(bad)]] * in_the_definition:
        rc, out, err = _same_as_torch(capsys, monkeypatch, argv)
        assert rc == 1 and err.startswith("Error: ") and out == ""


def test_train_val_without_shapes_and_missing_files(capsys, monkeypatch, tmp_path):
    proto = tmp_path / "train_val.prototxt"
    proto.write_text(TINY_TRAIN_VAL)
    for argv in ([str(proto)], [str(tmp_path / "none.pt")], ["no-such-zoo-name"], [str(tmp_path)],
                 ["lenet", "--prototxt", str(proto)]):
        rc, _, err = _same_as_torch(capsys, monkeypatch, argv)
        assert rc == 1 and err.startswith("Error: ")


def _tiny_model_file(tmp_path, name="m.pt"):
    proto, weights = write_net(tmp_path, TINY, seed=1, name="tiny")
    path = tmp_path / name
    save_model(path, caffe.load(proto, weights), {})
    return path


def test_skeleton_reads_shapes_without_data(tmp_path):
    path = _tiny_model_file(tmp_path)
    data = read_skeleton(path)
    assert data["format"] == "compress-model" and data["version"] == 1
    assert data["blobs"]["conv1"] == [BlobSkeleton((4, 2, 3, 3), "float32"), BlobSkeleton((4,), "float32")]
    assert data["blobs"]["ip1"][0].shape == (5, 64)


def _rewrite(src, dst, drop: str | None = None, truncate: str | None = None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            body = zin.read(info)
            if drop and info.filename.endswith(drop):
                continue
            if truncate and info.filename.endswith(truncate):
                body = body[:-4]
            zout.writestr(info, body)


def test_skeleton_hands_over_what_it_cannot_vouch_for(capsys, monkeypatch, tmp_path):
    good = _tiny_model_file(tmp_path)
    cases = {}
    cases["missing storage"] = tmp_path / "missing.pt"
    _rewrite(good, cases["missing storage"], drop="data/0")
    cases["short storage"] = tmp_path / "short.pt"
    _rewrite(good, cases["short storage"], truncate="data/1")
    double = {"format": "compress-model", "version": 1, "netdef": caffe.load(
        *write_net(tmp_path, TINY, name="t2")).netdef, "meta": "{}",
        "blobs": {k: [torch.from_numpy(b).double() for b in v] for k, v in
                  random_blobs(caffe.load(tmp_path / "t2.prototxt"), 0).items()}}
    cases["float64 blobs"] = tmp_path / "double.pt"
    torch.save(double, cases["float64 blobs"])
    cases["protocol 4"] = tmp_path / "p4.pt"
    torch.save(torch.load(good, weights_only=True), cases["protocol 4"], pickle_protocol=4)
    view = torch.load(good, weights_only=True)
    view["blobs"]["ip1"][0] = torch.zeros(10, 64)[::2]  # a strided view of a larger storage
    cases["strided view"] = tmp_path / "view.pt"
    torch.save(view, cases["strided view"])
    for name, path in cases.items():
        rc, out, err = _same_as_torch(capsys, monkeypatch, [str(path)])
        assert (rc == 0) == (name in ("float64 blobs", "strided view")), (name, err)
    assert read_skeleton(cases["float64 blobs"])["blobs"]["conv1"][0].dtype == "float64"
    for name in ("missing storage", "short storage", "protocol 4"):
        with pytest.raises(Unreadable):
            read_skeleton(cases[name])


def test_non_finite_weights_are_the_loaders_to_judge(capsys, monkeypatch, tmp_path):
    import numpy as np

    from converters.caffe.reader import read_caffemodel
    from converters.caffe.writer import write_caffemodel

    proto, weights = write_net(tmp_path, TINY, seed=2, name="tiny")
    model = read_caffemodel(weights)
    model.blobs["ip1"][0][0, 3] = np.nan
    nan_weights = tmp_path / "nan.caffemodel"
    write_caffemodel(nan_weights, model.net, model.blobs)
    nan_file = tmp_path / "nan.pt"
    net = caffe.load(proto, weights)
    with torch.no_grad():
        net.layer("ip1").weight[0, 3] = float("nan")
    save_model(nan_file, net, {})
    for spec, prototxt in ((str(nan_weights), str(proto)), (str(nan_file), None)):
        with pytest.raises(ValueError, match="NaN or infinite"):  # the torch loader judges, and refuses
            netinfo.net_info(spec, prototxt)
        code, _, err = _same_as_torch(capsys, monkeypatch, _argv(spec, prototxt))
        assert code == 1 and "NaN or infinite" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(Unreadable, match="NaN"):
        read_skeleton(nan_file, finite=True)
    assert read_skeleton(nan_file)["blobs"]["ip1"][0].shape == (5, 64)


def test_no_code_runs_and_other_globals_are_beyond_it(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"format": "compress-model", "x": Boom()}, protocol=2))
    with pytest.raises(Unreadable, match="print"):
        read_skeleton(path)


def test_warnings_are_said_once_when_the_reading_hands_over(capsys, monkeypatch, tmp_path):
    proto = tmp_path / "odd.prototxt"  # a training-only layer (dropped, with a warning), then a kernel
    proto.write_text(TINY.replace("kernel_size: 3 pad: 1", "kernel_size: 30")  # larger than its input
                     + 'layer { name: "quiet" type: "Silence" bottom: "prob" }\n')
    rc, out, err = _same_as_torch(capsys, monkeypatch, [str(proto)])
    assert rc == 1 and err.count("dropped training-only layers: quiet (Silence)") == 1
    rc, out, err = _info(capsys, ["zoo/lenet.prototxt"])
    assert rc == 0 and err.count("a definition without weights") == 1
