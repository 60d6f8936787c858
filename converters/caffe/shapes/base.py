"""The shape registry: one pure function per Caffe layer type, without torch (STYLE.md: registries keyed
by names).

A shape function is ``shapes(layer: LayerParameter, bottoms: list[tuple[int, ...]]) -> LayerShapes``:
from the layer's parameters and its bottom shapes, the shapes of its tops and of its Caffe blobs (in
Caffe's order and layout, as ``CaffeBlobs.caffe_blob_shapes`` gives them): Caffe's ``LayerSetUp`` +
``Reshape``. It checks the parameters exactly as the torch converter of the same type does, mostly
with the same code (the converters in ``converters/caffe/layers/`` call the parameter checks of this
package), so both refuse a bad layer with the same one-line error. Where the converter leaves a
check to torch (a kernel larger than its padded input), the function says so in its own words after
the converter's prefix ``cannot be built for bottom shape(s) ...``.

The registry holds the same type names as the converters' (a test compares them), so the torch-free
plan (``plan.py``) accepts and refuses exactly the nets the torch builder does.
"""
from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from converters.caffe.layers.base import check_types, layer_error, unsupported
from converters.caffe.netinit import check_top_count, fmt_shape
from converters.errors import ConversionError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerShapes:
    """A layer's top shapes (one per top) and its Caffe blob shapes (none for most layers)."""

    tops: tuple[Shape, ...]
    blobs: tuple[Shape, ...] = ()

    @property
    def params(self) -> int:
        """Elements of the layer's blobs (weights, biases, statistics)."""
        return sum(math.prod(shape) for shape in self.blobs)


ShapeFn = Callable[[Any, list[Shape]], LayerShapes]
_REGISTRY: dict[str, ShapeFn] = {}


def register(*layer_types: str) -> Callable[[ShapeFn], ShapeFn]:
    """Register ``fn`` as the shape function of each (current-format) Caffe type name."""

    def deco(fn: ShapeFn) -> ShapeFn:
        for t in layer_types:
            if t in _REGISTRY:
                raise RuntimeError(f"layer type {t!r} has two shape functions")
            _REGISTRY[t] = fn
        return fn

    return deco


def supported_types() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def check_supported(types: list[tuple[str, str]]) -> None:
    """One error naming every (layer name, type) pair without a shape function (the builder's message)."""
    _load_all()
    check_types(types, _REGISTRY)


def layer_shapes(layer, bottoms: list[Shape]) -> LayerShapes:
    """The shapes of ``layer`` on ``bottoms``; a ConversionError names the layer when it cannot be
    built (the torch builder's message where the check is shared)."""
    _load_all()
    fn = _REGISTRY.get(layer.type)
    if fn is None:
        raise unsupported(layer.type, _REGISTRY)
    bottoms = [tuple(int(d) for d in b) for b in bottoms]
    try:
        out = fn(layer, bottoms)
    except ConversionError:
        raise
    except (ValueError, TypeError, IndexError, OverflowError) as e:  # as the builder reports them
        raise cannot_build(layer, bottoms, " ".join(str(e).split()) or type(e).__name__) from None
    check_top_count(layer, len(out.tops))
    return out


def cannot_build(layer, bottoms: list[Shape], reason: str) -> ConversionError:
    """The builder's error for a layer whose module fails on its bottoms (torch's own check)."""
    shown_shapes = ", ".join(fmt_shape(b) for b in bottoms) or "none"
    return layer_error(layer, f"cannot be built for bottom shape(s) {shown_shapes}: {reason}")


def one_bottom(layer, bottoms: list[Shape]) -> Shape:
    if len(bottoms) != 1:
        raise layer_error(layer, f"expected 1 bottom, found {len(bottoms)}")
    return bottoms[0]


def same(layer, bottoms: list[Shape]) -> LayerShapes:
    """One bottom, one top of its shape: the element-wise layers."""
    return LayerShapes((one_bottom(layer, bottoms),))


def _load_all() -> None:
    """Import every shape module of the package once (each registers its types)."""
    global _LOADED
    if _LOADED:
        return
    import converters.caffe.shapes as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _LOADED = True


_LOADED = False
