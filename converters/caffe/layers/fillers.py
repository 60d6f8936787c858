"""Caffe's weight fillers (``FillerParameter``), applied to blobs in Caffe layout.

Used when a net is built without a caffemodel. The fan-in/fan-out of ``xavier`` and ``msra`` are
Caffe's: ``count / shape[0]`` and ``count / shape[1]`` of the blob in Caffe layout (so an InnerProduct
with ``transpose: true`` or a Deconvolution fills exactly as Caffe does).

Parameters Caffe refuses (``include/caffe/filler.hpp``, ``caffe_rng_*`` in ``math_functions.cpp``) are
refused here too, as a ValueError naming the field, before any value is drawn: an unknown type,
``sparse`` on any filler but ``gaussian`` (where ``sparse / num_outputs`` must be a probability),
``std <= 0``, ``min > max``, ``bilinear`` on a blob that is not a square 4-D kernel. Values that are
NaN or infinite would fill the net with NaN or infinity and are refused as well. The builder runs
the fillers on the meta device while planning (nothing drawn), so these errors name the layer and come
before any allocation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from converters.caffe.names import shown

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

    @torch.no_grad()
    def fill_(self, blob: torch.Tensor) -> torch.Tensor:
        """Fill ``blob`` (Caffe layout, possibly a view of a parameter) in place."""
        self.check(tuple(blob.shape))
        _FILLS[self.type](self, blob)
        return blob

    def check(self, shape: tuple[int, ...]) -> None:
        """Raise ValueError if Caffe would refuse to fill a blob of ``shape`` with this filler."""
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
        raise ValueError(f"{self.field} ({shown(self.type)}): {message}")


_VALUES = {"constant": ("value",), "uniform": ("min", "max"), "gaussian": ("mean", "std")}


def filler_of(param, field: str) -> Filler | None:
    """The filler ``param.<field>`` if the prototxt sets it, else ``None`` (caller picks a default)."""
    return Filler.from_proto(getattr(param, field), field) if param.HasField(field) else None


def _fans(blob: torch.Tensor) -> tuple[int, int]:
    count = blob.numel()
    fan_in = count // blob.shape[0] if blob.dim() > 0 and blob.shape[0] else count
    fan_out = count // blob.shape[1] if blob.dim() > 1 and blob.shape[1] else count
    return fan_in, fan_out


def _n(f: Filler, blob: torch.Tensor) -> float:
    fan_in, fan_out = _fans(blob)
    return {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2.0}[f.variance_norm]


def _constant(f: Filler, blob: torch.Tensor) -> None:
    blob.fill_(f.value)


def _uniform(f: Filler, blob: torch.Tensor) -> None:
    blob.uniform_(f.min, f.max)


def _gaussian(f: Filler, blob: torch.Tensor) -> None:
    blob.normal_(f.mean, f.std)
    if f.sparse >= 0 and blob.dim() > 0:  # Caffe: keep each weight with probability sparse / num_outputs
        keep = torch.rand_like(blob) < f.sparse / blob.shape[0]
        blob.mul_(keep)


def _xavier(f: Filler, blob: torch.Tensor) -> None:
    scale = math.sqrt(3.0 / _n(f, blob))
    blob.uniform_(-scale, scale)


def _msra(f: Filler, blob: torch.Tensor) -> None:
    blob.normal_(0.0, math.sqrt(2.0 / _n(f, blob)))


def _positive_unitball(f: Filler, blob: torch.Tensor) -> None:
    blob.uniform_(0.0, 1.0)
    rows = blob.view(blob.shape[0], -1) if blob.dim() > 0 else blob.view(1, -1)
    rows.div_(rows.sum(dim=1, keepdim=True))


def _bilinear(f: Filler, blob: torch.Tensor) -> None:
    # Caffe's BilinearFiller, for Deconvolution upsampling kernels (kh == kw).
    h, w = blob.shape[-2], blob.shape[-1]
    fw = math.ceil(w / 2.0)
    c = (2 * fw - 1 - fw % 2) / (2.0 * fw)
    x = torch.arange(w, dtype=torch.float64)
    y = torch.arange(h, dtype=torch.float64)
    k = (1 - (y / fw - c).abs())[:, None] * (1 - (x / fw - c).abs())[None, :]
    blob.copy_(k.to(blob.dtype).expand_as(blob))


_FILLS = {"constant": _constant, "uniform": _uniform, "gaussian": _gaussian, "xavier": _xavier,
          "msra": _msra, "positive_unitball": _positive_unitball, "bilinear": _bilinear}
