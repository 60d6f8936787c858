"""The loss layers of a train_val net: SoftmaxWithLoss, SigmoidCrossEntropyLoss and EuclideanLoss, after
BVLC's ``softmax_loss_layer.cpp``, ``sigmoid_cross_entropy_loss_layer.cpp`` and ``euclidean_loss_layer.cpp``
(``accuracy.py`` holds the other training-only layers, Accuracy and Silence).

Only the phase nets (``converters/caffe/phase.py``) build them; the deploy builder drops them. Each loss
returns Caffe's scalar top and hands back, in the backward pass, the closed-form bottom diff of the
layer's ``Backward_cpu`` scaled as Caffe scales it (``top_diff / normalizer``), not autograd's derivative
of the forward formula: the two agree mathematically, and this way they agree to the last bit and the
``FLT_MIN`` clamp of the softmax loss does not cut the gradient. Labels are read as Caffe reads them,
``static_cast<int>`` of the label blob (:class:`LabelledLayer`, shared with Accuracy); a label outside
the classes (other than ``ignore_label``) is an error where Caffe reads past its buffer.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from converters.caffe.layers.base import register
from converters.caffe.shapes.loss import (
    euclidean_checks,
    label_count_problem,
    sigmoid_cross_entropy_checks,
    softmax_loss_axis,
)
from converters.errors import ConversionError

FLT_MIN = 1.17549435e-38  # float's smallest normal number: Caffe clamps probabilities to it before log
NORMALIZATION = {0: "FULL", 1: "VALID", 2: "BATCH_SIZE", 3: "NONE"}  # LossParameter.NormalizationMode
# every training-only type (accuracy.py registers the last two)
TRAINING_TYPES = ("SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "EuclideanLoss", "Accuracy", "Silence")


class _CaffeGradient(torch.autograd.Function):
    """``value`` forward; backward gives each input ``diff * (top_diff / divisor)``, the diffs computed
    with the value (``None`` for an input that needs none)."""

    @staticmethod
    def forward(ctx, value, divisor, *inputs_and_diffs):
        n = len(inputs_and_diffs) // 2
        ctx.n, ctx.divisor = n, divisor
        ctx.save_for_backward(*inputs_and_diffs[n:])
        return value.clone()

    @staticmethod
    def backward(ctx, top_diff):
        scale = top_diff / ctx.divisor
        diffs = [None if d is None else d * scale for d in ctx.saved_tensors]
        return (None, None, *diffs, *([None] * ctx.n))


def _with_caffe_gradient(value: torch.Tensor, divisor, pairs) -> torch.Tensor:
    """Attach the closed-form diffs ``pairs`` [(bottom, diff or None)] to ``value``."""
    if not any(d is not None for _, d in pairs):
        return value
    return _CaffeGradient.apply(value, divisor, *(b for b, _ in pairs), *(d for _, d in pairs))


def _needs_grad(t: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and t.requires_grad


class LabelledLayer(nn.Module):
    """Reads the label blob as Caffe's loss and accuracy layers do, for predictions ``(outer, C, inner)``."""

    def __init__(self, name: str, type_: str, axis: int, ignore_label: int | None) -> None:
        super().__init__()
        self.layer_name, self.layer_type = name, type_
        self.axis = axis
        self.ignore_label = ignore_label

    def _error(self, message: str) -> ConversionError:
        return ConversionError(f"layer {self.layer_name!r} ({self.layer_type}): {message}")

    def _split(self, x: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        problem = label_count_problem(tuple(x.shape), label.numel(), self.axis)
        if problem:
            raise self._error(problem)
        outer, inner = math.prod(x.shape[:self.axis]), math.prod(x.shape[self.axis + 1:])
        return x.reshape(outer, x.shape[self.axis], inner), outer, inner

    def _labels(self, label: torch.Tensor, outer: int, inner: int, classes: int):
        """(class index per position with ignored ones set to 0, valid mask or ``None``)."""
        lab = label.detach().reshape(outer, inner).to(torch.int64)  # static_cast<int> truncates as this does
        valid = None if self.ignore_label is None else lab != self.ignore_label
        if not lab.is_meta:
            bad = (lab < 0) | (lab >= classes)
            if valid is not None:
                bad &= valid
            if bool(bad.any()):
                value = int(lab[bad][0])
                raise self._error(f"label {value} is outside the {classes} classes 0..{classes - 1} "
                                  f"of the predictions (axis {self.axis})")
        return (lab if valid is None else lab.masked_fill(~valid, 0)), valid


def _normalizer(mode: str, outer: int, inner: int, valid: torch.Tensor | None):
    """Caffe's ``get_normalizer``, at least 1 (a batch of ignored labels must not divide by 0)."""
    if mode == "VALID" and valid is not None:
        return valid.sum().to(torch.float32).clamp_min(1.0)
    n = {"FULL": outer * inner, "VALID": outer * inner, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return float(max(1, n))


class SoftmaxWithLoss(LabelledLayer):
    """``-sum log(max(softmax(x)[label], FLT_MIN)) / normalizer``; with two tops, also the softmax."""

    def __init__(self, name: str, axis: int, ignore_label: int | None, normalization: str,
                 prob_top: bool) -> None:
        super().__init__(name, "SoftmaxWithLoss", axis, ignore_label)
        self.normalization = normalization
        self.prob_top = prob_top

    def forward(self, x: torch.Tensor, label: torch.Tensor):
        logits, outer, inner = self._split(x, label)
        need_diff = _needs_grad(x)
        with torch.no_grad():
            prob = torch.softmax(logits.detach(), dim=1)
            idx, valid = self._labels(label, outer, inner, logits.shape[1])
            nll = -torch.log(prob.gather(1, idx.unsqueeze(1)).squeeze(1).clamp_min(FLT_MIN))
            if valid is not None:
                nll = nll.masked_fill(~valid, 0.0)
            normalizer = _normalizer(self.normalization, outer, inner, valid)
            loss = nll.sum() / normalizer
            diff = None
            if need_diff:  # Caffe: prob - 1 at the label, 0 at ignored positions
                diff = prob.scatter_add(1, idx.unsqueeze(1), torch.full_like(prob[:, :1], -1.0))
                if valid is not None:
                    diff.masked_fill_(~valid.unsqueeze(1), 0.0)
                diff = diff.reshape(x.shape)
        loss = _with_caffe_gradient(loss, normalizer, [(x, diff)])
        return (loss, prob.reshape(x.shape)) if self.prob_top else loss

    def extra_repr(self) -> str:
        return f"axis={self.axis}, ignore_label={self.ignore_label}, normalization={self.normalization}"


class SigmoidCrossEntropyLoss(LabelledLayer):
    """Caffe's stable ``-sum x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0])) / normalizer``; the targets
    are read as floats, ``ignore_label`` compares their ``int`` value."""

    def __init__(self, name: str, ignore_label: int | None, normalization: str) -> None:
        super().__init__(name, "SigmoidCrossEntropyLoss", 1, ignore_label)
        self.normalization = normalization

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.numel() != x.numel():
            raise self._error(f"inputs must have the same count, found {tuple(x.shape)} and "
                              f"{tuple(target.shape)}")
        outer, inner = x.shape[0], x.numel() // max(x.shape[0], 1)
        need_diff = _needs_grad(x)
        with torch.no_grad():
            xv, t = x.detach(), target.detach().reshape(x.shape).to(x.dtype)
            pos = (xv >= 0).to(x.dtype)
            terms = xv * (t - pos) - torch.log(1 + torch.exp(xv - 2 * xv * pos))
            valid = None if self.ignore_label is None else \
                target.detach().reshape(x.shape).to(torch.int64) != self.ignore_label
            if valid is not None:
                terms = terms.masked_fill(~valid, 0.0)
            normalizer = _normalizer(self.normalization, outer, inner, valid)
            loss = -terms.sum() / normalizer
            diff = None
            if need_diff:  # Caffe's sigmoid is 0.5 tanh(0.5 x) + 0.5
                diff = 0.5 * torch.tanh(0.5 * xv) + 0.5 - t
                if valid is not None:
                    diff.masked_fill_(~valid, 0.0)
        return _with_caffe_gradient(loss, normalizer, [(x, diff)])

    def extra_repr(self) -> str:
        return f"ignore_label={self.ignore_label}, normalization={self.normalization}"


class EuclideanLoss(nn.Module):
    """``sum((a - b)^2) / num / 2`` with ``num`` the first dimension; both bottoms get gradients."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        need_a, need_b = _needs_grad(a), _needs_grad(b)
        with torch.no_grad():
            diff = (a.detach() - b.detach().reshape(a.shape)).reshape(-1)
            num = a.shape[0]
            loss = torch.dot(diff, diff) / num / 2
            pairs = [(a, diff.reshape(a.shape) if need_a else None),
                     (b, -diff.reshape(b.shape) if need_b else None)]
        return _with_caffe_gradient(loss, float(num), pairs)


def ignore_label_of(param) -> int | None:
    return int(param.ignore_label) if param.HasField("ignore_label") else None


def normalization_of(layer, default: str) -> str:
    """``loss_param.normalization``, else the legacy ``normalize`` (true: VALID, false: BATCH_SIZE), else
    the layer's own default (VALID for SoftmaxWithLoss, BATCH_SIZE for SigmoidCrossEntropyLoss)."""
    p = layer.loss_param
    if p.HasField("normalization"):
        return NORMALIZATION[int(p.normalization)]
    if p.HasField("normalize"):
        return "VALID" if p.normalize else "BATCH_SIZE"
    return default


def _shapes(bottoms: list[torch.Tensor]) -> list[tuple[int, ...]]:
    return [tuple(b.shape) for b in bottoms]


@register("SoftmaxWithLoss")
def build_softmax_loss(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    axis = softmax_loss_axis(layer, _shapes(bottoms))
    return SoftmaxWithLoss(layer.name, axis, ignore_label_of(layer.loss_param),
                           normalization_of(layer, "VALID"), prob_top=len(layer.top) == 2)


@register("SigmoidCrossEntropyLoss")
def build_sigmoid_cross_entropy_loss(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    sigmoid_cross_entropy_checks(layer, _shapes(bottoms))
    return SigmoidCrossEntropyLoss(layer.name, ignore_label_of(layer.loss_param),
                                   normalization_of(layer, "BATCH_SIZE"))


@register("EuclideanLoss")
def build_euclidean_loss(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    euclidean_checks(layer, _shapes(bottoms))
    return EuclideanLoss()
