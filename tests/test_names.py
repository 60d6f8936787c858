"""Layer names -> module attributes, one to one (issue 12, item 1), and long names cut in messages."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.cli import main
from compress.modelfile import load_model, read_model_file, save_model
from converters.caffe.builder import build_net
from converters.caffe.prototxt import parse_net_text
from converters.errors import ConversionError

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 } } }\n'


def _ip(name: str, bottom: str, top: str, n: int = 4) -> str:
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top}" '
            f'inner_product_param {{ num_output: {n} }} }}\n')


def test_dotted_and_underscored_names_get_their_own_modules():
    # a.b (ReLU) then a_b (Sigmoid): before, a_b's module replaced a.b's and the net computed
    # sigmoid(sigmoid(x)) instead of sigmoid(relu(x)), wrong by up to 0.24, silently.
    net = build_net(parse_net_text(INPUT + 'layer { name: "a.b" type: "ReLU" bottom: "data" top: "r" }\n'
                                           'layer { name: "a_b" type: "Sigmoid" bottom: "r" top: "s" }\n'))
    x = torch.tensor([[-2.0, -0.5, 0.5, 2.0]])
    expected = 1 / (1 + np.exp(-np.maximum(x.numpy(), 0)))
    np.testing.assert_allclose(net(x).numpy(), expected, rtol=1e-6)
    assert isinstance(net.layer("a.b"), torch.nn.ReLU) and isinstance(net.layer("a_b"), torch.nn.Sigmoid)
    assert [n.attr for n in net.nodes] == ["layer_a_b", "a_b"]  # the plain name keeps itself


def test_c1_pair_keeps_two_weight_sets_through_a_model_file(tmp_path):
    net = build_net(parse_net_text(INPUT + _ip("c.1", "data", "h") + _ip("c_1", "h", "y", 3)))
    assert net.layer("c.1").weight.shape == (4, 4) and net.layer("c_1").weight.shape == (3, 4)
    path = tmp_path / "m.pt"
    save_model(path, net, {})
    again = read_model_file(path)
    x = torch.randn(1, 4)
    assert torch.equal(again.net(x), net(x))
    assert torch.equal(again.net.layer("c.1").weight, net.layer("c.1").weight)


def test_convert_of_c1_pair_writes_a_model_that_reloads(capsys, tmp_path):
    # Before: `compress convert` wrote the output, then died with a state_dict traceback.
    proto = tmp_path / "net.prototxt"
    proto.write_text(INPUT + _ip("c.1", "data", "h") + _ip("c_1", "h", "y", 3))
    out = tmp_path / "out.pt"
    assert main(["convert", str(proto), "-o", str(out)]) == 0, capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().err
    assert main(["info", str(out)]) == 0
    assert "c.1" in capsys.readouterr().out


RESERVED = ["forward", "nodes", "inputs", "outputs", "training", "eval", "name", "layer", "netdef",
            "_modules", "blob_shapes", "build_report", "_attrs", "state_dict", "T_destination"]


@pytest.mark.parametrize("name", RESERVED)
def test_names_equal_to_net_attributes_load_run_and_round_trip(tmp_path, name):
    # Before: KeyError "attribute 'forward' already exists" (a traceback).
    net = build_net(parse_net_text(INPUT + _ip(name, "data", "y", 2)))
    assert isinstance(net.layer(name), torch.nn.Linear)
    assert callable(net.forward) and isinstance(net.nodes, list) and net.training is False
    assert net(torch.ones(1, 4)).shape == (1, 2)
    save_model(tmp_path / "m.pt", net, {})
    assert torch.equal(load_model(str(tmp_path / "m.pt")).net.layer(name).weight, net.layer(name).weight)


def test_ordinary_names_stay_caffe_names_in_named_modules():
    text = INPUT + _ip("conv1", "data", "a") + _ip("inception_3a/1x1", "a", "b") + _ip("ü名", "b", "c")
    net = build_net(parse_net_text(text))
    assert [name for name, _ in net.named_children()] == ["conv1", "inception_3a/1x1", "ü名"]
    assert [n.attr for n in net.nodes] == [n.name for n in net.nodes]


def test_module_attrs_is_one_to_one_whatever_the_names():
    from converters.caffe.names import module_attrs

    names = ["c.1", "c_1", "layer_c_1", "layer_c_1_2", "forward", "layer_forward", "a.b.c", "a_b.c", "x"]
    attrs = module_attrs(names, reserved={"forward", "nodes"})
    assert len(set(attrs.values())) == len(names)
    assert all("." not in a and a not in {"forward", "nodes"} for a in attrs.values())
    for plain in ("c_1", "layer_c_1", "layer_c_1_2", "layer_forward", "x"):
        assert attrs[plain] == plain
    assert attrs["c.1"] == "layer_c_1_3" and attrs["forward"] == "layer_forward_2"


def test_unknown_layer_name_is_a_key_error_naming_it():
    net = build_net(parse_net_text(INPUT + _ip("ip", "data", "y")))
    with pytest.raises(KeyError, match="no layer named 'nope'"):
        net.layer("nope")


def test_long_names_are_cut_in_messages():
    # Before: a 3,000-character name made a 5,130-character error line.
    long = "n" * 3000
    with pytest.raises(ConversionError) as e:
        build_net(parse_net_text(INPUT + f'layer {{ name: "{long}" type: "ReLU" bottom: "{long}" top: "y" '
                                         '}'))
    message = str(e.value)
    assert len(message) < 300 and "(3,000 characters)" in message and "is not produced" in message


def test_a_layer_type_holding_a_newline_stays_on_one_line():
    from converters.caffe.layers.base import check_supported
    from converters.errors import UnsupportedLayerError

    with pytest.raises(UnsupportedLayerError) as e:
        check_supported([("ip2", "new\nline"), ("tab\tname", "Convolution")])
    message = str(e.value)
    assert "\n" not in message and "unsupported layer type 'new\\nline' in: ip2 ('new\\nline')" in message
