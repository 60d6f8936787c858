"""What to quantize and how: one frozen :class:`GridConfig`, validated at construction.

Layers are every Conv/Deconv/InnerProduct weight (:func:`compress.prune.targets.prunable_layers`),
or those named in ``layers`` (exact names or ``fnmatch`` patterns, each of which must match).
``first_last_bits`` keeps the first and the last of the quantized layers (in the net's order) at that
width, a common practice: the first layer sees raw pixels through few weights, the last one decides
the classes. Biases are never quantized (they stay float32).
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from compress.errors import CompressError
from compress.quant.grid import check_bits
from compress.quant.scale import SCALE_METHODS


@dataclass(frozen=True)
class GridConfig:
    bits: int
    per_channel: bool = True
    scale: str = "mse"  # a key of SCALE_METHODS: "mse" (never worse than "max") or "max"
    first_last_bits: int | None = None
    layers: tuple[str, ...] = ()  # names or patterns; empty: every prunable layer

    def __post_init__(self) -> None:
        check_bits(self.bits, "bits")
        if self.first_last_bits is not None:
            check_bits(self.first_last_bits, "first/last layer bits")
        if not isinstance(self.per_channel, bool):
            raise CompressError(f"per_channel must be True or False, got {self.per_channel!r}")
        if self.scale not in SCALE_METHODS:
            raise CompressError(f"unknown scale method {self.scale!r}; "
                                f"choose from {', '.join(SCALE_METHODS)}")
        layers = (self.layers,) if isinstance(self.layers, str) else tuple(self.layers)
        if not all(isinstance(p, str) and p for p in layers):
            raise CompressError(f"layers must be non-empty names or patterns, got {list(layers)!r}")
        object.__setattr__(self, "layers", layers)

    def layer_bits(self, names: Iterable[str]) -> dict[str, int]:
        """``{layer: bits}`` for the selected layers among ``names`` (the prunable layers, in order)."""
        names = list(names)
        if self.layers:
            unmatched = [p for p in self.layers if not fnmatch.filter(names, p)]
            if unmatched:
                raise CompressError(f"no quantizable layer matches {', '.join(map(repr, unmatched))}; the "
                                    f"Convolution/Deconvolution/InnerProduct layers are: {', '.join(names)}")
            names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in self.layers)]
        if not names:
            raise CompressError("no layer to quantize (no Convolution, Deconvolution or InnerProduct layer)")
        bits = {n: self.bits for n in names}
        if self.first_last_bits is not None:
            bits[names[0]] = bits[names[-1]] = self.first_last_bits
        return bits

    def as_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d
