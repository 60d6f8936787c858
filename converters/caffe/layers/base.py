"""The layer registry: one converter per Caffe layer type (STYLE.md: registries keyed by names).

A converter is a function ``build(layer: LayerParameter, bottoms: list[Tensor]) -> nn.Module``.
``bottoms`` are tensors on the ``meta`` device with the bottom blobs' shapes, so a converter can read
channel counts and spatial sizes without any data; the net builder runs the returned module on them
to infer the top shapes. The module's ``forward`` takes the bottom tensors as positional arguments and
returns one tensor, or a tuple of tensors for layers with several tops.

Modules that own Caffe blobs derive from :class:`CaffeBlobs`: it maps between Caffe's blob layout
(order and shapes exactly as in a ``.caffemodel``) and the module's parameters/buffers, which is all
that reading and writing ``.caffemodel`` files needs.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from converters.caffe.names import bare, cut, listed, shown
from converters.errors import ConversionError, UnsupportedLayerError

if TYPE_CHECKING:  # torch is imported by the converter modules, not here: ``layer_error``, the
    import torch  # registry's names and the input helpers serve the torch-free shape inference too

Builder = Callable[..., Any]  # (layer, bottoms) -> nn.Module
_REGISTRY: dict[str, Builder] = {}


def register(*layer_types: str) -> Callable[[Builder], Builder]:
    """Register ``fn`` as the converter for each (current-format) Caffe type name."""

    def deco(fn: Builder) -> Builder:
        for t in layer_types:
            if t in _REGISTRY:
                raise RuntimeError(f"layer type {t!r} registered twice")
            _REGISTRY[t] = fn
        return fn

    return deco


def supported_types() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def builder_for(layer_type: str) -> Builder:
    _load_all()
    try:
        return _REGISTRY[layer_type]
    except KeyError:
        raise unsupported(layer_type, _REGISTRY) from None


def check_supported(types: list[tuple[str, str]]) -> None:
    """Raise one error naming every (layer name, type) pair that has no converter."""
    _load_all()
    check_types(types, _REGISTRY)


def unsupported(layer_type: str, supported) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"unsupported layer type {shown(layer_type)}; supported: {', '.join(sorted(supported))}")


def check_types(types: list[tuple[str, str]], supported) -> None:
    """One error naming every (layer name, type) pair whose type is not in ``supported`` (a registry:
    the converters', or the torch-free shape inference's, which has the same names)."""
    missing = [(name, t) for name, t in types if t not in supported]
    if missing:
        layers = listed((f"{bare(name)} ({bare(t)})" for name, t in missing), show=str)
        kinds = sorted({t for _, t in missing})
        raise UnsupportedLayerError(
            f"unsupported layer type{'s' if len(kinds) > 1 else ''} {listed(kinds)} in: {layers}; "
            f"supported: {', '.join(sorted(supported))}"
        )


class CaffeBlobs:
    """Mixin for modules that hold Caffe blobs (weights, biases, BatchNorm statistics...)."""

    def caffe_blob_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the layer's blobs, in Caffe order and layout."""
        return [tuple(b.shape) for b in self.get_caffe_blobs()]

    def get_caffe_blobs(self) -> list[torch.Tensor]:
        """The blobs in Caffe's order and layout (detached; may share storage with parameters)."""
        raise NotImplementedError

    def set_caffe_blobs(self, blobs: list[torch.Tensor]) -> None:
        """Copy blobs (already checked against ``caffe_blob_shapes``) into parameters/buffers."""
        raise NotImplementedError


def layer_error(layer, message: str) -> ConversionError:
    """A ConversionError that names the layer: ``layer 'conv1' (Convolution): <message>`` (a long name
    is cut, see ``names.shown``)."""
    return ConversionError(f"layer {shown(layer.name)} ({bare(layer.type)}): {cut(message, 600)}")


def _load_all() -> None:
    """Import every converter module of the package once (each registers its types)."""
    global _LOADED
    if _LOADED:
        return
    import converters.caffe.layers as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _LOADED = True


_LOADED = False


def tracing() -> bool:
    """Whether a script, trace, ONNX export or compile is running (which must see plain ops, not the
    fast paths' layout changes). ``torch.onnx`` is asked only once it is loaded (importing it costs
    0.1 s of start-up; while it is not loaded, no ONNX export runs). Torch is imported here, not at the
    top: this module is read without it (shape inference)."""
    import torch

    onnx = sys.modules.get("torch.onnx")
    return (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or (onnx is not None and onnx.is_in_onnx_export()))


def is_channels_last(x) -> bool:
    """Whether ``x`` is a 4-d tensor stored channels-last and not also contiguous (a fast path's
    output: :mod:`converters.caffe.layers.conv`, :mod:`converters.caffe.layers.pooling`)."""
    import torch

    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
