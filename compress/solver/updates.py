"""Caffe's ``ComputeUpdateValue`` of every solver type, over lists of tensors (``torch._foreach_*``).

One function per BVLC file, each a line-by-line transcription of the CPU branch:

    SGD        src/caffe/solvers/sgd_solver.cpp        h = momentum*h + local_rate*g;  update = h
    Nesterov   src/caffe/solvers/nesterov_solver.cpp   h' as SGD;  update = (1+momentum)*h' - momentum*h
    AdaGrad    src/caffe/solvers/adagrad_solver.cpp    h += g^2;  update = local_rate * g / (sqrt(h)+delta)
    RMSProp    src/caffe/solvers/rmsprop_solver.cpp    h = rms_decay*h + (1-rms_decay)*g^2;  as AdaGrad
    AdaDelta   src/caffe/solvers/adadelta_solver.cpp   h1 (gradients), h2 (updates), momentum their decay:
                                                       u = g*sqrt((delta+h2)/(delta+h1)), h2 from u^2,
                                                       update = local_rate * u
    Adam       src/caffe/solvers/adam_solver.cpp       m, v with beta1 = momentum, beta2 = momentum2;
                                                       update = local_rate*correction * m/(sqrt(v)+delta),
                                                       correction = sqrt(1-beta2^t)/(1-beta1^t), t = iter+1

``g`` is the parameter's diff after clipping, iter_size normalization and regularization (done by the
optimizer before these run). The float32 operation order is Caffe's: ``caffe_cpu_axpby(a, x, b, y)``
is ``y *= b`` then ``y += a*x`` (``cblas_sscal`` then ``cblas_saxpy``, which BLAS fuses), which is
``mul_`` then ``add_(x, alpha=a)`` here. ``caffe_powx(x, 2)`` and ``caffe_powx(x, 0.5)`` (C's ``powf``)
are ``x*x`` and ``sqrt``; glibc's ``powf`` is not correctly rounded, so about one element in a
thousand can differ from Caffe by one float32 ulp in the adaptive rules (not in SGD or Nesterov).
A ``local_rate`` of 0 (``lr_mult: 0``) updates the histories as Caffe does and leaves the weights alone.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

f32 = np.float32
Tensors = list[torch.Tensor]


@dataclass(frozen=True)
class Hyper:
    """The solver's scalars as float32 values (Caffe's ``Dtype``), held as Python floats for torch."""

    momentum: float
    momentum2: float
    delta: float
    rms_decay: float

    @classmethod
    def of(cls, cfg) -> Hyper:
        return cls(*(float(f32(getattr(cfg, k))) for k in ("momentum", "momentum2", "delta", "rms_decay")))


def one_minus(x: float) -> float:
    """``Dtype(1) - x`` in float32."""
    return float(f32(1) - f32(x))


# compute(diffs, histories, hyper, local_rate, iteration) -> the values to subtract from the weights,
# or None when they are all zero (local_rate 0). ``diffs`` may be overwritten; histories are updated.
Compute = Callable[[Tensors, list[Tensors], Hyper, float, int], "Tensors | None"]


@dataclass(frozen=True)
class Rule:
    name: str
    histories: int  # Caffe's history_ blobs per parameter
    compute: Compute


RULES: dict[str, Rule] = {}


def register(name: str, histories: int = 1):
    def deco(fn: Compute) -> Compute:
        RULES[name] = Rule(name, histories, fn)
        return fn
    return deco


def axpby(a: float, x: Tensors, b: float, y: Tensors) -> None:
    """``caffe_cpu_axpby``: ``y = b*y`` then ``y += a*x`` (BLAS's axpy does nothing when ``a`` is 0)."""
    torch._foreach_mul_(y, b)
    if a != 0:
        torch._foreach_add_(y, x, alpha=a)


@register("SGD")
def sgd(g: Tensors, hist: list[Tensors], hp: Hyper, local_rate: float, it: int) -> Tensors:
    (h,) = hist
    axpby(local_rate, g, hp.momentum, h)
    return h


@register("Nesterov")
def nesterov(g: Tensors, hist: list[Tensors], hp: Hyper, local_rate: float, it: int) -> Tensors:
    (h,) = hist
    update = torch._foreach_mul(h, -hp.momentum)  # the old history, saved and scaled
    axpby(local_rate, g, hp.momentum, h)
    torch._foreach_add_(update, h, alpha=float(f32(1) + f32(hp.momentum)))
    return update


def _scaled_ratio(g: Tensors, h: Tensors, hp: Hyper, local_rate: float) -> Tensors | None:
    """AdaGrad/RMSProp's tail: ``local_rate * g / (sqrt(h) + delta)``."""
    if local_rate == 0:
        return None
    denom = torch._foreach_sqrt(h)
    torch._foreach_add_(denom, hp.delta)
    update = torch._foreach_div(g, denom)
    torch._foreach_mul_(update, local_rate)
    return update


@register("AdaGrad")
def adagrad(g: Tensors, hist: list[Tensors], hp: Hyper, local_rate: float, it: int) -> Tensors | None:
    (h,) = hist
    torch._foreach_add_(h, torch._foreach_mul(g, g))
    return _scaled_ratio(g, h, hp, local_rate)


@register("RMSProp")
def rmsprop(g: Tensors, hist: list[Tensors], hp: Hyper, local_rate: float, it: int) -> Tensors | None:
    (h,) = hist
    axpby(one_minus(hp.rms_decay), torch._foreach_mul(g, g), hp.rms_decay, h)
    return _scaled_ratio(g, h, hp, local_rate)


@register("AdaDelta", histories=2)
def adadelta(g: Tensors, hist: list[Tensors], hp: Hyper, local_rate: float, it: int) -> Tensors | None:
    h_grad, h_update = hist
    axpby(one_minus(hp.momentum), torch._foreach_mul(g, g), hp.momentum, h_grad)
    ratio = torch._foreach_add(h_update, hp.delta)
    torch._foreach_div_(ratio, torch._foreach_add(h_grad, hp.delta))
    torch._foreach_sqrt_(ratio)
    torch._foreach_mul_(g, ratio)
    axpby(one_minus(hp.momentum), torch._foreach_mul(g, g), hp.momentum, h_update)
    if local_rate == 0:
        return None
    torch._foreach_mul_(g, local_rate)
    return g


@register("Adam", histories=2)
def adam(g: Tensors, hist: list[Tensors], hp: Hyper, local_rate: float, it: int) -> Tensors | None:
    m, v = hist
    t = it + 1
    # pow(float, int) is double; the quotient is stored in a float.
    correction = f32(math.sqrt(1.0 - math.pow(hp.momentum2, t)) / (1.0 - math.pow(hp.momentum, t)))
    axpby(one_minus(hp.momentum), g, hp.momentum, m)
    axpby(one_minus(hp.momentum2), torch._foreach_mul(g, g), hp.momentum2, v)
    if local_rate == 0:
        return None
    denom = torch._foreach_sqrt(v)
    torch._foreach_add_(denom, hp.delta)
    update = torch._foreach_div(m, denom)
    torch._foreach_mul_(update, float(f32(local_rate) * correction))
    return update
