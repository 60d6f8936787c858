"""Layer converters against small numpy transcriptions of Caffe's CPU code (hand-checkable cases).

Each reference below follows the loops of the corresponding ``caffe/src/caffe/layers/*.cpp`` file,
so a mismatch points at a semantic difference, not at a shared library.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from converters.caffe.layers.base import builder_for, supported_types
from converters.caffe.proto import caffe_pb2
from converters.errors import ConversionError

FLT_MAX = np.finfo(np.float32).max


def layer(text: str):
    msg = caffe_pb2.LayerParameter()
    text_format.Parse(text, msg)
    if not msg.name:
        msg.name = "l"
    return msg


def build(text: str, *shapes: tuple[int, ...]):
    lp = layer(text)
    return builder_for(lp.type)(lp, [torch.empty(s, device="meta") for s in shapes])


def with_blobs(module, *blobs: np.ndarray):
    module.set_caffe_blobs([torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)) for b in blobs])
    return module


def run(module, *xs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module.eval()(*(torch.from_numpy(np.asarray(x, dtype=np.float32)) for x in xs)).numpy()


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- references (Caffe CPU loops)

def caffe_pool_size(size: int, k: int, s: int, p: int) -> int:
    out = int(math.ceil((size + 2 * p - k) / s)) + 1
    if p and (out - 1) * s >= size + p:
        out -= 1
    return out


def ref_pool(x: np.ndarray, method: str, k: int, s: int, p: int) -> np.ndarray:
    n, c, h, w = x.shape
    oh, ow = caffe_pool_size(h, k, s, p), caffe_pool_size(w, k, s, p)
    out = np.zeros((n, c, oh, ow), np.float32)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            if method == "MAX":
                he, we = min(hs + k, h), min(ws + k, w)
                hs, ws = max(hs, 0), max(ws, 0)
                win = x[:, :, hs:he, ws:we]
                out[:, :, i, j] = win.max(axis=(2, 3)) if win.size else -FLT_MAX
            else:
                he, we = min(hs + k, h + p), min(ws + k, w + p)
                size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                out[:, :, i, j] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / size
    return out


def ref_lrn_across(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    c, pre = x.shape[1], (size - 1) // 2
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (pre, size - pre - 1), (0, 0), (0, 0)))
    scale = k + alpha / size * np.stack([sq[:, i:i + size].sum(axis=1) for i in range(c)], axis=1)
    return (x * scale ** -beta).astype(np.float32)


def ref_lrn_within(x: np.ndarray, size: int, alpha: float, beta: float) -> np.ndarray:
    h, w, pre = x.shape[2], x.shape[3], (size - 1) // 2
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (0, 0), (pre, pre), (pre, pre)))
    pooled = np.zeros_like(x, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            pooled[:, :, i, j] = sq[:, :, i:i + size, j:j + size].sum(axis=(2, 3)) / size**2
    return (x * (1 + alpha * pooled) ** -beta).astype(np.float32)


def ref_conv(x, w, b, stride, pad, dilation, group):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    og = o // group
    for f in range(o):
        g = f // og
        for i in range(oh):
            for j in range(ow):
                ys = i * stride[0] + dilation[0] * np.arange(kh)
                xs = j * stride[1] + dilation[1] * np.arange(kw)
                patch = xp[:, g * cg:(g + 1) * cg][:, :, ys][:, :, :, xs]
                out[:, f, i, j] = (patch * w[f]).sum(axis=(1, 2, 3)) + b[f]
    return out.astype(np.float32)


def close(a: np.ndarray, b: np.ndarray, rel: float = 1e-6) -> bool:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max()) <= rel * max(float(np.abs(b).max()), 1e-30)


# ---------------------------------------------------------------- pooling


@pytest.mark.parametrize("size,k,s,p,expected", [
    (5, 1, 3, 0, 3),    # p = 0, stride > kernel: Caffe keeps a last window past the end (PyTorch: 2)
    (6, 2, 3, 0, 3),    # ... even one of size 0
    (7, 3, 2, 2, 5),    # p > k/2 (PyTorch refuses it): ceil(8/2)+1 = 5, last start 6 < 7+2
    (6, 3, 2, 1, 4),    # decrement case would need (out-1)*s >= H+p: ceil(5/2)+1 = 4, 6 < 7, kept
    (4, 2, 3, 1, 2),    # ceil(4/3)+1 = 3, (3-1)*3 = 6 >= H+p = 5: decremented to 2
    (55, 3, 2, 0, 27),  # AlexNet pool1
    (13, 3, 2, 0, 6),   # AlexNet pool5
])
def test_pooling_output_size(size, k, s, p, expected):
    assert caffe_pool_size(size, k, s, p) == expected
    for method in ("MAX", "AVE"):
        m = build(f"type: 'Pooling' pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }}",
                  (1, 1, size, size))
        assert tuple(m(torch.empty(1, 1, size, size, device="meta")).shape) == (1, 1, expected, expected)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("h,w,k,s,p", [
    (5, 5, 1, 3, 0), (7, 6, 3, 2, 2), (6, 6, 3, 2, 1), (4, 4, 2, 3, 1), (9, 8, 3, 2, 0), (8, 8, 5, 2, 4),
    (6, 5, 2, 2, 0), (5, 5, 3, 1, 1),
])
def test_pooling_matches_caffe_loops(method, h, w, k, s, p):
    x = rand(2, 3, h, w)
    m = build(f"type: 'Pooling' pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }}",
              x.shape)
    assert close(run(m, x), ref_pool(x, method, k, s, p))


def test_pooling_ave_divisor_counts_padding_not_past_it():
    # 3x3 ones, kernel 2, stride 2, pad 1: output 2x2. Caffe's divisor is the window clipped to
    # [-1, 4): top-left window covers rows -1..0 -> size 2*2 = 4 with 1 real cell -> 0.25; the last
    # window covers rows 1..2, whole -> 1.
    m = build("type: 'Pooling' pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 }", (1, 1, 3, 3))
    out = run(m, np.ones((1, 1, 3, 3)))
    np.testing.assert_array_equal(out[0, 0], [[0.25, 0.5], [0.5, 1.0]])


def test_pooling_empty_last_window_is_caffes_value():
    # H = 6, k = 2, s = 3, p = 0: windows at 0, 3, 6; the last one is empty. Caffe's MAX leaves its
    # initial -FLT_MAX there; AVE divides 0 by a window size of 0.
    x = np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6)
    mx = run(build("type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 3 }", x.shape), x)
    np.testing.assert_array_equal(mx[0, 0, :2, :2], [[7, 10], [25, 28]])
    assert (mx[0, 0, 2, :] == -FLT_MAX).all() and (mx[0, 0, :, 2] == -FLT_MAX).all()
    ave = run(build("type: 'Pooling' pooling_param { pool: AVE kernel_size: 2 stride: 3 }", x.shape), x)
    np.testing.assert_array_equal(ave[0, 0, :2, :2], [[3.5, 6.5], [21.5, 24.5]])
    assert np.isnan(ave[0, 0, 2, :]).all()


def test_global_pooling_and_rectangular_fields():
    x = rand(2, 3, 5, 7)
    g = build("type: 'Pooling' pooling_param { pool: AVE global_pooling: true }", x.shape)
    np.testing.assert_allclose(run(g, x), x.mean(axis=(2, 3), keepdims=True), rtol=1e-6, atol=1e-7)
    g = build("type: 'Pooling' pooling_param { pool: MAX global_pooling: true }", x.shape)
    np.testing.assert_array_equal(run(g, x), x.max(axis=(2, 3), keepdims=True))
    m = build("type: 'Pooling' pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 "
              "pad_h: 1 pad_w: 0 }", x.shape)
    assert tuple(m(torch.empty(x.shape, device="meta")).shape) == (2, 3, 3, 6)


@pytest.mark.parametrize("text,needle", [
    ("pool: STOCHASTIC kernel_size: 2", "STOCHASTIC"),
    ("kernel_size: 2 pad: 2", "smaller than the kernel"),
    ("global_pooling: true stride: 2", "global_pooling"),
    ("stride: 2", "kernel size must be set"),
    ("kernel_h: 2", "kernel_h and kernel_w"),
])
def test_pooling_errors(text, needle):
    with pytest.raises(ConversionError, match=needle) as e:
        build(f"name: 'pool9' type: 'Pooling' pooling_param {{ {text} }}", (1, 1, 8, 8))
    assert "'pool9' (Pooling)" in str(e.value)


# ---------------------------------------------------------------- LRN


def test_lrn_across_channels_with_k():
    x = rand(2, 7, 3, 4)
    m = build("type: 'LRN' lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 k: 2 }", x.shape)
    assert (m.size, m.region, m.k) == (5, "ACROSS_CHANNELS", 2.0)
    assert close(run(m, x), ref_lrn_across(x, 5, 0.3, 0.75, 2.0))


def test_lrn_across_hand_value():
    # One channel of 2s among zeros, size 3: scale = k + alpha/3 * 4 = 1 + 1 = 2 -> y = 2 * 2^-1 = 1.
    x = np.zeros((1, 3, 1, 1), np.float32)
    x[0, 1] = 2
    m = build("type: 'LRN' lrn_param { local_size: 3 alpha: 0.75 beta: 1 }", x.shape)
    np.testing.assert_allclose(run(m, x)[0, :, 0, 0], [0, 1, 0], atol=1e-7)


def test_lrn_within_channel_ignores_k():
    x = rand(2, 3, 6, 5)
    m = build("type: 'LRN' lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 2 beta: 0.6 k: 5 }",
              x.shape)
    assert close(run(m, x), ref_lrn_within(x, 3, 2.0, 0.6))
    # hand value: a single 3 in a 1x1 map, size 3: pooled = 9 / 9 = 1, y = 3 * (1 + 2)^-1 = 1
    one = np.full((1, 1, 1, 1), 3, np.float32)
    m = build("type: 'LRN' lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 2 beta: 1 k: 7 }",
              one.shape)
    np.testing.assert_allclose(run(m, one), [[[[1.0]]]], rtol=1e-6)


def test_lrn_even_size_rejected():
    with pytest.raises(ConversionError, match="odd"):
        build("type: 'LRN' lrn_param { local_size: 4 }", (1, 8, 2, 2))


# ---------------------------------------------------------------- convolution


def test_convolution_group_dilation_rect():
    x = rand(2, 4, 9, 8)
    m = build("type: 'Convolution' convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride: 2 "
              "stride: 1 pad_h: 2 pad_w: 1 dilation: 2 group: 2 }", x.shape)
    assert m.caffe_blob_shapes() == [(6, 2, 3, 2), (6,)]
    w, b = rand(6, 2, 3, 2, seed=1), rand(6, seed=2)
    with_blobs(m, w, b)
    assert close(run(m, x), ref_conv(x, w, b, (2, 1), (2, 1), (2, 2), 2), 1e-5)


def test_convolution_without_bias_and_errors():
    m = build("type: 'Convolution' convolution_param { num_output: 4 kernel_size: 3 bias_term: false }",
              (1, 2, 5, 5))
    assert m.bias is None and m.caffe_blob_shapes() == [(4, 2, 3, 3)]
    with pytest.raises(ConversionError, match="group 3 must divide"):
        build("type: 'Convolution' convolution_param { num_output: 4 kernel_size: 3 group: 3 }", (1, 3, 5, 5))
    with pytest.raises(ConversionError, match="num_output"):
        build("type: 'Convolution' convolution_param { kernel_size: 3 }", (1, 3, 5, 5))
    with pytest.raises(ConversionError, match="2-D only"):
        build("type: 'Convolution' convolution_param { num_output: 1 kernel_size: [1, 2, 3] }", (1, 3, 5, 5))


def test_convolution_of_20_channels_runs_channels_last_and_traces_plain():
    """LeNet's conv2 has 20 input channels: on the CPU it runs on channels-last copies (conv.py). The
    output is Caffe's loops' within float32 rounding, and stays channels-last (the net makes it contiguous
    where needed); the gradients are float64's within it; a trace (what ONNX export sees) holds the plain
    convolution only."""
    from converters.caffe.layers.conv import _channels_last

    x, w, b, gy = rand(2, 20, 6, 6), rand(3, 20, 3, 3, seed=1), rand(3, seed=2), rand(2, 3, 6, 6, seed=3)
    m = with_blobs(build("type: 'Convolution' convolution_param { num_output: 3 kernel_size: 3 pad: 1 }",
                         x.shape), w, b)
    assert _channels_last(torch.from_numpy(x), 1) and not _channels_last(torch.from_numpy(x[:, :16]), 1)
    assert close(run(m, x), ref_conv(x, w, b, (1, 1), (1, 1), (1, 1), 1), 1e-5)
    xt = torch.from_numpy(x).requires_grad_()
    y = m(xt)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    y.backward(torch.from_numpy(gy))
    x64 = torch.from_numpy(x).double().requires_grad_()
    w64, b64 = (torch.from_numpy(v).double().requires_grad_() for v in (w, b))
    torch.nn.functional.conv2d(x64, w64, b64, padding=1).backward(torch.from_numpy(gy).double())
    for got, want in ((xt.grad, x64.grad), (m.weight.grad, w64.grad), (m.bias.grad, b64.grad)):
        assert close(got.numpy(), want.float().numpy(), 1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace: ONNX export still traces
        kinds = {n.kind() for n in torch.jit.trace(m, xt.detach()).graph.nodes()}
    assert "aten::_convolution" in kinds and "aten::contiguous" not in kinds, kinds


def test_deconvolution_blob_layout_and_size():
    m = build("type: 'Deconvolution' convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 "
              "group: 2 }", (1, 4, 5, 5))
    assert m.caffe_blob_shapes() == [(4, 3, 4, 4), (6,)]  # (in, out/group, kh, kw)
    # Caffe: (H - 1) * s + k - 2p = 4 * 2 + 4 - 2 = 10
    assert tuple(m(torch.empty(1, 4, 5, 5, device="meta")).shape) == (1, 6, 10, 10)
    # one-hot input picks out one kernel slice: input channel 0 at (0, 0) -> out[f] = w[0, f] at offset -1
    w = rand(4, 3, 4, 4)
    with_blobs(m, w, np.zeros(6))
    x = np.zeros((1, 4, 5, 5), np.float32)
    x[0, 0, 0, 0] = 1
    np.testing.assert_allclose(run(m, x)[0, :3, :3, :3], w[0, :, 1:, 1:], rtol=1e-6)


# ---------------------------------------------------------------- inner product


def test_inner_product_axis_and_nchw_flatten():
    x = rand(2, 3, 4, 5)
    m = build("type: 'InnerProduct' inner_product_param { num_output: 6 axis: 2 }", x.shape)
    w, b = rand(6, 20, seed=1), rand(6, seed=2)
    with_blobs(m, w, b)
    assert close(run(m, x), x.reshape(2, 3, 20) @ w.T + b, 1e-6)
    m = build("type: 'InnerProduct' inner_product_param { num_output: 6 axis: -3 }", x.shape)
    assert m.in_features == 60 and m.axis == 1


def test_inner_product_transpose_keeps_pytorch_layout_and_shares_storage():
    x = rand(3, 2, 2, 2)
    m = build("type: 'InnerProduct' inner_product_param { num_output: 5 transpose: true }", x.shape)
    assert m.caffe_blob_shapes() == [(8, 5), (5,)]
    blob = rand(8, 5, seed=1)
    with_blobs(m, blob, np.zeros(5))
    assert tuple(m.weight.shape) == (5, 8)
    assert close(run(m, x), x.reshape(3, 8) @ blob, 1e-6)
    back = m.get_caffe_blobs()[0]
    assert back.data_ptr() == m.weight.data_ptr() and np.array_equal(back.numpy(), blob)


# ---------------------------------------------------------------- activations


def test_activations_hand_values():
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]], np.float32)
    relu = build("type: 'ReLU' relu_param { negative_slope: 0.1 }", x.shape)
    np.testing.assert_allclose(run(relu, x), [[-0.2, -0.05, 0, 0.5, 3]], rtol=1e-6)
    np.testing.assert_array_equal(run(build("type: 'ReLU'", x.shape), x), [[0, 0, 0, 0.5, 3]])
    np.testing.assert_allclose(run(build("type: 'TanH'", x.shape), x), np.tanh(x), rtol=2e-7, atol=1e-7)
    np.testing.assert_allclose(run(build("type: 'Sigmoid'", x.shape), x), 1 / (1 + np.exp(-x)), rtol=1e-6)
    drop = build("type: 'Dropout' dropout_param { dropout_ratio: 0.3 }", x.shape)
    np.testing.assert_array_equal(run(drop, x), x)


def test_softmax_axis():
    x = rand(2, 3, 4)
    out = run(build("type: 'Softmax' softmax_param { axis: 2 }", x.shape), x)
    e = np.exp(x - x.max(axis=2, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=2, keepdims=True), rtol=1e-6)


def test_prelu_per_channel_and_shared():
    x = rand(2, 3, 2, 2)
    m = build("type: 'PReLU'", x.shape)
    assert m.caffe_blob_shapes() == [(3,)]
    with_blobs(m, np.array([0.1, 0.2, 0.3]))
    slope = np.array([0.1, 0.2, 0.3], np.float32)[None, :, None, None]
    np.testing.assert_allclose(run(m, x), np.where(x > 0, x, x * slope), rtol=1e-6)
    m = build("type: 'PReLU' prelu_param { channel_shared: true }", x.shape)
    assert m.caffe_blob_shapes() == [()]
    with_blobs(m, np.array(0.5))
    np.testing.assert_allclose(run(m, x), np.where(x > 0, x, 0.5 * x), rtol=1e-6)


# ---------------------------------------------------------------- BatchNorm / Scale


def test_batchnorm_scale_factor_and_zero():
    x = rand(2, 3, 2, 2)
    m = build("type: 'BatchNorm' batch_norm_param { eps: 0.001 }", x.shape)
    mean, var = np.array([1.0, -2.0, 0.5]), np.array([4.0, 0.25, 1.0])
    with_blobs(m, mean * 8, var * 8, np.array([8.0]))
    expected = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 0.001)
    assert close(run(m, x), expected.astype(np.float32), 1e-6)
    with_blobs(m, mean * 8, var * 8, np.array([0.0]))  # s == 0: statistics are 0
    assert close(run(m, x), x / np.float32(np.sqrt(0.001)), 1e-6)
    blobs = m.get_caffe_blobs()
    assert [tuple(b.shape) for b in blobs] == [(3,), (3,), (1,)] and blobs[2].item() == 0


def test_batchnorm_batch_statistics_when_not_global():
    x = rand(4, 3, 2, 2)
    m = build("type: 'BatchNorm' batch_norm_param { use_global_stats: false }", x.shape)
    with_blobs(m, np.zeros(3), np.zeros(3), np.zeros(1))
    mu, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    assert close(run(m, x), (x - mu) / np.sqrt(var + 1e-5), 1e-5)


def test_scale_axis_num_axes_bias_and_two_bottoms():
    x = rand(2, 3, 4, 5)
    m = build("type: 'Scale' scale_param { axis: 1 num_axes: 2 bias_term: true }", x.shape)
    assert m.caffe_blob_shapes() == [(3, 4), (3, 4)]
    g, b = rand(3, 4, seed=1), rand(3, 4, seed=2)
    with_blobs(m, g, b)
    assert close(run(m, x), x * g[None, :, :, None] + b[None, :, :, None], 1e-6)
    m = build("type: 'Scale' scale_param { num_axes: 0 }", x.shape)
    assert m.caffe_blob_shapes() == [()]
    two = build("type: 'Scale' scale_param { axis: 0 bias_term: true }", x.shape, (2, 3))
    assert two.caffe_blob_shapes() == [(2, 3)]
    s = rand(2, 3, seed=3)
    with_blobs(two, np.ones((2, 3)))
    assert close(run(two, x, s), x * s[:, :, None, None] + 1, 1e-6)


# ---------------------------------------------------------------- Eltwise / shape layers


def test_eltwise_sum_coeff_prod_max():
    a, b, c = (np.full((1, 2), v, np.float32) for v in (1.0, 2.0, 4.0))
    s = build("type: 'Eltwise' eltwise_param { operation: SUM coeff: [1, -0.5, 0.25] }", *[a.shape] * 3)
    np.testing.assert_array_equal(run(s, a, b, c), [[1.0, 1.0]])  # 1 - 1 + 1
    p = build("type: 'Eltwise' eltwise_param { operation: PROD }", a.shape, a.shape, a.shape)
    np.testing.assert_array_equal(run(p, a, b, c), [[8.0, 8.0]])
    x, y = rand(2, 3), rand(2, 3, seed=1)
    np.testing.assert_array_equal(run(build("type: 'Eltwise' eltwise_param { operation: MAX }",
                                            x.shape, y.shape), x, y), np.maximum(x, y))
    with pytest.raises(ConversionError, match="one coeff per bottom"):
        build("type: 'Eltwise' eltwise_param { coeff: 1 }", a.shape, a.shape)
    with pytest.raises(ConversionError, match="same shape"):
        build("type: 'Eltwise'", (1, 2), (1, 3))


@pytest.mark.parametrize("dims,axis,num_axes,bottom,expected", [
    ([0, -1], 0, -1, (2, 3, 4, 5), (2, 60)),
    ([0, 0, -1, 2], 0, -1, (2, 3, 4, 5), (2, 3, 10, 2)),
    ([-1], 1, -1, (2, 3, 4, 5), (2, 60)),
    ([6, 2], 1, 1, (2, 12, 5), (2, 6, 2, 5)),
    ([1, 1], -1, 0, (2, 3), (2, 3, 1, 1)),   # axis -1 with num_axes 0: append axes
    ([], 0, 0, (2, 3), (2, 3)),
])
def test_reshape(dims, axis, num_axes, bottom, expected):
    text = " ".join(f"dim: {d}" for d in dims)
    m = build(f"type: 'Reshape' reshape_param {{ shape {{ {text} }} axis: {axis} num_axes: {num_axes} }}",
              bottom)
    x = rand(*bottom)
    out = run(m, x)
    assert out.shape == expected and np.array_equal(out.ravel(), x.ravel())


def test_reshape_errors():
    with pytest.raises(ConversionError, match=r"the new shape has 14 values, the bottom \[2, 3, 4\] has 24"):
        build("type: 'Reshape' reshape_param { shape { dim: 0 dim: 7 } }", (2, 3, 4))
    with pytest.raises(ConversionError, match="at most one -1"):
        build("type: 'Reshape' reshape_param { shape { dim: -1 dim: -1 } }", (2, 3))


@pytest.mark.parametrize("param, bottom, message", [
    # a 0 (copy) past the bottom's last axis: "tuple index out of range" before
    ("shape { dim: 0 dim: 0 dim: 0 }", (2, 3), "dim 2 is 0 (copy the bottom's axis 2), but the bottom has 2"),
    ("axis: 1 shape { dim: 0 dim: 0 }", (2, 3), "shape dim 1 is 0 (copy the bottom's axis 2)"),
    ("axis: 3 shape { dim: 1 }", (2, 3), "axis 3 out of range for a 2-D bottom"),
    ("axis: -4 shape { dim: 1 }", (2, 3), "axis -4 out of range for a 2-D bottom"),
    ("axis: 1 num_axes: 2 shape { dim: 3 }", (2, 3), "axis 1 + num_axes 2 runs past the 2-D bottom"),
    ("shape { dim: -1 dim: 4 }", (2, 3), "cannot infer the -1: the bottom's 6 values are not a multiple of"),
    ("shape { dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 "
     "dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 "
     "dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 6 }", (2, 3), "the top would have 33 axes, at most 32"),
])
def test_odd_reshapes_say_which_rule_fails(param, bottom, message):
    with pytest.raises(ConversionError) as e:
        build(f"name: 'r' type: 'Reshape' bottom: 'x' top: 'y' reshape_param {{ {param} }}", bottom)
    assert message in str(e.value) and str(e.value).startswith("layer 'r' (Reshape): shape [")


def test_reshape_in_place_is_refused_as_in_caffe():
    with pytest.raises(ConversionError, match="cannot be computed in place"):
        build("name: 'r' type: 'Reshape' bottom: 'x' top: 'x' reshape_param { shape { dim: 6 } }", (2, 3))


def test_flatten_concat_split():
    x = rand(2, 3, 4, 5)
    f = build("type: 'Flatten' flatten_param { axis: 1 end_axis: 2 }", x.shape)
    assert run(f, x).shape == (2, 12, 5)
    y = rand(2, 1, 4, 5, seed=1)
    cat = build("type: 'Concat' concat_param { axis: 1 }", x.shape, y.shape)
    np.testing.assert_array_equal(run(cat, x, y), np.concatenate([x, y], axis=1))
    legacy = build("type: 'Concat' concat_param { concat_dim: 1 }", x.shape, y.shape)
    assert legacy.axis == 1
    with pytest.raises(ConversionError, match="agree on every axis"):
        build("type: 'Concat' concat_param { axis: 1 }", (2, 3, 4, 5), (2, 3, 4, 6))
    split = build("type: 'Split' top: 'a' top: 'b' top: 'c'", x.shape)
    outs = split(torch.from_numpy(x))
    assert len(outs) == 3 and all(np.array_equal(o.numpy(), x) for o in outs)


# ---------------------------------------------------------------- blobs and initialisation


WEIGHTED = {
    "Convolution": ("convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: 'xavier' } "
                    "bias_filler { type: 'constant' value: 0.5 } }", [(4, 2, 3, 3), (4,)]),
    "Deconvolution": ("convolution_param { num_output: 4 kernel_size: 2 stride: 2 }", [(2, 4, 2, 2), (4,)]),
    "InnerProduct": ("inner_product_param { num_output: 5 transpose: true weight_filler { type: 'msra' } }",
                     [(50, 5), (5,)]),
    "PReLU": ("", [(2,)]),
    "BatchNorm": ("", [(2,), (2,), (1,)]),
    "Scale": ("scale_param { bias_term: true }", [(2,), (2,)]),
}


# Every other registered type with the parameters and bottoms it needs to build (the weighted ones are
# built from WEIGHTED); the input and data types are never modules: the net builder makes them inputs.
IMAGE = (1, 2, 5, 5)
UNWEIGHTED = {
    "Accuracy": ("top: 'out'", [(2, 5), (2,)]),
    "Concat": ("", [IMAGE, IMAGE]),
    "Dropout": ("", [IMAGE]),
    "Eltwise": ("", [IMAGE, IMAGE]),
    "EuclideanLoss": ("top: 'out'", [(2, 5), (2, 5)]),
    "Flatten": ("", [IMAGE]),
    "LRN": ("", [IMAGE]),
    "Pooling": ("pooling_param { kernel_size: 2 }", [IMAGE]),
    "ReLU": ("", [IMAGE]),
    "Reshape": ("reshape_param { shape { dim: 0 dim: -1 } }", [IMAGE]),
    "Sigmoid": ("", [IMAGE]),
    "SigmoidCrossEntropyLoss": ("top: 'out'", [(2, 5), (2, 5)]),
    "Silence": ("", [IMAGE]),
    "Softmax": ("", [IMAGE]),
    "SoftmaxWithLoss": ("top: 'out'", [(2, 5), (2,)]),
    "Split": ("", [IMAGE]),
    "TanH": ("", [IMAGE]),
}
INPUT_TYPES = {"Input", "Data", "ImageData", "MemoryData", "HDF5Data", "DummyData", "WindowData"}


def test_every_weighted_type_has_a_blob_case():
    """Every registered type is built here (none skipped), and the ones that hold Caffe blobs are
    exactly those of WEIGHTED: a new weighted type must come with its blob case."""
    from converters.caffe.layers.base import CaffeBlobs

    assert set(WEIGHTED).isdisjoint(UNWEIGHTED) and INPUT_TYPES.isdisjoint({*WEIGHTED, *UNWEIGHTED})
    assert {*WEIGHTED, *UNWEIGHTED, *INPUT_TYPES} == set(supported_types())
    cases = {**{t: (text, [IMAGE]) for t, (text, _) in WEIGHTED.items()}, **UNWEIGHTED}
    weighted = {t for t, (text, shapes) in cases.items()
                if isinstance(build(f"type: '{t}' {text}", *shapes), CaffeBlobs)}
    assert weighted == set(WEIGHTED)
    for t in sorted(INPUT_TYPES):
        with pytest.raises(ConversionError, match="turned into net inputs by the net builder"):
            build(f"type: '{t}'", IMAGE)


@pytest.mark.parametrize("t", sorted(WEIGHTED))
def test_blobs_adopted_without_copy_and_reset_after_to_empty(t):
    text, shapes = WEIGHTED[t]
    m = build(f"type: '{t}' {text}", (1, 2, 5, 5))
    assert m.caffe_blob_shapes() == shapes
    blobs = [torch.randn(s) for s in shapes]
    m.set_caffe_blobs(blobs)
    got = m.get_caffe_blobs()
    assert all(g.data_ptr() == b.data_ptr() and torch.equal(g, b) for g, b in zip(got, blobs, strict=True))
    fresh = build(f"type: '{t}' {text}", (1, 2, 5, 5)).to_empty(device="cpu")
    fresh.reset_parameters()
    assert all(torch.isfinite(b).all() for b in fresh.get_caffe_blobs())
    assert fresh.caffe_blob_shapes() == shapes
    fresh(torch.randn(1, 2, 5, 5))


def test_fillers_follow_caffe_layout():
    conv = build("type: 'Convolution' " + WEIGHTED["Convolution"][0], (1, 2, 5, 5)).to_empty(device="cpu")
    conv.reset_parameters()
    bound = math.sqrt(3.0 / (2 * 9))  # xavier: fan_in = count / shape[0]
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.5 * bound
    assert torch.equal(conv.bias, torch.full((4,), 0.5))
    prelu = build("type: 'PReLU'", (1, 2, 5, 5)).to_empty(device="cpu")
    prelu.reset_parameters()
    assert torch.equal(prelu.weight, torch.full((2,), 0.25))  # Caffe's default PReLU filler
    ip = build("type: 'InnerProduct' inner_product_param { num_output: 400 transpose: true "
               "weight_filler { type: 'msra' variance_norm: FAN_OUT } }", (1, 1000)).to_empty(device="cpu")
    ip.reset_parameters()
    # Caffe blob (in=1000, out=400): fan_out = count / shape[1] = 1000 -> std sqrt(2 / 1000)
    assert abs(ip.weight.std().item() - math.sqrt(2 / 1000)) < 0.002
