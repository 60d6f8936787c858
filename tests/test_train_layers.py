"""Layers that behave differently in Caffe's TRAIN phase, and Caffe's fillers, against numpy
transcriptions of BVLC's ``batch_norm_layer.cpp``, ``dropout_layer.cpp`` and ``filler.hpp``."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from converters.caffe.layers.activation import CaffeDropout
from converters.caffe.layers.base import builder_for, supported_types
from converters.caffe.layers.fillers import Filler, caffe_blob_fillers
from converters.caffe.layers.io import INPUT_TYPES
from converters.caffe.layers.loss import TRAINING_TYPES
from converters.caffe.layers.normalization import CaffeBatchNorm
from converters.caffe.proto import caffe_pb2
from converters.errors import ConversionError


def layer(text: str):
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def batch_norm(text: str = "", channels: int = 3) -> CaffeBatchNorm:
    lp = layer(f"name: 'bn' type: 'BatchNorm' {text}")
    m = builder_for("BatchNorm")(lp, [torch.empty(2, channels, 4, 4, device="meta")])
    m.to_empty(device="cpu")
    m.reset_parameters()
    return m


# -- which layers depend on the phase ---------------------------------------------------------------------

PHASE_DEPENDENT = {"Dropout", "BatchNorm"}  # Caffe layers that read this->phase_ (besides data layers)
PARAMS = {"Convolution": "convolution_param { num_output: 2 kernel_size: 3 }",
          "Deconvolution": "convolution_param { num_output: 2 kernel_size: 3 }",
          "InnerProduct": "inner_product_param { num_output: 3 }",
          "Pooling": "pooling_param { kernel_size: 2 stride: 2 }",
          "Reshape": "reshape_param { shape { dim: 0 dim: -1 } }"}


COMPUTING = [t for t in supported_types() if t not in INPUT_TYPES and t not in TRAINING_TYPES]


@pytest.mark.parametrize("t", COMPUTING)
def test_only_dropout_and_batch_norm_depend_on_the_phase(t):
    g = torch.Generator().manual_seed(0)
    bottoms = [torch.randn(2, 4, 6, 6, generator=g) for _ in range(2 if t == "Eltwise" else 1)]
    m = builder_for(t)(layer(f"name: 'l' type: '{t}' top: 't' {PARAMS.get(t, '')}"),
                       [b.to("meta") for b in bottoms])
    m.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in [*m.parameters(), *m.buffers()]:
            tensor.uniform_(0.5, 1.5, generator=g)
        evaluated, trained = m.eval()(*bottoms), m.train()(*bottoms)
    same = all(torch.equal(a, b) for a, b in zip(*(o if isinstance(o, tuple) else (o,)
                                                   for o in (evaluated, trained)), strict=True))
    assert same != (t in PHASE_DEPENDENT)


# -- BatchNorm -----------------------------------------------------------------------------------------

def caffe_batch_norm_train(x, blobs, maf=0.999, eps=1e-5):
    """batch_norm_layer.cpp Forward_cpu with use_global_stats false: (top, updated blobs)."""
    x = np.asarray(x, np.float64)
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    m = flat.size // c
    mean = flat.mean(axis=(0, 2))
    centred = flat - mean[None, :, None]
    var = (centred ** 2).mean(axis=(0, 2))  # E((X - EX)^2), the biased variance
    mean_blob, var_blob, s = (np.asarray(b, np.float64).copy() for b in blobs)
    s = s * maf + 1
    mean_blob = maf * mean_blob + mean
    var_blob = maf * var_blob + (m / (m - 1) if m > 1 else 1) * var
    top = centred / np.sqrt(var + eps)[None, :, None]
    return top.reshape(x.shape), (mean_blob, var_blob, s)


def caffe_batch_norm_global(x, blobs, eps=1e-5):
    mean_blob, var_blob, s = (np.asarray(b, np.float64) for b in blobs)
    f = 0.0 if s[0] == 0 else 1.0 / s[0]
    shape = (1, -1) + (1,) * (np.ndim(x) - 2)
    mean, var = (mean_blob * f).reshape(shape), (var_blob * f).reshape(shape)
    return (np.asarray(x, np.float64) - mean) / np.sqrt(var + eps)


def test_batch_norm_train_uses_and_updates_batch_statistics():
    rng = np.random.default_rng(0)
    m = batch_norm("batch_norm_param { moving_average_fraction: 0.9 eps: 0.001 }").train()
    blobs = [b.numpy().copy() for b in m.get_caffe_blobs()]
    for step in range(3):  # three updates: the scale factor, moving sums and m/(m-1) correction compound
        x = rng.normal(2.0, 3.0, size=(2, 3, 4, 4)).astype(np.float32)
        top = m(torch.from_numpy(x))
        want, blobs = caffe_batch_norm_train(x, blobs, maf=0.9, eps=1e-3)
        np.testing.assert_allclose(top.detach().numpy(), want, rtol=1e-4, atol=1e-5)
        for got, exp in zip(m.get_caffe_blobs(), blobs, strict=True):
            np.testing.assert_allclose(got.numpy(), exp, rtol=1e-5, err_msg=f"step {step}")
    assert m.scale_factor.item() == pytest.approx(1 + 0.9 + 0.81)
    # eval mode (Caffe's TEST): the stored statistics, blob * (1 / s), and no update
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    m.eval()
    np.testing.assert_allclose(m(torch.from_numpy(x)).numpy(), caffe_batch_norm_global(x, blobs, eps=1e-3),
                               rtol=1e-5, atol=1e-5)
    assert m.scale_factor.item() == pytest.approx(1 + 0.9 + 0.81)


def test_batch_norm_hand_computed_update():
    # one channel, values 1 and 3: mean 2, biased variance 1, m = 2 so the stored variance is 2
    m = batch_norm(channels=1).train()
    top = m(torch.tensor([[[[1.0]]], [[[3.0]]]]))
    r = 1 / math.sqrt(1 + 1e-5)
    np.testing.assert_allclose(top.detach().numpy().ravel(), [-r, r], rtol=1e-6)
    assert [b.item() for b in m.get_caffe_blobs()] == pytest.approx([2.0, 2.0, 1.0])


def test_batch_norm_use_global_stats_overrides_the_phase():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(2, 3, 4, 4)).astype(np.float32))
    on = batch_norm("batch_norm_param { use_global_stats: true }").train()
    with torch.no_grad():
        on.mean_sum.fill_(2.0), on.var_sum.fill_(8.0), on.scale_factor.fill_(2.0)
    blobs = [b.numpy().copy() for b in on.get_caffe_blobs()]
    np.testing.assert_allclose(on(x).detach().numpy(), caffe_batch_norm_global(x.numpy(), blobs), rtol=1e-5)
    assert on.scale_factor.item() == 2.0  # TRAIN with global statistics: nothing is updated
    off = batch_norm("batch_norm_param { use_global_stats: false }").eval()
    want, _ = caffe_batch_norm_train(x.numpy(), [b.numpy() for b in off.get_caffe_blobs()])
    np.testing.assert_allclose(off(x).numpy(), want, rtol=1e-4, atol=1e-5)
    assert off.scale_factor.item() == 0.0  # a deploy net's evaluation never updates
    off.update_in_eval = True  # a TEST phase net: Caffe updates whenever it uses batch statistics
    off(x)
    assert off.scale_factor.item() == 1.0


def test_batch_norm_train_gradient_is_caffes_backward():
    # batch_norm_layer.cpp Backward_cpu: dx = (dy - mean(dy) - mean(dy * y) * y) / sqrt(var + eps)
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.normal(size=(3, 2, 2, 2)), dtype=torch.float32, requires_grad=True)
    dy = rng.normal(size=(3, 2, 2, 2))
    m = batch_norm(channels=2).train()
    y = m(x)
    y.backward(torch.from_numpy(dy).float())
    yv = y.detach().numpy().astype(np.float64)
    xv = x.detach().numpy().astype(np.float64)
    axes = (0, 2, 3)
    var = xv.var(axis=axes, keepdims=True)
    want = (dy - dy.mean(axis=axes, keepdims=True) - (dy * yv).mean(axis=axes, keepdims=True) * yv) \
        / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-4, atol=1e-5)


# -- Dropout ---------------------------------------------------------------------------------------------

def test_dropout_train_scales_kept_units_and_eval_is_identity():
    m = builder_for("Dropout")(layer("name: 'd' type: 'Dropout' dropout_param { dropout_ratio: 0.3 }"),
                               [torch.empty(1000, 50, device="meta")])
    assert isinstance(m, CaffeDropout)
    x = torch.rand(1000, 50) + 1.0
    assert m.eval()(x) is x
    m.train()
    m.generator = torch.Generator().manual_seed(7)
    x.requires_grad_(True)
    y = m(x)
    scale = np.float32(1.0 / (1.0 - np.float64(np.float32(0.3))))  # Caffe's float scale_
    kept = y.detach() != 0
    assert torch.equal(y.detach()[kept], x.detach()[kept] * torch.tensor(scale))
    assert abs(kept.float().mean().item() - 0.7) < 0.01  # Bernoulli(1 - ratio), 50,000 draws
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, kept.float() * torch.tensor(scale))  # top_diff * mask * scale
    m.generator = torch.Generator().manual_seed(7)
    assert torch.equal(m(x).detach(), y.detach())  # the same seed draws the same mask


# -- fillers -------------------------------------------------------------------------------------------

def filled(filler: Filler, shape, seed=0) -> torch.Tensor:
    return filler.fill_(torch.empty(shape), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("norm,n", [("FAN_IN", 16 * 9), ("FAN_OUT", 64 * 9), ("AVERAGE", (16 + 64) * 9 / 2)])
def test_xavier_and_msra_scales(norm, n):
    shape = (64, 16, 3, 3)  # Caffe layout: fan_in = count / shape[0], fan_out = count / shape[1]
    xavier = filled(Filler(type="xavier", variance_norm=norm), shape)
    bound = math.sqrt(3 / n)
    assert 0.99 * bound < xavier.abs().max() <= bound
    assert xavier.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)  # U(-a, a): std a / sqrt 3
    msra = filled(Filler(type="msra", variance_norm=norm), shape)
    assert msra.std().item() == pytest.approx(math.sqrt(2 / n), rel=0.03)


def test_xavier_one_dimensional_blob_uses_fan_in_one():
    assert filled(Filler(type="xavier"), (1000,)).abs().max() <= math.sqrt(3.0)


def test_fillers_follow_the_generator():
    a = filled(Filler(type="gaussian", std=0.5), (100,), seed=1)
    assert torch.equal(a, filled(Filler(type="gaussian", std=0.5), (100,), seed=1))
    assert not torch.equal(a, filled(Filler(type="gaussian", std=0.5), (100,), seed=2))
    u = filled(Filler(type="uniform", min=-2.0, max=-1.0), (1000,))
    assert u.min() >= -2.0 and u.max() < -1.0


def test_gaussian_sparse_keeps_sparse_over_num_outputs():
    w = filled(Filler(type="gaussian", std=1.0, sparse=5), (20, 1000))
    assert (w != 0).float().mean().item() == pytest.approx(5 / 20, abs=0.01)


def test_positive_unitball_rows_sum_to_one():
    w = filled(Filler(type="positive_unitball"), (5, 2, 3))
    assert torch.all(w >= 0)
    np.testing.assert_allclose(w.reshape(5, -1).sum(1).numpy(), np.ones(5), rtol=1e-6)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_bilinear_matches_caffe_loop(k):
    # filler.hpp BilinearFiller::Fill, in float as Caffe computes it
    shape = (2, 1, k, k)
    f = math.ceil(k / 2.0)
    c = np.float32((k - 1) / (2.0 * f))
    want = np.empty(int(np.prod(shape)), np.float32)
    for i in range(want.size):
        x, y = np.float32(i % k), np.float32((i // k) % k)
        want[i] = (1 - abs(x / np.float32(f) - c)) * (1 - abs(y / np.float32(f) - c))
    np.testing.assert_array_equal(filled(Filler(type="bilinear"), shape).numpy().ravel(), want)
    with pytest.raises(ConversionError, match="square"):
        filled(Filler(type="bilinear"), (1, 1, k, k + 1))


def test_filler_errors():
    with pytest.raises(ConversionError, match=r"filler \('nope'\): unknown filler type"):
        filled(Filler(type="nope"), (2,))
    with pytest.raises(ConversionError, match="sparse is supported by the gaussian filler only"):
        filled(Filler(type="xavier", sparse=3), (2, 2))


@pytest.mark.parametrize("text,want", [
    ("type: 'Convolution' convolution_param { num_output: 2 }", [("constant", 0.0), ("constant", 0.0)]),
    ("type: 'Convolution' convolution_param { num_output: 2 bias_term: false "
     "weight_filler { type: 'msra' } }", [("msra", 0.0)]),
    ("type: 'InnerProduct' inner_product_param { num_output: 2 "
     "bias_filler { type: 'constant' value: 0.5 } }", [("constant", 0.0), ("constant", 0.5)]),
    ("type: 'Scale' bottom: 'x' scale_param { bias_term: true }", [("constant", 1.0), ("constant", 0.0)]),
    ("type: 'Scale' bottom: 'x' bottom: 's' scale_param { bias_term: true }", [("constant", 0.0)]),
    ("type: 'PReLU'", [("constant", 0.25)]),
    ("type: 'BatchNorm'", [("constant", 0.0)] * 3),
])
def test_caffe_default_fillers_per_layer(text, want):
    fillers = caffe_blob_fillers(layer(f"name: 'l' {text}"))
    assert [(f.type, f.value) for f in fillers] == want


def test_a_layer_without_known_fillers_is_an_error():
    with pytest.raises(ConversionError, match="'l' \\(Embed\\): no Caffe fillers are known"):
        caffe_blob_fillers(layer("name: 'l' type: 'Embed'"))
