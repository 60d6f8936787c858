"""Caffe's weight fillers (``FillerParameter``, BVLC ``filler.hpp``), applied to blobs in Caffe layout.

Used when a net is built without a caffemodel, and by the phase nets for every blob (Caffe fills all
blobs, then copies the trained ones over them). The fan-in/fan-out of ``xavier`` and ``msra`` are
Caffe's: ``count / shape[0]`` and ``count / shape[1]`` of the blob in Caffe layout (so an InnerProduct
with ``transpose: true`` or a Deconvolution fills exactly as Caffe does); ``xavier`` draws from
``U(-sqrt(3 / n), sqrt(3 / n))``, ``msra`` from ``N(0, 2 / n)``, with ``n`` the fan-in unless
``variance_norm`` says FAN_OUT or AVERAGE. Random fillers draw from the ``generator`` given to
``fill_`` (a seeded ``torch.Generator`` makes a net's initialization repeatable: Caffe's
``random_seed``), else from torch's global generator. :func:`caffe_blob_fillers` gives the filler Caffe
uses for each blob of a layer, its defaults included (constant 0 for convolution and inner-product
weights without a ``weight_filler``).

Parameters Caffe refuses (``include/caffe/filler.hpp``, ``caffe_rng_*`` in ``math_functions.cpp``) are
refused here too, as a ConversionError (a ValueError) naming the field, before any value is drawn: an
unknown type, ``sparse`` on any filler but ``gaussian`` (where ``sparse / num_outputs`` must be a
probability), ``std <= 0``, ``min > max``, ``bilinear`` on a blob that is not a square 4-D kernel.
Values that are NaN or infinite would fill the net with NaN or infinity and are refused as well. The
builder runs the fillers on the meta device while planning (nothing drawn), so these errors name the
layer and come before any allocation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from converters.caffe.names import shown
from converters.errors import ConversionError

if TYPE_CHECKING:  # torch and numpy are imported where values are drawn: checking a filler (what the
    import torch  # torch-free shape inference does) needs neither

_NORM = {0: "FAN_IN", 1: "FAN_OUT", 2: "AVERAGE"}


@dataclass(frozen=True)
class Filler:
    type: str = "constant"
    value: float = 0.0
    min: float = 0.0
    max: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    sparse: int = -1
    variance_norm: str = "FAN_IN"
    field: str = "filler"  # where it comes from (``weight_filler``), for messages

    @classmethod
    def from_proto(cls, msg, field: str = "filler") -> Filler:
        return cls(type=msg.type, value=msg.value, min=msg.min, max=msg.max, mean=msg.mean, std=msg.std,
                   sparse=msg.sparse, variance_norm=_NORM.get(int(msg.variance_norm), "FAN_IN"), field=field)

    def fill_(self, blob: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fill ``blob`` (Caffe layout, possibly a view of a parameter) in place."""
        import torch

        self.check(tuple(blob.shape))
        with torch.no_grad():
            _FILLS[self.type](self, blob, generator)
        return blob

    def check(self, shape: tuple[int, ...]) -> None:
        """Raise ConversionError if Caffe would refuse to fill a blob of ``shape`` with this filler."""
        if self.type not in _FILLS:
            self._refuse(f"unknown filler type; supported: {', '.join(sorted(_FILLS))}")
        for name in _VALUES.get(self.type, ()):
            if not math.isfinite(getattr(self, name)):
                self._refuse(f"{name} must be a finite number, found {getattr(self, name)}")
        if self.type != "gaussian" and self.sparse != -1:
            self._refuse(f"sparse is supported by the gaussian filler only, found sparse: {self.sparse}")
        if self.type == "uniform" and self.min > self.max:
            self._refuse(f"min {self.min} is greater than max {self.max}")
        if self.type == "gaussian":
            if not self.std > 0:
                self._refuse(f"std must be positive, found {self.std}")
            if self.sparse < -1 or (self.sparse >= 0 and (not shape or self.sparse > shape[0])):
                outputs = shape[0] if shape else "none"
                self._refuse(f"sparse must be -1 or 0..num_outputs ({outputs}), found {self.sparse}")
        if self.type == "bilinear" and (len(shape) != 4 or shape[2] != shape[3]):
            self._refuse(f"needs a 4-D blob with a square kernel, found shape {tuple(shape)}")

    def _refuse(self, message: str):
        raise ConversionError(f"{self.field} ({shown(self.type)}): {message}")


_VALUES = {"constant": ("value",), "uniform": ("min", "max"), "gaussian": ("mean", "std")}


def filler_of(param, field: str) -> Filler | None:
    """The filler ``param.<field>`` if the prototxt sets it, else ``None`` (caller picks a default)."""
    return Filler.from_proto(getattr(param, field), field) if param.HasField(field) else None


def _fans(blob: torch.Tensor) -> tuple[int, int]:
    count = blob.numel()
    fan_in = count // blob.shape[0] if blob.dim() > 0 and blob.shape[0] else count
    fan_out = count // blob.shape[1] if blob.dim() > 1 and blob.shape[1] else count
    return fan_in, fan_out


def _scale(f: Filler, blob: torch.Tensor, numerator: float) -> float:
    """``sqrt(numerator / n)`` in float as Caffe computes it (``n``: fan-in, fan-out or their mean)."""
    import numpy as np

    fan_in, fan_out = _fans(blob)
    n = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2.0}[f.variance_norm]
    return float(np.sqrt(np.float32(numerator) / np.float32(n)))


def _constant(f: Filler, blob: torch.Tensor, g) -> None:
    blob.fill_(f.value)


def _uniform(f: Filler, blob: torch.Tensor, g) -> None:
    blob.uniform_(f.min, f.max, generator=g)


def _gaussian(f: Filler, blob: torch.Tensor, g) -> None:
    blob.normal_(f.mean, f.std, generator=g)
    import torch

    if f.sparse >= 0 and blob.dim() > 0:  # Caffe: keep each weight with probability sparse / num_outputs
        p = f.sparse / blob.shape[0]
        blob.mul_(torch.rand(blob.shape, generator=g, dtype=blob.dtype, device=blob.device) < p)


def _xavier(f: Filler, blob: torch.Tensor, g) -> None:
    scale = _scale(f, blob, 3.0)
    blob.uniform_(-scale, scale, generator=g)


def _msra(f: Filler, blob: torch.Tensor, g) -> None:
    blob.normal_(0.0, _scale(f, blob, 2.0), generator=g)


def _positive_unitball(f: Filler, blob: torch.Tensor, g) -> None:
    # Caffe: uniform(0, 1), then each of the shape[0] rows divided by its sum.
    import torch

    num = blob.shape[0] if blob.dim() else 1
    rows = torch.rand(blob.numel(), generator=g, dtype=blob.dtype, device=blob.device).view(num, -1)
    blob.copy_((rows / rows.sum(dim=1, keepdim=True)).view(blob.shape))


def _bilinear(f: Filler, blob: torch.Tensor, g) -> None:
    # Caffe's BilinearFiller (since 2017), for Deconvolution upsampling kernels: f = ceil(K / 2),
    # c = (K - 1) / (2 f), w[y, x] = (1 - |x / f - c|) (1 - |y / f - c|) for every (out, in) pair.
    import torch

    if blob.dim() != 4 or blob.shape[-1] != blob.shape[-2]:
        raise ConversionError(f"the bilinear filler needs a 4-D blob with square kernels, found "
                              f"shape {tuple(blob.shape)}")
    k = blob.shape[-1]
    fk = math.ceil(k / 2.0)
    c = (k - 1) / (2.0 * fk)
    c32 = torch.tensor(c, dtype=torch.float32)  # Caffe computes in float: c is stored as a float
    t = 1 - (torch.arange(k, dtype=torch.float32) / fk - c32).abs()
    blob.copy_((t[:, None] * t[None, :]).to(blob.dtype).expand_as(blob))


_FILLS = {"constant": _constant, "uniform": _uniform, "gaussian": _gaussian, "xavier": _xavier,
          "msra": _msra, "positive_unitball": _positive_unitball, "bilinear": _bilinear}


# -- the filler of every blob of a layer, Caffe's defaults included ------------------------------------

def _weight_and_bias(param) -> list[Filler]:
    # Convolution/Deconvolution/InnerProduct: FillerParameter's defaults are constant 0 for both.
    fillers = [Filler.from_proto(param.weight_filler, "weight_filler")]
    return fillers + [Filler.from_proto(param.bias_filler, "bias_filler")] if param.bias_term else fillers


def _scale_fillers(layer) -> list[Filler]:
    p = layer.scale_param
    scale = [filler_of(p, "filler") or Filler(value=1.0)] if len(layer.bottom) == 1 else []
    return scale + ([Filler.from_proto(p.bias_filler, "bias_filler")] if p.bias_term else [])


_LAYER_FILLERS = {
    "Convolution": lambda layer: _weight_and_bias(layer.convolution_param),
    "Deconvolution": lambda layer: _weight_and_bias(layer.convolution_param),
    "InnerProduct": lambda layer: _weight_and_bias(layer.inner_product_param),
    "Scale": _scale_fillers,
    "PReLU": lambda layer: [filler_of(layer.prelu_param, "filler") or Filler(value=0.25)],
    "BatchNorm": lambda layer: [Filler(), Filler(), Filler()],  # Caffe zeroes the three statistics blobs
}


def caffe_blob_fillers(layer) -> list[Filler]:
    """The filler Caffe's ``LayerSetUp`` applies to each blob of ``layer`` (a ``LayerParameter``), in
    blob order: the prototxt's where it names one, else the layer's default."""
    fn = _LAYER_FILLERS.get(layer.type)
    if fn is None:
        raise ConversionError(f"layer {layer.name!r} ({layer.type}): no Caffe fillers are known for its "
                              f"blobs (known: {', '.join(sorted(_LAYER_FILLERS))})")
    return fn(layer)
