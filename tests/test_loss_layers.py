"""Loss and accuracy layers against numpy transcriptions of BVLC's ``Forward_cpu``/``Backward_cpu`` loops
(``softmax_loss_layer.cpp``, ``sigmoid_cross_entropy_loss_layer.cpp``, ``euclidean_loss_layer.cpp``,
``accuracy_layer.cpp``) and hand-computed values."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from converters.caffe.layers.base import builder_for
from converters.caffe.layers.loss import FLT_MIN, TRAINING_TYPES
from converters.caffe.proto import caffe_pb2
from converters.errors import ConversionError

MODES = ("FULL", "VALID", "BATCH_SIZE", "NONE")


def layer(text: str):
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def build(text: str, *shapes):
    """Build the layer for bottoms of ``shapes`` and run it on meta tensors, as the net builder does."""
    lp = layer(text)
    bottoms = [torch.empty(s, device="meta") for s in shapes]
    with torch.device("meta"):
        module = builder_for(lp.type)(lp, bottoms)
        with torch.no_grad():
            module(*bottoms)
    return module


def run(module, x, label, weight=1.0):
    """(top value(s), d objective / d x) with objective = weight * top, as a phase net forms it."""
    x = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    out = module(x, torch.tensor(label, dtype=torch.float32))
    top = out[0] if isinstance(out, tuple) else out
    (top * weight).backward()
    return out, x.grad.numpy()


# -- numpy transcriptions of the BVLC loops -----------------------------------------------------------

def caffe_normalizer(mode, outer, inner, valid_count):
    n = {"FULL": outer * inner, "VALID": valid_count, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return np.float32(max(1.0, n))


def caffe_softmax_loss(x, label, axis=1, ignore=None, mode="VALID", weight=1.0):
    x = np.asarray(x, np.float32)
    outer, c, inner = math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1:])
    x3 = x.reshape(outer, c, inner)
    prob = np.empty_like(x3)
    for i in range(outer):
        for j in range(inner):
            e = np.exp(x3[i, :, j] - x3[i, :, j].max())
            prob[i, :, j] = e / e.sum()
    lab = np.asarray(label, np.float32).reshape(-1)
    loss, count = np.float32(0), 0
    diff = prob.copy()
    for i in range(outer):
        for j in range(inner):
            v = int(lab[i * inner + j])
            if ignore is not None and v == ignore:
                diff[i, :, j] = 0
                continue
            loss -= np.log(max(prob[i, v, j], np.float32(FLT_MIN)))
            diff[i, v, j] -= 1
            count += 1
    normalizer = caffe_normalizer(mode, outer, inner, count)
    return loss / normalizer, (diff * np.float32(weight / normalizer)).reshape(x.shape), prob.reshape(x.shape)


def caffe_sigmoid_cross_entropy(x, target, ignore=None, mode="BATCH_SIZE", weight=1.0):
    x = np.asarray(x, np.float32).reshape(-1)
    t = np.asarray(target, np.float32).reshape(-1)
    loss, count = np.float32(0), 0
    diff = np.empty_like(x)
    for i in range(x.size):
        pos = np.float32(x[i] >= 0)
        sig = np.float32(0.5) * np.tanh(np.float32(0.5) * x[i]) + np.float32(0.5)
        diff[i] = sig - t[i]
        if ignore is not None and int(t[i]) == ignore:
            diff[i] = 0
            continue
        loss -= x[i] * (t[i] - pos) - np.log(1 + np.exp(x[i] - 2 * x[i] * pos))
        count += 1
    return loss, diff, count


def caffe_accuracy(x, label, top_k=1, axis=1, ignore=None):
    x = np.asarray(x, np.float32)
    outer, c, inner = math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1:])
    data = x.reshape(-1)
    dim = x.size // outer
    lab = np.asarray(label).reshape(-1)
    accuracy, count = 0, 0
    nums, hits = np.zeros(c), np.zeros(c)
    for i in range(outer):
        for j in range(inner):
            v = int(lab[i * inner + j])
            if ignore is not None and v == ignore:
                continue
            nums[v] += 1
            true = data[i * dim + v * inner + j]
            better = -1  # the true class also counts as "better"
            k = 0
            while k < c and better < top_k:
                better += data[i * dim + k * inner + j] >= true
                k += 1
            if better < top_k:
                accuracy += 1
                hits[v] += 1
            count += 1
    per_class = np.where(nums == 0, 0, hits / np.maximum(nums, 1))
    return (0.0 if count == 0 else np.float32(accuracy) / np.float32(count)), per_class


# -- SoftmaxWithLoss -----------------------------------------------------------------------------------

def test_softmax_loss_hand_computed():
    # softmax([0, ln 3]) = [1/4, 3/4]: loss -ln(3/4), diff [1/4, -1/4]
    m = build("name: 'loss' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'y' top: 'loss'", (1, 2), (1,))
    top, grad = run(m, [[0.0, math.log(3.0)]], [1])
    assert top.item() == pytest.approx(-math.log(0.75), rel=1e-6)
    np.testing.assert_allclose(grad, [[0.25, -0.25]], rtol=1e-6)


def test_softmax_loss_clamps_at_flt_min_and_keeps_the_gradient():
    # p(label) = exp(-200) underflows to 0 in float: Caffe's loss is -log(FLT_MIN), its diff still p - 1.
    m = build("name: 'loss' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'y' top: 'loss'", (1, 2), (1,))
    top, grad = run(m, [[0.0, -200.0]], [1])
    assert top.item() == pytest.approx(-math.log(FLT_MIN), rel=1e-6)  # 87.34, not 200
    np.testing.assert_allclose(grad, [[1.0, -1.0]], rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ignore", [None, 2])
def test_softmax_loss_matches_caffe(mode, ignore):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 2, 5)).astype(np.float32) * 3
    label = rng.integers(0, 4, size=(3, 1, 2, 5)).astype(np.float32)
    extra = f"loss_param {{ ignore_label: {ignore} normalization: {mode} }}" if ignore is not None else \
        f"loss_param {{ normalization: {mode} }}"
    m = build(f"name: 'l' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'y' top: 'l' {extra}",
              x.shape, label.shape)
    top, grad = run(m, x, label, weight=0.7)
    want, want_grad, _ = caffe_softmax_loss(x, label, ignore=ignore, mode=mode, weight=0.7)
    assert top.item() == pytest.approx(float(want), rel=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)


def test_softmax_loss_all_ignored_divides_by_one():
    m = build("name: 'l' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'y' top: 'l' "
              "loss_param { ignore_label: 0 }", (2, 3), (2,))
    top, grad = run(m, [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], [0, 0])
    assert top.item() == 0.0 and not grad.any()


@pytest.mark.parametrize("normalize,mode", [(True, "VALID"), (False, "BATCH_SIZE")])
def test_softmax_loss_legacy_normalize(normalize, mode):
    x = np.array([[1.0, 2.0, 0.5], [0.1, 0.2, 3.0], [2.0, 2.0, 2.0]], np.float32)
    label = [2, 255, 0]
    m = build("name: 'l' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'y' top: 'l' "
              f"loss_param {{ ignore_label: 255 normalize: {str(normalize).lower()} }}", (3, 3), (3,))
    top, grad = run(m, x, label)
    want, want_grad, _ = caffe_softmax_loss(x, label, ignore=255, mode=mode)
    assert top.item() == pytest.approx(float(want), rel=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)
    # normalization set explicitly wins over normalize
    m = build("name: 'l' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'y' top: 'l' "
              f"loss_param {{ ignore_label: 255 normalize: {str(normalize).lower()} normalization: NONE }}",
              (3, 3), (3,))
    assert m.normalization == "NONE"


def test_softmax_loss_axis_and_second_top():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    label = rng.integers(0, 4, size=(2, 3)).astype(np.float32)
    m = build("name: 'l' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'y' top: 'l' top: 'prob' "
              "softmax_param { axis: -1 }", x.shape, label.shape)
    (top, prob), grad = run(m, x, label)
    want, want_grad, want_prob = caffe_softmax_loss(x, label, axis=2)
    assert top.item() == pytest.approx(float(want), rel=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(prob.numpy(), want_prob, rtol=1e-6)
    assert not prob.requires_grad  # Caffe never backpropagates from the prob top


def test_softmax_loss_label_out_of_range_is_an_error():
    m = build("name: 'loss' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'y' top: 'l'", (2, 3), (2,))
    with pytest.raises(ConversionError, match=r"'loss'.*label 3 is outside the 3 classes"):
        m(torch.zeros(2, 3), torch.tensor([0.0, 3.0]))
    with pytest.raises(ConversionError, match="3 labels for predictions"):
        m(torch.zeros(2, 3), torch.tensor([0.0, 1.0, 2.0]))


def test_softmax_loss_bad_definitions():
    with pytest.raises(ConversionError, match="expected 2 bottoms"):
        build("name: 'l' type: 'SoftmaxWithLoss' bottom: 'x' top: 'l'", (2, 3))
    with pytest.raises(ConversionError, match="same first dimension"):
        build("name: 'l' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'y' top: 'l'", (2, 3), (3,))
    with pytest.raises(ConversionError, match="expected 1 or 2 top"):
        build("name: 'l' type: 'SoftmaxWithLoss' bottom: 'x' bottom: 'y' top: 'a' top: 'b' top: 'c'",
              (2, 3), (2,))


# -- SigmoidCrossEntropyLoss ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [None, *MODES])
@pytest.mark.parametrize("ignore", [None, -1])
def test_sigmoid_cross_entropy_matches_caffe(mode, ignore):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(4, 3)) * 4).astype(np.float32)
    t = rng.integers(0, 2, size=(4, 3)).astype(np.float32)
    t[0, 1] = t[2, 2] = -1
    param = " ".join(p for p in (f"ignore_label: {ignore}" if ignore is not None else "",
                                 f"normalization: {mode}" if mode else "") if p)
    m = build(f"name: 'l' type: 'SigmoidCrossEntropyLoss' bottom: 'x' bottom: 't' top: 'l' "
              f"loss_param {{ {param} }}", x.shape, t.shape)
    top, grad = run(m, x, t, weight=2.0)
    loss, diff, count = caffe_sigmoid_cross_entropy(x, t, ignore=ignore)
    normalizer = caffe_normalizer(mode or "BATCH_SIZE", 4, 3, count)  # the layer's default is BATCH_SIZE
    assert top.item() == pytest.approx(float(loss / normalizer), rel=1e-6)
    np.testing.assert_allclose(grad.reshape(-1), diff * np.float32(2.0 / normalizer), rtol=1e-5, atol=1e-7)


def test_sigmoid_cross_entropy_hand_computed():
    # x = 0, t = 1: loss log 2, diff sigmoid(0) - 1 = -1/2 (batch of 1)
    m = build("name: 'l' type: 'SigmoidCrossEntropyLoss' bottom: 'x' bottom: 't' top: 'l'", (1, 1), (1, 1))
    top, grad = run(m, [[0.0]], [[1.0]])
    assert top.item() == pytest.approx(math.log(2.0), rel=1e-6)
    np.testing.assert_allclose(grad, [[-0.5]])


# -- EuclideanLoss -------------------------------------------------------------------------------------

def test_euclidean_loss_hand_computed_and_both_gradients():
    m = build("name: 'l' type: 'EuclideanLoss' bottom: 'a' bottom: 'b' top: 'l'", (2, 2), (2, 2))
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    b = torch.tensor([[1.0, 0.0], [0.0, 4.0]], requires_grad=True)
    top = m(a, b)
    assert top.item() == pytest.approx((4 + 9) / 2 / 2)  # sum of squares / num / 2
    (3.0 * top).backward()
    np.testing.assert_allclose(a.grad.numpy(), 3.0 * np.array([[0, 2], [3, 0]]) / 2)
    np.testing.assert_allclose(b.grad.numpy(), -3.0 * np.array([[0, 2], [3, 0]]) / 2)


def test_euclidean_loss_accepts_same_count_per_item():
    m = build("name: 'l' type: 'EuclideanLoss' bottom: 'a' bottom: 'b' top: 'l'", (3, 1), (3,))
    top = m(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([0.0, 2.0, 5.0]))
    assert top.item() == pytest.approx((1 + 4) / 3 / 2)
    with pytest.raises(ConversionError, match="same dimension"):
        build("name: 'l' type: 'EuclideanLoss' bottom: 'a' bottom: 'b' top: 'l'", (3, 2), (3,))


# -- Accuracy ------------------------------------------------------------------------------------------

def test_accuracy_ties_count_against_the_true_class():
    m = build("name: 'acc' type: 'Accuracy' bottom: 'x' bottom: 'y' top: 'a'", (1, 3), (1,))
    assert m(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([0.0])).item() == 0.0  # a tie is not a win
    assert m(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([1.0])).item() == 0.0
    m2 = build("name: 'acc' type: 'Accuracy' bottom: 'x' bottom: 'y' top: 'a' accuracy_param { top_k: 2 }",
               (1, 3), (1,))
    assert m2(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([1.0])).item() == 1.0
    assert m2(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([2.0])).item() == 0.0


@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize("ignore", [None, 1])
def test_accuracy_matches_caffe(top_k, ignore):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, size=(5, 4, 3)).astype(np.float32)  # small integers: many ties
    label = rng.integers(0, 4, size=(5, 3)).astype(np.float32)
    extra = f"ignore_label: {ignore}" if ignore is not None else ""
    m = build(f"name: 'a' type: 'Accuracy' bottom: 'x' bottom: 'y' top: 'a' top: 'per_class' "
              f"accuracy_param {{ top_k: {top_k} {extra} }}", x.shape, label.shape)
    acc, per_class = m(torch.from_numpy(x), torch.from_numpy(label))
    want, want_per_class = caffe_accuracy(x, label, top_k=top_k, ignore=ignore)
    assert acc.item() == pytest.approx(float(want), rel=1e-7)
    np.testing.assert_allclose(per_class.numpy(), want_per_class, rtol=1e-6)


def test_accuracy_axis_and_all_ignored():
    x = np.array([[[0.0, 5.0], [1.0, 0.0]]], np.float32)  # (1, 2, 2): axis 2 holds the 2 classes
    m = build("name: 'a' type: 'Accuracy' bottom: 'x' bottom: 'y' top: 'a' accuracy_param { axis: -1 }",
              (1, 2, 2), (1, 2))
    assert m(torch.from_numpy(x), torch.tensor([[1.0, 1.0]])).item() == 0.5
    m = build("name: 'a' type: 'Accuracy' bottom: 'x' bottom: 'y' top: 'a' "
              "accuracy_param { ignore_label: 0 }", (2, 2), (2,))
    assert m(torch.zeros(2, 2), torch.zeros(2)).item() == 0.0


def test_accuracy_bad_definitions():
    with pytest.raises(ConversionError, match="top_k must be at most the number of classes"):
        build("name: 'a' type: 'Accuracy' bottom: 'x' bottom: 'y' top: 'a' accuracy_param { top_k: 4 }",
              (2, 3), (2,))
    with pytest.raises(ConversionError, match="labels for predictions"):
        build("name: 'a' type: 'Accuracy' bottom: 'x' bottom: 'y' top: 'a'", (2, 3), (3,))


def test_accuracy_gives_no_gradient():
    m = build("name: 'a' type: 'Accuracy' bottom: 'x' bottom: 'y' top: 'a'", (2, 3), (2,))
    assert not m(torch.zeros(2, 3, requires_grad=True), torch.zeros(2)).requires_grad


def test_silence_produces_nothing():
    m = build("name: 's' type: 'Silence' bottom: 'a' bottom: 'b'", (2,), (3,))
    assert m(torch.zeros(2), torch.zeros(3)) == ()
    with pytest.raises(ConversionError, match="no tops"):
        build("name: 's' type: 'Silence' bottom: 'a' top: 'x'", (2,))


@pytest.mark.parametrize("t", TRAINING_TYPES)
def test_every_training_type_is_tested_here(t):
    source = Path(__file__).read_text()
    assert f"type: '{t}'" in source, f"{t} is registered but has no test in this file"
