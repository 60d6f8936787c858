"""Input and data layers: they declare the net's input blobs instead of computing anything.

The net builder (``converters/caffe/builder.py``) turns ``Input`` layers, the legacy
``input``/``input_dim``/``input_shape`` declarations and train_val data layers (``Data``,
``ImageData``, ``MemoryData``...) into entries of ``CaffeNet.inputs``; they never become modules.
They are registered here so that ``supported_types()`` lists them and ``check_supported`` accepts
them. ``input_shape_of`` says which shape a data layer's first top has, from its own parameters.
"""
from __future__ import annotations

from converters.caffe.layers.base import layer_error, register

# Types whose tops are net inputs. Their first top is the data; further tops (the label) only
# feed training-only layers, which the builder drops.
DATA_TYPES = ("Data", "ImageData", "MemoryData", "HDF5Data", "DummyData", "WindowData")
INPUT_TYPES = ("Input", *DATA_TYPES)


@register(*INPUT_TYPES)
def build_input(layer, bottoms):
    raise not_a_module(layer)


def not_a_module(layer):
    return layer_error(layer, "input and data layers are turned into net inputs by the net builder, "
                              "not built as modules")


def input_param_shapes(layer) -> list[tuple[int, ...]]:
    """The shapes of an ``Input`` layer's tops: one shape per top, or one shape shared by all."""
    shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
    tops = list(layer.top)
    if len(shapes) == 1 and len(tops) > 1:
        shapes = shapes * len(tops)
    if len(shapes) != len(tops):
        raise layer_error(layer, f"input_param declares {len(shapes)} shape(s) for {len(tops)} top(s)")
    return shapes


def data_shape(layer) -> tuple[tuple[int | None, ...], str]:
    """(shape, where) of a data layer's first top; ``None`` marks a dimension the definition leaves
    open (e.g. the channels of images in an LMDB). ``where`` names the source for messages."""
    t = layer.type
    crop = int(layer.transform_param.crop_size) if layer.HasField("transform_param") else 0
    if t == "MemoryData":
        p = layer.memory_data_param
        return (p.batch_size or 1, p.channels or None, p.height or None, p.width or None), "memory_data_param"
    if t == "DummyData":
        p = layer.dummy_data_param
        if p.shape:
            return tuple(int(d) for d in p.shape[0].dim), "dummy_data_param"
        dims = [list(p.num), list(p.channels), list(p.height), list(p.width)]
        return tuple((d[0] if d else None) for d in dims), "dummy_data_param"
    if t == "ImageData":
        p = layer.image_data_param
        crop = crop or int(p.crop_size)
        h, w = (crop, crop) if crop else (p.new_height or None, p.new_width or None)
        return (p.batch_size or 1, 3 if p.is_color else 1, h, w), f"image list {p.source!r}"
    if t == "WindowData":
        p = layer.window_data_param
        crop = crop or int(p.crop_size)
        return (p.batch_size or 1, 3, crop or None, crop or None), f"window file {p.source!r}"
    if t == "Data":
        p = layer.data_param
        crop = crop or int(p.crop_size)
        return (p.batch_size or 1, None, crop or None, crop or None), f"database {p.source!r}"
    if t == "HDF5Data":
        p = layer.hdf5_data_param
        return (p.batch_size or 1, None, None, None), f"HDF5 list {p.source!r}"
    raise layer_error(layer, f"not a data layer type (expected one of {', '.join(DATA_TYPES)})")


def label_shapes(layer, batch: int) -> list[tuple[int, ...] | None]:
    """Shapes of a data layer's tops after the first (the label), as the layer's ``DataLayerSetUp``
    reshapes them: ``(batch,)`` for Data, ImageData, WindowData and MemoryData, the declared shapes
    for DummyData; ``None`` where only the data can tell (HDF5Data datasets)."""
    extra = len(layer.top) - 1
    if extra <= 0:
        return []
    if layer.type in ("Data", "ImageData", "WindowData", "MemoryData"):
        if extra > 1:
            raise layer_error(layer, f"expected at most 2 tops (data, label), found {len(layer.top)}")
        return [(batch,)]
    if layer.type == "DummyData":
        p = layer.dummy_data_param
        if p.shape:
            shapes = [tuple(int(d) for d in s.dim) for s in p.shape]
            return [_per_top(layer, "shape", shapes, i) for i in range(1, len(layer.top))]
        dims = {"num": p.num, "channels": p.channels, "height": p.height, "width": p.width}
        return [tuple(int(_per_top(layer, f, list(v), i)) for f, v in dims.items())
                for i in range(1, len(layer.top))]
    return [None] * extra


def _per_top(layer, field: str, values: list, i: int):
    """DummyData's ``field`` for top ``i``: given once for all tops, or once per top (Caffe's CHECKs)."""
    if len(values) not in (1, len(layer.top)):
        raise layer_error(layer, f"dummy_data_param.{field} must be given once or once per top "
                                 f"({len(layer.top)}), found {len(values)}")
    return values[0 if len(values) == 1 else i]
