"""The channel dependency graph: which slices of which layers go together (issue 19, item 1)."""
from __future__ import annotations

import pytest

from compress.structure.graph import channel_graph
from compress.structure.rules import followed_types
from tests.nets import (
    BN_AFTER_RELU,
    CONCAT,
    DEPTHWISE,
    PRELU_TWO_HEADS,
    RESIDUAL,
    RESIDUAL_PROJ,
    _conv,
    _head,
    _input,
    _relu,
    random_net,
)
from tests.test_export import ALEXNET, build


def spaces(text):
    return {tuple(s.layers("out")) or tuple(f"input:{b}" for b in s.inputs): s
            for s in channel_graph(random_net(text)).spaces if s.members}


def roles(space):
    return {(m.layer, m.role) for m in space.members}


def test_residual_sum_joins_the_shortcut_and_the_branch():
    s = spaces(RESIDUAL)
    stage = s[("conv1", "conv2b")]
    assert stage.size == 8 and not stage.plain and not stage.blocked
    assert roles(stage) == {("conv1", "out"), ("conv1/bn", "norm"), ("conv1/scale", "scale"),
                            ("conv2b", "out"), ("conv2b/bn", "norm"), ("conv2b/scale", "scale"),
                            ("conv2a", "in"), ("conv3", "in")}
    assert {m.layer: m.after for m in stage.role("norm", "scale")} == {
        "conv1/bn": "conv1", "conv1/scale": "conv1", "conv2b/bn": "conv2b", "conv2b/scale": "conv2b"}
    assert roles(s[("conv2a",)]) >= {("conv2a", "out"), ("conv2b", "in")}
    assert s[("fc",)].blocked == ("its channels flow into prob (Softmax)",)


def test_projection_shortcut_shares_the_sum_and_reads_the_block_input():
    s = spaces(RESIDUAL_PROJ)
    assert {m.layer for m in s[("proj", "conv2b")].role("out")} == {"proj", "conv2b"}
    assert {m.layer for m in s[("conv1",)].role("in")} == {"proj", "conv2a"}
    assert s[("proj", "conv2b")].role("in")[0].layer == "fc"


def test_concat_maps_offsets_and_flatten_gives_column_blocks():
    s = spaces(CONCAT)
    a, b = s[("conv1",)], s[("conv2",)]
    conv3 = {m.layer: m for m in a.role("in")}["conv3"]
    assert conv3.index == tuple(range(6)) and conv3.total == 10
    assert {m.layer: m for m in b.role("in")}["conv3"].index == (6, 7, 8, 9)
    fc1 = {m.layer: m for m in b.role("in")}["fc1"]
    assert (fc1.index, fc1.block, fc1.total) == ((6, 7, 8, 9), 64, 10)  # 8x8 positions per channel
    assert s[("input:data",)].inputs == ("data",)  # read by conv1 and conv2: not plain
    assert not s[("input:data",)].plain
    assert s[("fc1",)].blocked == ("net output fc1",)


def test_depthwise_passes_one_channel_through_between_pointwise_filters():
    s = spaces(DEPTHWISE)
    chain = s[("conv1",)]
    assert roles(chain) == {("conv1", "out"), ("conv1/bn", "norm"), ("conv1/scale", "scale"), ("dw", "dw"),
                            ("dw/bn", "norm"), ("dw/scale", "scale"), ("pw", "in")}
    assert {m.layer: m.after for m in chain.role("norm")} == {"conv1/bn": "conv1", "dw/bn": "dw"}


def test_batchnorm_after_relu_has_no_filter_to_follow():
    s = spaces(BN_AFTER_RELU)
    assert [m.after for m in s[("conv1",)].role("norm", "scale")] == [None, None]
    fc = s[("conv2",)].role("in")[0]
    assert (fc.layer, fc.block) == ("fc", 36)  # conv2 6x6 output, flattened


def test_prelu_slopes_are_per_channel_and_split_heads_share_the_set():
    s = spaces(PRELU_TWO_HEADS)
    assert roles(s[("conv2",)]) == {("conv2", "out"), ("prelu2", "prelu"), ("head1", "in"), ("head2", "in")}
    before = 'type: "PReLU" bottom: "conv2" top: "conv2"'
    shared = PRELU_TWO_HEADS.replace(before, before + " prelu_param { channel_shared: true }")
    assert ("prelu2", "prelu") not in roles(spaces(shared)[("conv2",)])
    assert s[("head2",)].blocked == ("net output head2",)


def test_untraceable_layers_block_their_channels_naming_the_type():
    text = (_input() + _conv("conv1", "data", 4) + _relu("relu1", "conv1")
            + 'layer { name: "r" type: "Reshape" bottom: "conv1" top: "r" '
              'reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 8 } } }\n'
            + _conv("conv2", "r", 4) + _head(bottom="conv2"))
    s = spaces(text)
    assert s[("conv1",)].blocked == ("its channels flow into r (Reshape)",)
    assert s[()].blocked == ("its channels come from r (Reshape)",)  # conv2 reads what r made


def test_plain_chains_are_plain():
    for space in channel_graph(build(ALEXNET)).spaces:
        if space.role("in"):
            assert space.plain, space.describe()


def test_every_followed_type_has_a_converter():
    from converters.caffe.layers.base import supported_types

    extra = {"AbsVal", "Power", "ELU", "BNLL"}  # followed for nets that will have them; no converter yet
    assert set(followed_types()) - extra <= set(supported_types())


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v1_0.5"])
def test_zoo_nets(name):
    from pathlib import Path

    from converters import caffe

    net = caffe.load(Path(__file__).resolve().parents[1] / "zoo" / f"{name}.prototxt")
    g = channel_graph(net)
    coupled = [s for s in g.spaces if s.members and not s.plain and not s.blocked and not s.inputs]
    if name == "resnet20":  # three stages; stages 2 and 3 start with a projection (option B)
        stages = [s for s in coupled if len(s.role("out")) > 1]
        assert [s.size for s in stages] == [16, 32, 64]
        assert [len(s.role("out")) for s in stages] == [4, 4, 4]  # conv1 or proj, and three blocks
    else:  # every depthwise layer sits inside one set with the pointwise layers around it
        dws = [m.layer for s in coupled for m in s.role("dw")]
        assert len(dws) == 13 and len(set(dws)) == 13
