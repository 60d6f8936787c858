"""Channels-last blobs between layers (converters/caffe/net.py): the CPU fast paths' outputs go as they are
only to layers that compute the same values from them; every other layer, and the caller, gets them
contiguous."""
from __future__ import annotations

import torch

from converters.caffe.layers.base import is_channels_last
from tests.test_export import build

NET = """name: "layout"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 20 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 24 kernel_size: 3 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
layer { name: "power" type: "Sigmoid" bottom: "conv2" top: "power" }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3"
        convolution_param { num_output: 8 kernel_size: 1 } }
"""


def test_channels_last_blobs_reach_only_layout_free_layers_and_the_outputs_are_contiguous():
    net = build(NET)
    seen = {}
    for name in ("pool1", "relu1", "conv2", "power", "conv3"):
        net.layer(name).register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(
            name, is_channels_last(args[0])))
    x = torch.randn(2, 20, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(x)
    # conv1 (20 channels in) and conv2 (24) run channels-last and pass it on; the Sigmoid (not LAYOUT_FREE)
    # gets a contiguous blob; conv3 (32 channels in) takes conv2's channels-last blob to its plain path
    assert seen == {"pool1": True, "relu1": True, "conv2": True, "power": False, "conv3": True}
    assert all(t.is_contiguous() for t in out.values())
    ref = build(NET).double()
    with torch.no_grad():
        want = ref(x.double())
    for k in out:
        assert torch.allclose(out[k].double(), want[k], rtol=1e-5, atol=1e-5), k


def test_a_trace_sees_no_channels_last():
    net = build(NET)
    seen = []
    net.layer("conv2").register_forward_pre_hook(lambda m, args: seen.append(is_channels_last(args[0])))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, torch.randn(2, 20, 8, 8), strict=False, check_trace=False)
    assert seen == [False]
