"""The project's model file, and how a model named on the command line is found.

A model file is a ``.pt`` written by ``torch.save`` of plain data only, so it loads with
``torch.load(weights_only=True)`` (no code runs)::

    {"format": "compress-model", "version": 1,
     "netdef": <deploy prototxt text>,
     "blobs": {layer name: [tensor, ...]},   # Caffe layout, float32
     "meta": <JSON text>}

``load_model(spec)`` accepts, in this order: an existing path (a model file, a ``.caffemodel``, or a
``.prototxt`` alone for untrained weights), else a zoo name (``lenet``, ``alexnet``). A
``.caffemodel`` takes its definition from ``prototxt``, else from a ``.prototxt`` beside it with the
same stem, else from the zoo net whose layer names and blob shapes match it.
"""
from __future__ import annotations

import datetime
import errno
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from compress.errors import CompressError

FORMAT = "compress-model"
VERSION = 1

log = logging.getLogger("compress")


@dataclass
class Model:
    net: object  # converters.caffe.CaffeNet
    meta: dict = field(default_factory=dict)
    path: str | None = None


def load_model(spec: str | os.PathLike, prototxt: str | os.PathLike | None = None, *,
               input_shapes: dict[str, tuple[int, ...]] | None = None) -> Model:
    """Load a model file, a ``.caffemodel`` (+ prototxt), a ``.prototxt``, or a zoo model by name.

    ``input_shapes`` completes a train_val definition whose data layer leaves the shape open.
    """
    import zoo

    path = Path(spec)
    if prototxt is not None and path.suffix.lower() != ".caffemodel":
        raise CompressError(f"--prototxt applies to a .caffemodel, but {spec} is not one "
                            "(model files, prototxts and zoo models carry their own definition)")
    if not path.exists():
        if str(spec) in zoo.ZOO:
            return _from_zoo(zoo.get(str(spec)))
        if path.suffix.lower() in (".caffemodel", ".pt", ".prototxt") or os.sep in str(spec):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(spec))
        raise CompressError(f"no such model file or zoo name: {str(spec)!r} "
                            f"(the zoo has: {', '.join(zoo.names())})")
    if path.is_dir():
        raise CompressError(f"{spec} is a directory; expected a model file, a .caffemodel or a zoo name")
    suffix = path.suffix.lower()
    if suffix == ".caffemodel":
        return _from_caffemodel(path, prototxt, input_shapes)
    if suffix == ".prototxt":
        from converters import caffe

        net = caffe.load(path, input_shapes=input_shapes)
        log.warning("%s: a definition without weights; weights are initialized, not trained", spec)
        return Model(net, _meta_from_build(net, {"source": str(path), "initialized": True}), str(path))
    return read_model_file(path)


def save_model(path: str | os.PathLike, net, meta: dict | None = None) -> None:
    """Write ``net`` and ``meta`` as a model file, atomically (an existing file stays intact on error)."""
    import torch

    from converters.atomic import atomic_open, check_output_path
    from converters.caffe import caffe_blobs

    check_output_path(path)
    meta = dict(meta or {})
    meta.setdefault("created", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    try:
        meta_text = json.dumps(meta, sort_keys=True, default=_jsonable)
    except (TypeError, ValueError) as e:
        raise CompressError(f"model meta cannot be stored as JSON: {e}") from None
    blobs = {name: [torch.from_numpy(a) for a in arrays] for name, arrays in caffe_blobs(net).items()}
    data = {"format": FORMAT, "version": VERSION, "netdef": net.netdef, "blobs": blobs, "meta": meta_text}
    with atomic_open(path, "wb") as f:
        torch.save(data, f)


def read_model_file(path: str | os.PathLike) -> Model:
    """Load a model file; anything else (another ``.pt``, a corrupt file) is a clear CompressError."""
    import torch

    from converters.caffe.builder import build_net
    from converters.caffe.prototxt import parse_net_text

    expected = "expected a model file written by `compress convert` or `compress prune`"
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means "not our file"; say why briefly
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CompressError(f"{path}: not a readable model file ({expected}; torch.load: {first})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = f"keys {sorted(map(str, data))[:6]}" if isinstance(data, dict) else type(data).__name__
        raise CompressError(f"{path}: not a compress model file ({expected}, with format {FORMAT!r}; "
                            f"found {found})")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CompressError(f"{path}: model file version {version!r}, this tool reads up to {VERSION} "
                            "(written by a newer compress?)")
    for key, kind in (("netdef", str), ("blobs", dict), ("meta", str)):
        if not isinstance(data.get(key), kind):
            raise CompressError(f"{path}: corrupt model file: {key!r} should be a {kind.__name__}, "
                                f"found {type(data.get(key)).__name__}")
    try:
        meta = json.loads(data["meta"])
    except ValueError as e:
        raise CompressError(f"{path}: corrupt model file: meta is not JSON ({e})") from None
    net = build_net(parse_net_text(data["netdef"], filename=f"{path} (net definition)"), data["blobs"],
                    source=f"model file {path}")
    return Model(net, meta, str(path))


def _from_zoo(entry) -> Model:
    from converters import caffe

    meta = {"source": f"zoo:{entry.name}", "zoo": entry.name, "preprocess": dict(entry.preprocess)}
    if entry.has_weights:
        net = caffe.load(entry.prototxt, entry.weights)
    else:
        net = caffe.load(entry.prototxt)
        log.warning("%s: no trained weights ship with the zoo; weights are initialized (untrained)",
                    entry.name)
        meta["initialized"] = True
    return Model(net, meta, None)


def _from_caffemodel(path: Path, prototxt, input_shapes=None) -> Model:
    from converters import caffe

    if prototxt is None and path.with_suffix(".prototxt").is_file():
        prototxt = path.with_suffix(".prototxt")
    if prototxt is not None:
        net = caffe.load(prototxt, path, input_shapes=input_shapes)
        return Model(net, _meta_from_build(net, {"source": str(path), "prototxt": str(prototxt)}), str(path))
    return _match_zoo(path)


def _match_zoo(path: Path) -> Model:
    """The zoo net whose layer names and blob shapes match the caffemodel's weights."""
    import zoo
    from converters.caffe.builder import build_net
    from converters.caffe.prototxt import read_net_text
    from converters.caffe.reader import read_caffemodel
    from converters.errors import ConversionError

    model = read_caffemodel(path)
    for entry in zoo.ZOO.values():
        definition = read_net_text(entry.prototxt)
        weighted = {layer.name for layer in definition.layer
                    if layer.type in ("Convolution", "InnerProduct", "Deconvolution")}
        if not weighted or not weighted <= set(model.blobs):
            continue
        try:
            net = build_net(definition, model.blobs, source=f"caffemodel {path}")
        except ConversionError:
            continue
        log.info("%s: weights match the zoo net %r; using its definition", path, entry.name)
        meta = {"source": str(path), "zoo": entry.name, "preprocess": dict(entry.preprocess)}
        return Model(net, meta, str(path))
    first = list(model.blobs.items())[:4]
    layers = ", ".join(f"{name} {'x'.join(map(str, b[0].shape))}" for name, b in first)
    raise CompressError(f"{path}: no net definition found: pass --prototxt NET.prototxt (no "
                        f"{path.with_suffix('.prototxt').name} beside it, and no zoo net "
                        f"({', '.join(zoo.names())}) matches its weights: {layers or 'none'})")


def _meta_from_build(net, meta: dict) -> dict:
    """Add ``preprocess`` from a train_val data layer's ``transform_param`` when the net had one."""
    t = getattr(getattr(net, "build_report", None), "transform", None)
    if t:
        channels = next(iter(net.inputs.values()))[1] if net.inputs else 3
        pre = {"scale": float(t["scale"]), "mean": [float(v) for v in t["mean_value"]] or None,
               "channel_order": "BGR" if channels == 3 else "gray"}
        if t.get("mean_file"):
            pre["mean_file"] = t["mean_file"]
        meta["preprocess"] = pre
    return meta


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
