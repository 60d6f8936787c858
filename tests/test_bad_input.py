"""Bad input: one clear line on stderr, exit status 1, nothing written, never a traceback."""
from __future__ import annotations

import time

import pytest

import zoo
from compress.cli import main
from tests.nets import TINY, write_net


def _fails(capsys, tmp_path, argv: list[str], *expected: str) -> str:
    out = tmp_path / "out.pt"
    rc = main([*argv, "-o", str(out)] if argv[0] == "convert" else argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert rc == 1, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.pt")]  # no temporary left
    return lines[0]


@pytest.fixture
def tiny(tmp_path):
    return write_net(tmp_path, TINY, seed=0, name="tiny")


def _variant(tmp_path, old: str, new: str) -> str:
    assert old in TINY
    path = tmp_path / "variant.prototxt"
    path.write_text(TINY.replace(old, new))
    return str(path)


def test_truncated_caffemodel(capsys, tmp_path, tiny):
    proto, model = tiny
    data = model.read_bytes()
    model.write_bytes(data[: len(data) - 37])
    _fails(capsys, tmp_path, ["convert", str(model), "--prototxt", str(proto)],
           "truncated caffemodel", str(model), "layer 'ip1'")


def test_corrupt_caffemodel(capsys, tmp_path, tiny):
    proto, model = tiny
    model.write_bytes(b"\xff" * 64)
    _fails(capsys, tmp_path, ["convert", str(model), "--prototxt", str(proto)], "corrupt caffemodel")


def test_prototxt_syntax_error_names_file_and_line(capsys, tmp_path, tiny):
    _, model = tiny
    bad = _variant(tmp_path, "num_output: 5 }", "num_output: 5")  # the ip1 layer loses a brace
    line = _fails(capsys, tmp_path, ["convert", str(model), "--prototxt", bad], bad + ":")
    assert line.split(bad + ":")[1].split(":")[0].isdigit()


def test_unknown_layer_types_are_all_named_at_once(capsys, tmp_path):
    ssd = tmp_path / "ssd.prototxt"
    ssd.write_text("""
    input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
    layer { name: "norm" type: "Normalize" bottom: "data" top: "norm" }
    layer { name: "conv" type: "Convolution" bottom: "norm" top: "conv"
            convolution_param { num_output: 4 kernel_size: 1 } }
    layer { name: "priors" type: "PriorBox" bottom: "conv" bottom: "data" top: "priors" }
    layer { name: "detect" type: "DetectionOutput" bottom: "conv" bottom: "priors" top: "detect" }
    """)
    line = _fails(capsys, tmp_path, ["info", str(ssd)],
                  "DetectionOutput", "Normalize", "PriorBox", "norm (Normalize)", "priors (PriorBox)",
                  "detect (DetectionOutput)", "supported:", "Convolution")
    assert "conv (Convolution)" not in line


def test_blob_count_mismatch(capsys, tmp_path, tiny):
    _, model = tiny
    proto = _variant(tmp_path, "num_output: 4 kernel_size: 3",
                     "num_output: 4 bias_term: false kernel_size: 3")
    _fails(capsys, tmp_path, ["convert", str(model), "--prototxt", proto],
           "layer 'conv1' (Convolution): expected 1 blob,", "has 2")


def test_blob_shape_mismatch_names_layer_blob_expected_and_found(capsys, tmp_path, tiny):
    _, model = tiny
    proto = _variant(tmp_path, "num_output: 5", "num_output: 6")
    _fails(capsys, tmp_path, ["convert", str(model), "--prototxt", proto],
           "layer 'ip1' (InnerProduct): blob 0: expected shape 6x64", "has 5x64")


def test_layer_with_weights_missing(capsys, tmp_path, tiny):
    _, model = tiny
    proto = _variant(tmp_path, 'bottom: "ip1" top: "prob"',
                     'bottom: "ip2" top: "prob" }\nlayer { name: "ip2" type: "InnerProduct" bottom: "ip1" '
                     'top: "ip2" inner_product_param { num_output: 3 }')
    # ip2 is declared after prob consumes it: fix the order so only the weights are missing.
    text = open(proto).read()
    head, rest = text.split('layer { name: "prob"')
    prob, ip2 = rest.split("layer {", 1)
    open(proto, "w").write(head + "layer {" + ip2 + 'layer { name: "prob"' + prob)
    _fails(capsys, tmp_path, ["convert", str(model), "--prototxt", proto],
           "has no weights for layer ip2 (InnerProduct: 2 blobs 3x5, 3)")


def test_declared_shape_too_large_is_refused_before_allocating(capsys, tmp_path):
    huge = tmp_path / "huge.prototxt"
    huge.write_text(TINY.replace("dim: 1 dim: 2 dim: 8 dim: 8", "dim: 100000000 dim: 2 dim: 800 dim: 800"))
    start = time.perf_counter()
    _fails(capsys, tmp_path, ["convert", str(huge)], "refused before allocating",
           "input blob 'data' 100000000x2x800x800", "available to this process")
    assert time.perf_counter() - start < 5


def test_huge_layer_parameters_are_refused_too(capsys, tmp_path):
    wide = tmp_path / "wide.prototxt"
    wide.write_text(TINY.replace("num_output: 5", "num_output: 4000000000"))
    _fails(capsys, tmp_path, ["convert", str(wide)], "the parameters of layer 'ip1' (InnerProduct)",
           "refused before allocating")


def test_missing_files(capsys, tmp_path, tiny):
    proto, model = tiny
    _fails(capsys, tmp_path, ["convert", str(tmp_path / "nope.caffemodel"), "--prototxt", str(proto)],
           "no such file", "nope.caffemodel")
    _fails(capsys, tmp_path, ["convert", str(model), "--prototxt", str(tmp_path / "nope.prototxt")],
           "no such file", "nope.prototxt")
    _fails(capsys, tmp_path, ["info", "not-a-zoo-name"], "no such model file or zoo name",
           f"(the zoo has: {', '.join(zoo.names())})")


def test_output_in_missing_directory_writes_nothing(capsys, tmp_path, tiny):
    proto, model = tiny
    target = tmp_path / "missing" / "out.pt"
    rc = main(["convert", str(model), "--prototxt", str(proto), "-o", str(target)])
    err = capsys.readouterr().err
    assert rc == 1 and err.strip() == f"Error: output directory does not exist: {target.parent}"
    assert not target.parent.exists()


def test_not_a_model_file(capsys, tmp_path):
    import torch

    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    _fails(capsys, tmp_path, ["info", str(other)], "not a compress model file", "format 'compress-model'")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    _fails(capsys, tmp_path, ["info", str(junk)], "junk.pt: a text file, not a model file; expected a model")


def test_caffemodel_without_definition_asks_for_prototxt(capsys, tmp_path, tiny):
    _, model = tiny
    lonely = tmp_path / "lonely.caffemodel"
    lonely.write_bytes(model.read_bytes())
    _fails(capsys, tmp_path, ["info", str(lonely)], "pass --prototxt",
           f"no zoo net ({', '.join(zoo.names())})")


def test_train_val_without_input_shape(capsys, tmp_path):
    from tests.nets import TINY_TRAIN_VAL

    proto = tmp_path / "train_val.prototxt"
    proto.write_text(TINY_TRAIN_VAL)
    _fails(capsys, tmp_path, ["info", str(proto)], "layer 'mnist' (Data)", "4x?x8x8", "'test_lmdb'",
           "deploy prototxt")


# -- issue 12: loader and builder ------------------------------------------------------------------

def _field(number: int, payload: bytes | int) -> bytes:
    """One protobuf field: a varint for an int, else length-delimited bytes."""
    from tools.fuzz.wire import LEN, VARINT, varint

    if isinstance(payload, int):
        return varint(number << 3 | VARINT) + varint(payload)
    return varint(number << 3 | LEN) + varint(len(payload)) + payload


def test_blob_dims_whose_product_wraps_int64(capsys, tmp_path):
    # [2^32, 2^32] with no data: the int64 product is 0 == the data size, so numpy's reshape failed
    # with a plain ValueError naming neither file nor layer. Caffe's Blob::Reshape allows INT_MAX values.
    blob = _field(7, _field(1, 1 << 32) + _field(1, 1 << 32))  # BlobProto.shape (unpacked dims)
    model = tmp_path / "wrap.caffemodel"
    model.write_bytes(_field(100, _field(1, b"ip") + _field(2, b"InnerProduct") + _field(7, blob)))
    _fails(capsys, tmp_path, ["convert", str(model)], f"corrupt caffemodel {model}: layer 'ip' blob 0",
           "shape (4294967296, 4294967296) holds more than 2,147,483,647 values (Caffe's limit for a blob)")


@pytest.mark.parametrize("field, what", [(4, "name"), (2, "bottom[0]"), (3, "top[0]")])
def test_v1_caffemodel_with_a_non_utf8_name_bottom_or_top(capsys, tmp_path, field, what):
    strings = {4: b"relu", 2: b"data", 3: b"out"}
    strings[field] = b"bad\xffname"
    layer = _field(4, strings[4]) + _field(5, 18) + _field(2, strings[2]) + _field(3, strings[3])  # RELU
    model = tmp_path / "v1.caffemodel"
    model.write_bytes(_field(1, b"n") + _field(3, b"data") + _field(2, layer))
    line = _fails(capsys, tmp_path, ["convert", str(model)], f"corrupt caffemodel {model}: layer ",
                  f"the text field {what} is not UTF-8")
    assert "UnicodeDecodeError" not in line


@pytest.mark.parametrize("filler, message", [
    ('type: "nope"', "weight_filler ('nope'): unknown filler type; supported: bilinear, constant"),
    ('type: "gaussian" std: -1', "weight_filler ('gaussian'): std must be positive, found -1.0"),
    ('type: "gaussian" std: nan', "weight_filler ('gaussian'): std must be a finite number, found nan"),
    ('type: "gaussian" std: 1 sparse: 9',
     "weight_filler ('gaussian'): sparse must be -1 or 0..num_outputs (4), found 9"),
    ('type: "uniform" min: 2 max: 1', "weight_filler ('uniform'): min 2.0 is greater than max 1.0"),
    ('type: "uniform" max: inf', "weight_filler ('uniform'): max must be a finite number, found inf"),
    ('type: "xavier" sparse: 3', "weight_filler ('xavier'): sparse is supported by the gaussian filler only"),
])
def test_bad_filler_parameters_name_the_layer(capsys, tmp_path, filler, message):
    path = _variant(tmp_path, "num_output: 4 kernel_size: 3 pad: 1",
                    f"num_output: 4 kernel_size: 3 pad: 1 weight_filler {{ {filler} }}")
    _fails(capsys, tmp_path, ["convert", path], "layer 'conv1' (Convolution): " + message)


def test_bilinear_filler_on_a_1d_blob(capsys, tmp_path):
    path = _variant(tmp_path, "inner_product_param { num_output: 5 }",
                    'inner_product_param { num_output: 5 bias_filler { type: "bilinear" } }')
    _fails(capsys, tmp_path, ["convert", path], "layer 'ip1' (InnerProduct): bias_filler ('bilinear'): "
           "needs a 4-D blob with a square kernel, found shape (5,)")


def test_two_layers_writing_one_top_blob(capsys, tmp_path):
    path = _variant(tmp_path, 'layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }',
                    'layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }\n'
                    'layer { name: "prob2" type: "Sigmoid" bottom: "ip1" top: "prob" }')
    _fails(capsys, tmp_path, ["convert", path], "layer 'prob2' (Sigmoid): top blob 'prob' is already "
           "produced by layer 'prob'")


def test_legacy_input_declared_again_by_an_input_layer(capsys, tmp_path):
    path = tmp_path / "twice.prototxt"
    path.write_text('input: "data" input_shape { dim: 1 dim: 2 dim: 8 dim: 8 }\n' + TINY)
    _fails(capsys, tmp_path, ["convert", str(path)], "layer 'data' (Input) top 'data': blob 'data' is "
           "already declared by the legacy input 'data'")


def test_odd_reshape_says_which_rule_fails(capsys, tmp_path):
    path = _variant(tmp_path, 'layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }',
                    'layer { name: "r" type: "Reshape" bottom: "ip1" top: "r" '
                    'reshape_param { shape { dim: 0 dim: 0 dim: 0 } } }')
    line = _fails(capsys, tmp_path, ["convert", path], "layer 'r' (Reshape): shape [0, 0, 0]",
                  "dim 2 is 0 (copy the bottom's axis 2), but the bottom has 2 axes")
    assert "tuple index out of range" not in line


def test_a_3000_character_name_makes_a_short_line(capsys, tmp_path):
    long = "n" * 3000
    path = _variant(tmp_path, 'name: "prob" type: "Softmax" bottom: "ip1"',
                    f'name: "{long}" type: "Softmax" bottom: "{long}"')
    line = _fails(capsys, tmp_path, ["convert", path], "(3,000 characters) (Softmax): bottom blob")
    assert len(line) < 400


# -- issue 12: model files -------------------------------------------------------------------------

@pytest.fixture
def model_dict():
    from tools.fuzz import seeds

    return seeds.model_dict(build_net_of(TINY), {"source": "test"})


def build_net_of(text: str):
    from converters.caffe.builder import build_net
    from converters.caffe.prototxt import parse_net_text

    return build_net(parse_net_text(text))


def _saved(tmp_path, data) -> str:
    import torch

    path = tmp_path / "m.pt"
    torch.save(data, path)
    return str(path)


@pytest.mark.parametrize("meta, message", [
    ('{"a": ' * 100 + "1" + "}" * 100, "meta is nested 100 deep (at most 32)"),
    ("[" * 100000 + "]" * 100000, "meta is not JSON (nested too deeply)"),
    ('"a string"', "meta should be a JSON object, found a JSON str"),
    ("[1, 2]", "meta should be a JSON object, found a JSON list"),
    ('{"targets": 5}', "meta['targets'] should be an object, found int"),
    ('{"accuracy_after": true}', "meta['accuracy_after'] should be a number, found bool"),
])
def test_model_file_meta_defects(capsys, tmp_path, model_dict, meta, message):
    model_dict["meta"] = meta
    _fails(capsys, tmp_path, ["convert", _saved(tmp_path, model_dict)], "corrupt model file: " + message)


@pytest.mark.parametrize("blob, message", [
    ("sparse", "holds a sparse tensor (torch._utils._rebuild_sparse_tensor)"),
    ("meta", "holds a tensor on the meta device (no data)"),
    ("int", "holds a long tensor (torch.LongStorage)"),
    ("none", "blobs['conv1'][0] should be a tensor, found NoneType"),
    ("list", "blobs['conv1'] should be a list of tensors under a layer name, found str"),
])
def test_model_file_blob_defects(capsys, tmp_path, model_dict, blob, message):
    import torch

    w = model_dict["blobs"]["conv1"][0]
    model_dict["blobs"]["conv1"] = {"sparse": [w.to_sparse()], "meta": [torch.empty(w.shape, device="meta")],
                                    "int": [w.long()], "none": [None], "list": "w"}[blob]
    line = _fails(capsys, tmp_path, ["convert", _saved(tmp_path, model_dict)], message)
    assert "weights_only" not in line


def test_model_file_zip_bomb_is_refused_before_inflating(capsys, tmp_path, model_dict):
    import zipfile

    src = zipfile.ZipFile(_saved(tmp_path, model_dict))
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("/data/0"):  # conv1's weights: 288 bytes -> 64 MB of zeros
                entry = zipfile.ZipInfo(info.filename)
                entry.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(entry, "w", force_zip64=True) as f:
                    for _ in range(64):
                        f.write(bytes(1 << 20))
            else:
                dst.writestr(info, src.read(info))
    entry = next(i for i in zipfile.ZipFile(bomb).infolist() if i.filename.endswith("/data/0"))
    assert bomb.stat().st_size < 1 << 20 and entry.file_size == 64 << 20
    _fails(capsys, tmp_path, ["convert", str(bomb)], "corrupt model file: its tensors expand to 67,",
           "but its net definition declares 1,604 bytes of weights", "refused before unpacking")


@pytest.mark.parametrize("kind, appears", [
    ("README.md", "a text file (Markdown)"),
    ("model.onnx", "an ONNX model (compress writes ONNX but does not read it back"),
    ("picture.png", "a PNG image"),
    ("random.bin", "binary data of no format compress knows"),
    ("state.pt", "a PyTorch file, but not a compress model file"),
    ("raw.pt", "a Python pickle"),
])
def test_a_file_that_is_not_a_model_says_what_it_is(capsys, tmp_path, kind, appears):
    import pickle
    import random

    import torch
    from onnx import TensorProto, helper

    path = tmp_path / kind
    if kind == "README.md":
        path.write_text("# compress\n\nMake Caffe nets smaller.\n")
    elif kind == "model.onnx":
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        path.write_bytes(helper.make_model(graph, producer_name="pytorch").SerializeToString())
    elif kind == "picture.png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(32))
    elif kind == "random.bin":
        path.write_bytes(random.Random(0).randbytes(3000))
    elif kind == "state.pt":
        torch.save({"conv1.weight": torch.zeros(2)}, path)
    else:
        path.write_bytes(pickle.dumps({"weights": [1.0]}))
    line = _fails(capsys, tmp_path, ["info", str(path)], f"{path}: {appears}", "expected a model file (.pt "
                  "written by `compress convert` or `compress prune`), a .caffemodel (with its .prototxt), "
                  "a .prototxt, or a zoo name")
    assert "weights_only" not in line


def test_a_malicious_pickle_is_refused_in_one_line_without_running(capsys, tmp_path):
    from tools.fuzz import payloads, seeds

    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(payloads.wrap(payloads.pickles(str(marker))["os.system"], "zip-in-model-dict",
                                   seeds.lenet_model_file()))
    line = _fails(capsys, tmp_path, ["convert", str(evil)], f"{evil}: refused: its pickle calls os.system, "
                  "which would run code when unpickled")
    assert not marker.exists() and "weights_only" not in line


# -- issue 17: a fuzz campaign's finds -------------------------------------------------------------

@pytest.mark.parametrize("command", ["info", "convert", "export", "verify"])
def test_a_zip64_locator_naming_another_disk_is_a_damaged_archive(capsys, tmp_path, model_dict, command):
    """One flipped byte of a valid model file: zipfile.is_zipfile itself raises BadZipFile."""
    data = bytearray(open(_saved(tmp_path, model_dict), "rb").read())
    locator = data.rfind(b"PK\x06\x07")  # zip64 end of central directory locator: its disk number next
    assert locator > 0
    data[locator + 4] = 1
    path = tmp_path / "disk.pt"
    path.write_bytes(bytes(data))
    argv = {"info": ["info", str(path)], "convert": ["convert", str(path)],
            "export": ["export", str(path), "-o", str(tmp_path / "out.onnx")],
            "verify": ["verify", str(tmp_path / "x.onnx"), "--against", str(path)]}[command]
    _fails(capsys, tmp_path, argv, f"{path}: a damaged zip archive (zipfiles that span multiple disks")
