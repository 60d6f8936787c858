"""LRN for export: Caffe's ACROSS_CHANNELS LRN as one native ONNX ``LRN`` node.

The TorchScript exporter turns ``F.local_response_norm`` into ~35 primitive nodes. ONNX's ``LRN`` is
exactly Caffe's ACROSS_CHANNELS form: ``y = x / (bias + alpha/size * sum_window x^2)^beta`` with the
window ``[c - floor((size-1)/2), c + ceil((size-1)/2)]``, i.e. Caffe's ``pre_pad = (size-1)/2`` (Caffe
only allows odd sizes, where both conventions and PyTorch's agree). So the layer is replaced, for the
duration of the export, by a module whose autograd function carries an ONNX ``symbolic``.

WITHIN_CHANNEL LRN has no ONNX operator: the Caffe layer module itself is exported, as the primitives
its forward uses (x^2, AveragePool with ``count_include_pad``, Pow, Mul), the same decomposition Caffe
uses internally.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LRNParams:
    size: int
    alpha: float
    beta: float
    k: float
    across_channels: bool


def lrn_params(module: nn.Module) -> LRNParams | None:
    """The LRN parameters of a Caffe LRN module (or ``nn.LocalResponseNorm``); None if it is not one."""
    if isinstance(module, nn.LocalResponseNorm):
        return LRNParams(int(module.size), float(module.alpha), float(module.beta), float(module.k), True)
    names = ("size", "alpha", "beta")
    if not all(hasattr(module, n) for n in names):
        return None
    region = getattr(module, "region", "ACROSS_CHANNELS")
    if isinstance(region, str):
        across = region.upper() in ("ACROSS_CHANNELS", "ACROSS")
    else:  # the caffe.proto enum: ACROSS_CHANNELS = 0, WITHIN_CHANNEL = 1
        across = int(region) == 0
    k = getattr(module, "k", 1.0)
    return LRNParams(int(module.size), float(module.alpha), float(module.beta), float(k), across)


class _LRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size: int, alpha: float, beta: float, k: float):  # noqa: D401
        return F.local_response_norm(x, size, alpha=alpha, beta=beta, k=k)

    @staticmethod
    def symbolic(g, x, size: int, alpha: float, beta: float, k: float):
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class NativeLRN(nn.Module):
    """ACROSS_CHANNELS LRN that exports as a single ONNX ``LRN`` node."""

    def __init__(self, p: LRNParams) -> None:
        super().__init__()
        if p.size % 2 != 1:
            raise ValueError(f"LRN local_size must be odd (as in Caffe), got {p.size}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LRNFunction.apply(x, self.p.size, self.p.alpha, self.p.beta, self.p.k)


LRN_FORMS = ("fast", "native")


def rewrite_lrn(model, form: str = "fast") -> list[str]:
    """Write every ONNX ``LRN`` node of ``model`` (in place) in ``form``; returns notes for the export.

    "native" keeps the one ``LRN`` node (portable; onnxruntime's CPU kernel computes a power per element
    and was AlexNet's slowest operator: a third of its time at batch 1). "fast" writes the same function
    as operators onnxruntime runs with its fast kernels: the squares ``x * x``, the window sum as a 1x1
    convolution whose ``C x C`` band matrix holds ``alpha/size`` (built by ``EyeLike`` from two integers,
    folded at load: nothing stored), plus ``k`` as its bias, then ``x / (t^(1/2) t^(1/4))`` for Caffe's
    ``beta`` 0.75 (``x / sqrt(t)`` for 0.5, ``x / t`` for 1, else ``x * exp(-beta log t)``). Same window
    as Caffe's ACROSS_CHANNELS, float32 rounding apart."""
    import numpy as np
    from onnx import helper, numpy_helper

    if form not in LRN_FORMS:
        raise ValueError(f"LRN form must be one of {', '.join(LRN_FORMS)}, got {form!r}")
    if form == "native" or not any(n.op_type == "LRN" for n in model.graph.node):
        return []
    channels = _channels(model)
    nodes, inits, notes = [], [], []
    mk = helper.make_node
    for node in model.graph.node:
        if node.op_type != "LRN":
            nodes.append(node)
            continue
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        size, alpha, beta, k = int(a["size"]), float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), \
            float(a.get("bias", 1.0))
        x, y, p = node.input[0], node.output[0], f"{node.name}/"
        c = channels.get(x)
        if c is None:
            nodes.append(node)
            notes.append(f"{node.name}: LRN kept as one node (its channel count is not known statically)")
            continue
        half = (size - 1) // 2
        inits += [numpy_helper.from_array(np.array([c, c], np.int64), p + "cc"),
                  numpy_helper.from_array(np.array([c, c, 1, 1], np.int64), p + "w_shape"),
                  numpy_helper.from_array(np.array(alpha / size, np.float32), p + "alpha"),
                  numpy_helper.from_array(np.full(c, k, np.float32), p + "k")]
        band = [mk("ConstantOfShape", [p + "cc"], [p + "zeros"], name=p + "zeros",
                   value=numpy_helper.from_array(np.array([0], np.float32)))]
        diagonals = []
        for d in range(-half, size - half):
            band.append(mk("EyeLike", [p + "zeros"], [f"{p}diag{d}"], name=f"{p}diag{d}", k=d))
            diagonals.append(f"{p}diag{d}")
        band += [mk("Sum", diagonals, [p + "band"], name=p + "band"),
                 mk("Mul", [p + "band", p + "alpha"], [p + "band_a"], name=p + "band_a"),
                 mk("Reshape", [p + "band_a", p + "w_shape"], [p + "window"], name=p + "window")]
        nodes += band + [mk("Mul", [x, x], [p + "sq"], name=p + "square"),
                         mk("Conv", [p + "sq", p + "window", p + "k"], [p + "t"], name=p + "window_sum")]
        nodes += _power(mk, x, y, p, beta, inits, numpy_helper, np)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    return notes + [f"LRN as squares, a 1x1 window convolution and {_how(beta)} (--native-lrn: one LRN node)"]


def _how(beta: float) -> str:
    return {0.75: "two square roots", 0.5: "a square root", 1.0: "a division"}.get(beta, "exp/log")


def _power(mk, x: str, y: str, p: str, beta: float, inits: list, numpy_helper, np) -> list:
    """``y = x * t^(-beta)`` with the cheapest exact operators for Caffe's usual betas."""
    if beta == 0.75:
        return [mk("Sqrt", [p + "t"], [p + "r2"], name=p + "sqrt"),
                mk("Sqrt", [p + "r2"], [p + "r4"], name=p + "sqrt4"),
                mk("Mul", [p + "r2", p + "r4"], [p + "d"], name=p + "t075"),
                mk("Div", [x, p + "d"], [y], name=p + "div")]
    if beta == 0.5:
        return [mk("Sqrt", [p + "t"], [p + "d"], name=p + "sqrt"),
                mk("Div", [x, p + "d"], [y], name=p + "div")]
    if beta == 1.0:
        return [mk("Div", [x, p + "t"], [y], name=p + "div")]
    inits.append(numpy_helper.from_array(np.array(-beta, np.float32), p + "minus_beta"))
    return [mk("Log", [p + "t"], [p + "log"], name=p + "log"),
            mk("Mul", [p + "log", p + "minus_beta"], [p + "e"], name=p + "scale"),
            mk("Exp", [p + "e"], [p + "f"], name=p + "exp"),
            mk("Mul", [x, p + "f"], [y], name=p + "mul")]


def _channels(model) -> dict[str, int]:
    """Static channel counts (dimension 1) of the graph's values, by onnx's shape inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - no shapes: every LRN stays native, and the notes say so
        return {}
    out = {}
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if len(dims) > 1 and dims[1].HasField("dim_value"):
            out[v.name] = int(dims[1].dim_value)
    return out
