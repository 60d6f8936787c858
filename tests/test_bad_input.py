"""Bad input: one clear line on stderr, exit status 1, nothing written, never a traceback."""
from __future__ import annotations

import time

import pytest

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
    _fails(capsys, tmp_path, ["info", "not-a-zoo-name"], "no such model file or zoo name", "lenet, alexnet")


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
    _fails(capsys, tmp_path, ["info", str(lonely)], "pass --prototxt", "no zoo net (lenet, alexnet)")


def test_train_val_without_input_shape(capsys, tmp_path):
    from tests.nets import TINY_TRAIN_VAL

    proto = tmp_path / "train_val.prototxt"
    proto.write_text(TINY_TRAIN_VAL)
    _fails(capsys, tmp_path, ["info", str(proto)], "layer 'mnist' (Data)", "4x?x8x8", "'test_lmdb'",
           "deploy prototxt")
