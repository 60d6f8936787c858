"""Helpers shared by the layer converters: Caffe's axis canonicalisation and 2-D geometry fields."""
from __future__ import annotations

MAX_AXES = 32  # Caffe's kMaxBlobAxes: the most axes a blob may have


def canonical_axis(layer, axis: int, ndim: int, what: str = "axis") -> int:
    """Caffe's ``CanonicalAxisIndex``: ``-ndim <= axis < ndim``, negative counts from the end."""
    if not -ndim <= axis < ndim:
        from converters.caffe.layers.base import layer_error

        raise layer_error(layer, f"{what} {axis} out of range for a {ndim}-D bottom "
                                 f"(expected {-ndim}..{ndim - 1})")
    return axis % ndim


def spatial_pair(layer, values, h: int | None, w: int | None, default: int, what: str) -> tuple[int, int]:
    """A 2-D size from Caffe's ``what_h``/``what_w`` pair or the repeated/plain ``what`` field.

    ``values`` is the plain field as a list (empty when absent); ``h``/``w`` are the ``_h``/``_w`` fields
    (``None`` when absent). One value applies to both dimensions, two are ``(h, w)``.
    """
    from converters.caffe.layers.base import layer_error

    if h is not None or w is not None:
        if h is None or w is None:
            raise layer_error(layer, f"{what}_h and {what}_w must be given together (found only one)")
        if values:
            raise layer_error(layer, f"either {what} or {what}_h/{what}_w, not both")
        return int(h), int(w)
    values = list(values)
    if not values:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise layer_error(layer, f"expected 1 or 2 values for {what} (2-D only), found {len(values)}: {values}")


def opt(msg, field: str):
    """The value of an optional proto field, or ``None`` when it is not set."""
    return getattr(msg, field) if msg.HasField(field) else None
