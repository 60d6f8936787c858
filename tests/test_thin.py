"""Channel thinning: exact removal of zero filters through ReLU/Pooling/LRN/Flatten, bias folding,
grouped-convolution and LRN refusals, netdef updated so the thinned net saves and reloads."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from compress.errors import CompressError
from compress.thin import thin
from converters import caffe
from converters.caffe.prototxt import parse_net_text
from converters.onnx.export import export_onnx
from tests.test_export import ALEXNET, build, run_ort

HEAD = 'name: "t"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }\n'  # noqa: E501


def conv(name, bottom, n, k=3, pad=0, group=1, top=None):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top or name}" '
            f"convolution_param {{ num_output: {n} kernel_size: {k} pad: {pad} group: {group} }} }}\n")


def relu(name, blob):
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


def pool(name, bottom, kind="MAX", k=2, s=2, pad=0):
    return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" '
            f"pooling_param {{ pool: {kind} kernel_size: {k} stride: {s} pad: {pad} }} }}\n")


def ip(name, bottom, n):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" '
            f"inner_product_param {{ num_output: {n} }} }}\n")


def lrn(name, bottom, size=3):
    return (f'layer {{ name: "{name}" type: "LRN" bottom: "{bottom}" top: "{name}" '
            f"lrn_param {{ local_size: {size} alpha: 0.5 beta: 0.75 k: 2 }} }}\n")


def zero_filters(net, layer, filters, bias=0.0):
    with torch.no_grad():
        net.layer(layer).weight[filters] = 0
        net.layer(layer).bias[filters] = bias


def outputs(net, seed=5):
    x = torch.randn((3, *tuple(net.inputs["data"])[1:]), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return net(x)


def assert_same(a, b):
    ya, yb = outputs(a), outputs(b)
    assert ya.shape == yb.shape
    assert float((ya - yb).abs().max() / ya.abs().max()) <= 1e-5


CONV_RELU_POOL_CONV = HEAD + conv("conv1", "data", 8, pad=1) + relu("relu1", "conv1") + \
    pool("pool1", "conv1") + conv("conv2", "pool1", 6) + relu("relu2", "conv2") + ip("ip1", "conv2", 4)


def test_conv_relu_pool_conv(tmp_path):
    net = build(CONV_RELU_POOL_CONV)
    zero_filters(net, "conv1", [1, 4, 6])
    r = thin(net)
    assert r.removed == {"conv1": (8, 5)} and r.inputs == {"conv2": (8, 5)} and r.skipped == {}
    t = r.net
    assert t.layer("conv1").weight.shape == (5, 3, 3, 3) and t.layer("conv2").weight.shape == (6, 5, 3, 3)
    # the kept filters are the original ones, in order
    assert torch.equal(t.layer("conv1").weight, net.layer("conv1").weight[[0, 2, 3, 5, 7]])
    assert net.layer("conv1").weight.shape[0] == 8  # input untouched
    assert_same(net, t)
    assert r.max_rel_err <= 1e-5
    # netdef updated: the thinned net saves, reloads and exports
    assert "num_output: 5" in t.netdef
    caffe.save(t, tmp_path / "t.caffemodel", prototxt=tmp_path / "t.prototxt")
    back = caffe.load(tmp_path / "t.prototxt", tmp_path / "t.caffemodel")
    assert torch.equal(outputs(back), outputs(t))
    e = export_onnx(t, tmp_path / "t.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    with torch.no_grad():
        assert np.abs(run_ort(e.path, x) - net(torch.from_numpy(x)).numpy()).max() < 1e-5


def test_conv_flatten_fc_folds_nonzero_bias():
    text = HEAD + conv("conv1", "data", 6) + relu("relu1", "conv1") + pool("pool1", "conv1", "AVE", 3, 2, 1) \
        + 'layer { name: "flat" type: "Flatten" bottom: "pool1" top: "flat" }\n' + ip("fc", "flat", 5)
    net = build(text)
    zero_filters(net, "conv1", [0, 3], bias=0.7)  # constant 0.7 -> ReLU -> AVE pool with pad: not constant
    r = thin(net)
    assert r.removed == {"conv1": (6, 4)}
    assert r.inputs == {"fc": (6 * 36, 4 * 36)}  # C*H*W layout: 6x6 features per channel
    assert r.folded == {"fc": 2}
    assert not torch.equal(r.net.layer("fc").bias, net.layer("fc").bias)
    assert_same(net, r.net)


def test_fc_columns_follow_chw_layout():
    net = build(HEAD + conv("conv1", "data", 4) + ip("fc", "conv1", 3))
    zero_filters(net, "conv1", [2])
    r = thin(net)
    hw = 10 * 10
    expect = torch.cat([net.layer("fc").weight[:, c * hw:(c + 1) * hw] for c in (0, 1, 3)], dim=1)
    assert torch.equal(r.net.layer("fc").weight, expect)


@pytest.mark.parametrize("bias,pad,removed", [(0.5, 0, True), (0.5, 1, False), (-0.5, 1, True)],
                         ids=["constant-folds", "padding-refused", "relu-of-negative-is-zero"])
def test_nonzero_bias_zero_filter_into_conv(bias, pad, removed):
    net = build(HEAD + conv("conv1", "data", 6) + relu("relu1", "conv1") + conv("conv2", "conv1", 4, pad=pad)
                + ip("ip", "conv2", 2))
    zero_filters(net, "conv1", [2], bias=bias)
    r = thin(net)
    if removed:
        assert r.removed == {"conv1": (6, 5)}
        assert_same(net, r.net)
    else:  # a constant map through a zero-padded conv differs at the borders: no bias reproduces it
        assert r.removed == {}
        assert "conv1" in r.skipped and "padding" in r.skipped["conv1"]
        with pytest.raises(CompressError, match="conv1"):
            thin(net, strict=True)


def test_unused_input_channels_remove_nonzero_filters():
    net = build(CONV_RELU_POOL_CONV)
    with torch.no_grad():
        net.layer("conv2").weight[:, [3, 5]] = 0  # conv2 ignores channels 3 and 5
    r = thin(net)
    assert r.removed == {"conv1": (8, 6)} and r.inputs == {"conv2": (8, 6)}
    assert_same(net, r.net)


def test_grouped_conv_refused_when_groups_unbalanced():
    text = HEAD + conv("conv1", "data", 8) + relu("relu1", "conv1") + conv("conv2", "conv1", 4, group=2) \
        + ip("ip", "conv2", 2)
    net = build(text)
    zero_filters(net, "conv1", [0, 1])  # both in conv2's first input group
    r = thin(net)
    assert r.removed == {}
    assert "conv2" in r.skipped["conv1"] and "group" in r.skipped["conv1"]
    with pytest.raises(CompressError, match="conv2"):
        thin(net, strict=True)
    zero_filters(net, "conv1", [0, 1, 5, 6])  # two per group
    r = thin(net)
    assert r.removed == {"conv1": (8, 4)}
    assert r.net.layer("conv2").weight.shape == (4, 2, 3, 3)
    assert_same(net, r.net)


def test_grouped_conv_takes_the_balanced_subset():
    text = HEAD + conv("conv1", "data", 8) + relu("relu1", "conv1") + conv("conv2", "conv1", 4, group=2) \
        + ip("ip", "conv2", 2)
    net = build(text)
    zero_filters(net, "conv1", [0, 1, 5])  # two in the first group, one in the second: one from each goes
    r = thin(net)
    assert r.removed == {"conv1": (8, 6)}
    assert torch.equal(r.net.layer("conv1").weight, net.layer("conv1").weight[[1, 2, 3, 4, 6, 7]])
    assert "conv2" in r.skipped["conv1"]  # the one kept removable filter is explained
    assert_same(net, r.net)


def test_grouped_producer_needs_equal_groups():
    text = HEAD + conv("conv1", "data", 8) + relu("relu1", "conv1") + conv("conv2", "conv1", 8, group=2) \
        + relu("relu2", "conv2") + conv("conv3", "conv2", 4) + ip("ip", "conv3", 2)
    net = build(text)
    zero_filters(net, "conv2", [1])
    assert "group" in thin(net).skipped["conv2"]
    zero_filters(net, "conv2", [1, 6])
    r = thin(net)
    assert r.removed == {"conv2": (8, 6)} and r.net.layer("conv2").weight.shape == (6, 4, 3, 3)
    assert_same(net, r.net)


@pytest.mark.parametrize("filters,bias,ok", [([0, 7], 0.0, True), ([3], 0.0, False), ([7], 0.4, False)],
                         ids=["zero-ends", "zero-middle", "nonzero-bias"])
def test_across_channel_lrn(filters, bias, ok):
    net = build(HEAD + conv("conv1", "data", 8) + relu("relu1", "conv1") + lrn("norm1", "conv1")
                + conv("conv2", "norm1", 4) + ip("ip", "conv2", 2))
    zero_filters(net, "conv1", filters, bias=bias)
    r = thin(net)
    if ok:
        assert r.removed == {"conv1": (8, 6)}
        assert_same(net, r.net)
    else:
        assert r.removed == {} and "norm1" in r.skipped["conv1"]


def test_concat_thins_at_its_offsets_and_outputs_stop_thinning():
    cat = 'layer { name: "cat" type: "Concat" bottom: "conv1" bottom: "conv2" top: "cat" }\n'
    text = HEAD + conv("conv1", "data", 4) + conv("conv2", "data", 4) + cat + ip("ip", "cat", 2)
    net = build(text)
    zero_filters(net, "conv1", [1])
    r = thin(net)  # the zero filter (zero bias) adds nothing to ip: its block of columns goes with it
    assert r.removed == {"conv1": (4, 3)} and r.inputs == {"ip": (8 * 100, 7 * 100)} and r.skipped == {}
    assert torch.equal(r.net.layer("ip").weight, torch.cat([net.layer("ip").weight[:, :100],
                                                            net.layer("ip").weight[:, 200:]], dim=1))
    assert_same(net, r.net)
    net = build(HEAD + conv("conv1", "data", 4))
    zero_filters(net, "conv1", [1])
    assert "net output" in thin(net).skipped["conv1"]


def test_unpruned_net_unchanged():
    net = build(CONV_RELU_POOL_CONV)
    r = thin(net)
    assert r.removed == {} and r.skipped == {} and r.net.netdef == net.netdef


def test_alexnet_like_thins_through_lrn_and_groups():
    net = build(ALEXNET)
    # LRN neighbours force contiguous kept blocks; group 2 consumers force equal halves
    zero_filters(net, "conv1", [0, 1, 2, 3, 12, 13, 14, 15])
    zero_filters(net, "conv2", [0, 1, 2, 21, 22, 23])
    zero_filters(net, "conv3", [0, 5, 16, 30])
    zero_filters(net, "conv4", [2, 9, 17, 30])
    r = thin(net)
    assert r.removed == {"conv1": (16, 8), "conv2": (24, 18), "conv3": (32, 28), "conv4": (32, 28)}
    assert r.skipped == {}
    assert_same(net, r.net)
    reloaded = caffe.load(parse_net_text(r.net.netdef))
    assert [tuple(p.shape) for p in reloaded.parameters()] == [tuple(p.shape) for p in r.net.parameters()]


def test_align_keeps_zero_channels_back_to_a_multiple():
    net = build(HEAD + conv("conv1", "data", 40) + relu("relu1", "conv1") + conv("conv2", "conv1", 6)
                + ip("ip", "conv2", 2))
    zero_filters(net, "conv1", list(range(3, 40, 3)))  # 13 zero filters: 27 left
    assert thin(net).removed == {"conv1": (40, 27)}
    r = thin(net, align=8)
    assert r.removed == {"conv1": (40, 32)} and r.inputs == {"conv2": (40, 32)}
    assert r.skipped == {"conv1": "kept 5 zero channels so that its width is 32, a multiple of 8 "
                                  "(onnxruntime's blocked kernels)"}
    assert_same(net, r.net)
    assert "num_output: 32" in r.net.netdef
    r = thin(net, align=32)
    assert r.removed == {"conv1": (40, 32)}
    r = thin(net, align=16)
    assert r.removed == {"conv1": (40, 32)}
    net = build(HEAD + conv("conv1", "data", 40) + relu("relu1", "conv1") + conv("conv2", "conv1", 6)
                + ip("ip", "conv2", 2))
    zero_filters(net, "conv1", [0, 1, 2, 3])  # 36 left: 48 > 40, but 40 is a multiple of 8
    r = thin(net, align=16)
    assert r.removed == {} and r.skipped == {"conv1": "kept 4 zero channels so that its width is 40, a "
                                                      "multiple of 8 (onnxruntime's blocked kernels)"}
    net = build(HEAD + conv("conv1", "data", 6) + relu("relu1", "conv1") + conv("conv2", "conv1", 6)
                + ip("ip", "conv2", 2))
    zero_filters(net, "conv1", [1, 4])
    r = thin(net, align=16)  # no multiple of 16 or 8 fits in 6: the exact cut
    assert r.removed == {"conv1": (6, 4)} and r.skipped == {}


def test_align_keeps_groups_equal_and_lrn_ends_removed():
    net = build(ALEXNET)
    zero_filters(net, "conv1", [0, 1, 2, 3, 12, 13, 14, 15])
    zero_filters(net, "conv2", [0, 1, 2, 21, 22, 23])
    r = thin(net, align=4)
    # conv2 (group-2 consumers, LRN after it) keeps back one channel per half, each next to the kept block
    assert r.removed == {"conv1": (16, 8), "conv2": (24, 20)}
    assert torch.equal(r.net.layer("conv2").bias, net.layer("conv2").bias[2:22])
    assert_same(net, r.net)


def test_the_check_compares_in_float64_and_catches_a_changed_weight():
    from compress.structure.check import max_rel_err

    net = build(CONV_RELU_POOL_CONV)
    other = copy.deepcopy(net)
    assert max_rel_err(net, other) == 0.0
    with torch.no_grad():  # float32 parameters: the check runs copies in float64, the nets stay float32
        other.layer("conv2").weight[0, 0, 0, 0] += 1e-3
    assert max_rel_err(net, other) > 1e-6
    assert next(net.parameters()).dtype == torch.float32 and next(other.parameters()).dtype == torch.float32


def test_align_leaves_fully_connected_widths_exact():
    net = build(HEAD + conv("conv1", "data", 4) + ip("ip1", "conv1", 40) + ip("ip2", "ip1", 3))
    with torch.no_grad():
        net.layer("ip1").weight[[1, 5, 9]] = 0
        net.layer("ip1").bias[[1, 5, 9]] = 0
    r = thin(net, align=16)
    assert r.removed == {"ip1": (40, 37)} and r.skipped == {}
    assert_same(net, r.net)
