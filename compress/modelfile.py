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
from converters.errors import ConversionError

FORMAT = "compress-model"
VERSION = 1

log = logging.getLogger("compress")


@dataclass
class Model:
    net: object  # converters.caffe.CaffeNet
    meta: dict = field(default_factory=dict)
    path: str | None = None


@dataclass(frozen=True)
class Located:
    """What a model named on the command line is, before anything is read (:func:`locate`)."""

    kind: str  # "zoo", "caffemodel", "prototxt" or "model file"
    path: Path | None  # None for a zoo name
    entry: object = None  # the zoo.ZooEntry of a zoo name
    # a .caffemodel's definition: the one given or the one beside it (None: the zoo net its weights match)
    prototxt: str | os.PathLike | None = None


def locate(spec: str | os.PathLike, prototxt: str | os.PathLike | None = None) -> Located:
    """Resolve ``spec`` as :func:`load_model` does, reading no file: an existing path (by its suffix),
    else a zoo name. The errors are load_model's (no such file or zoo name, a directory, ``--prototxt``
    for something that is not a ``.caffemodel``)."""
    import zoo

    path = Path(spec)
    if prototxt is not None and path.suffix.lower() != ".caffemodel":
        raise CompressError(f"--prototxt applies to a .caffemodel, but {spec} is not one "
                            "(model files, prototxts and zoo models carry their own definition)")
    if not path.exists():
        if str(spec) in zoo.ZOO:
            return Located("zoo", None, zoo.get(str(spec)))
        if path.suffix.lower() in (".caffemodel", ".pt", ".prototxt") or os.sep in str(spec):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(spec))
        raise CompressError(f"no such model file or zoo name: {str(spec)!r} "
                            f"(the zoo has: {', '.join(zoo.names())})")
    if path.is_dir():
        raise CompressError(f"{spec} is a directory; expected a model file, a .caffemodel or a zoo name")
    suffix = path.suffix.lower()
    if suffix == ".caffemodel":
        if prototxt is None and path.with_suffix(".prototxt").is_file():
            prototxt = path.with_suffix(".prototxt")
        return Located("caffemodel", path, prototxt=prototxt)
    return Located("prototxt" if suffix == ".prototxt" else "model file", path)


def load_model(spec: str | os.PathLike, prototxt: str | os.PathLike | None = None, *,
               input_shapes: dict[str, tuple[int, ...]] | None = None) -> Model:
    """Load a model file, a ``.caffemodel`` (+ prototxt), a ``.prototxt``, or a zoo model by name.

    ``input_shapes`` completes a train_val definition whose data layer leaves the shape open.
    """
    where = locate(spec, prototxt)
    if where.kind == "zoo":
        return _from_zoo(where.entry)
    if where.kind == "caffemodel":
        return _from_caffemodel(where.path, where.prototxt, input_shapes)
    if where.kind == "prototxt":
        from converters import caffe

        net = caffe.load(where.path, input_shapes=input_shapes)
        log.warning(UNTRAINED_DEFINITION, spec)
        return Model(net, _meta_from_build(net, {"source": str(where.path), "initialized": True}),
                     str(where.path))
    return read_model_file(where.path)


UNTRAINED_DEFINITION = "%s: a definition without weights; weights are initialized, not trained"
UNTRAINED_ZOO = "%s: no trained weights ship with the zoo; weights are initialized (untrained)"
MATCHED_ZOO = "%s: weights match the zoo net %r; using its definition"


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
    """Load a model file; anything else (another ``.pt``, a corrupt or crafted file) is a CompressError
    that says what the file appears to be. Checked before unpickling (``compress/archive.py``): what the
    pickle names, the format marker, and that the storages expand to no more than the net definition
    declares; after: every field's type, ``meta`` a JSON object, every blob a dense float CPU tensor."""
    import torch

    from compress.archive import check_expansion, inspect_model_file
    from converters.caffe.builder import build_net

    path = str(path)
    inspection = inspect_model_file(path, ACCEPTED)
    netdef = parse_netdef(inspection.netdef, path)
    check_expansion(path, inspection, 4 * _plan(netdef, path).param_count())
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means "not our file"; say why briefly
        raise CompressError(f"{path}: not a readable model file (torch.load: {_torch_reason(e)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = (f"keys {[_cut(str(k), 40) for k in sorted(map(str, data))[:6]]}" if isinstance(data, dict)
                 else type(data).__name__)
        raise CompressError(f"{path}: not a compress model file (expected format {FORMAT!r}; found {found})")
    version = data.get("version")
    if type(version) is not int or not 1 <= version <= VERSION:
        raise CompressError(f"{path}: model file version {_cut(version)}, this tool reads 1 to {VERSION} "
                            "(written by a newer compress?)")
    for key, kind in (("netdef", str), ("blobs", dict), ("meta", str)):
        if not isinstance(data.get(key), kind):
            raise CompressError(f"{path}: corrupt model file: {key!r} should be a {kind.__name__}, "
                                f"found {type(data.get(key)).__name__}")
    if data["netdef"] != inspection.netdef:
        raise CompressError(f"{path}: corrupt model file: it holds two different net definitions")
    meta = parse_meta(data["meta"], path)
    blobs = _blobs(data["blobs"], path)
    try:
        net = build_net(netdef, blobs, source=f"model file {path}")
    except ConversionError as e:
        raise CompressError(str(e) if path in str(e) else f"model file {path}: {e}") from None
    return Model(net, meta, path)


ACCEPTED = ("expected a model file (.pt written by `compress convert` or `compress prune`), a .caffemodel "
            "(with its .prototxt), a .prototxt, or a zoo name")

# Types of the meta keys this tool reads (ARCHITECTURE.md); other keys are kept as they are.
META_TYPES: dict[str, type | tuple[type, ...]] = {
    "source": str, "method": str, "hyperparameters": dict, "targets": dict, "sparsity": str, "group": str,
    "dataset": str, "accuracy_before": (int, float), "accuracy_after": (int, float), "preprocess": dict,
    "created": str, "history": list, "zoo": str, "prototxt": str, "initialized": bool,
    "accuracy_notes": list, "adjustments": list, "solver": dict, "alpha": (int, float),
}
META_DEPTH = 32


def parse_meta(text: str, path: str) -> dict:
    """``meta`` JSON text -> dict; refuses what later code could not use (not an object, a known key of
    the wrong type, nesting deeper than :data:`META_DEPTH`)."""
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else _cut(str(e))
        raise CompressError(f"{path}: corrupt model file: meta is not JSON ({reason})") from None
    if not isinstance(meta, dict):
        raise CompressError(f"{path}: corrupt model file: meta should be a JSON object, found a JSON "
                            f"{type(meta).__name__}")
    depth = _depth(meta)
    if depth > META_DEPTH:
        raise CompressError(f"{path}: corrupt model file: meta is nested {depth} deep (at most {META_DEPTH})")
    for key, kind in META_TYPES.items():
        value = meta.get(key)
        wrong = not isinstance(value, kind) or isinstance(value, bool) and kind is not bool
        if value is not None and wrong:
            raise CompressError(f"{path}: corrupt model file: meta[{key!r}] should be "
                                f"{_kind_name(kind)}, found {type(value).__name__}")
    return meta


def parse_netdef(text: str, path: str):
    from converters.caffe.prototxt import parse_net_text

    try:
        return parse_net_text(text, filename=f"{path} (net definition)")
    except ConversionError as e:
        raise CompressError(f"corrupt model file: {e}") from None


def _plan(netdef, path: str):
    from converters.caffe.builder import plan_net

    try:
        return plan_net(netdef)
    except ConversionError as e:
        raise CompressError(f"model file {path}: {e}") from None


def _blobs(blobs: dict, path: str) -> dict:
    """``{layer: [float32 CPU tensors]}`` checked one by one (``torch.load`` accepts far more)."""
    import torch

    out = {}
    for name, arrays in blobs.items():
        where = f"{path}: corrupt model file: blobs[{_cut(repr(name))}]"
        if not isinstance(name, str) or not isinstance(arrays, (list, tuple)):
            raise CompressError(f"{where} should be a list of tensors under a layer name, found "
                                f"{type(arrays).__name__}")
        tensors = []
        for i, t in enumerate(arrays):
            if not isinstance(t, torch.Tensor):
                raise CompressError(f"{where}[{i}] should be a tensor, found {type(t).__name__}")
            if t.layout != torch.strided or t.device.type != "cpu" or not t.dtype.is_floating_point:
                raise CompressError(f"{where}[{i}] should be a dense float CPU tensor, found a {t.layout} "
                                    f"{t.dtype} tensor on {t.device.type}")
            tensors.append(t.detach().to(torch.float32).contiguous())
        out[name] = tensors
    return out


def _depth(value) -> int:
    """Nesting depth of JSON data, without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            todo.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", dict: "an object", list: "a list", int: "a number", float: "a number",
             bool: "true or false"}
    return " or ".join(dict.fromkeys(names[k] for k in kinds))


def _torch_reason(e: BaseException) -> str:
    """torch.load's own reason, without its advice to load with ``weights_only=False``."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            return _cut(line.removeprefix("WeightsUnpickler error:").strip())
    return _cut(lines[0])


def _cut(value, limit: int = 120) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _from_zoo(entry) -> Model:
    from converters import caffe

    meta = {"source": f"zoo:{entry.name}", "zoo": entry.name, "preprocess": dict(entry.preprocess)}
    if entry.alpha is not None:
        meta["alpha"] = entry.alpha
    if entry.has_weights:
        if entry.dataset:
            meta["dataset"] = entry.dataset  # the data its weights were trained on: every command's default
        net = caffe.load(entry.prototxt, entry.weights)
    else:
        net = caffe.load(entry.prototxt)
        log.warning(UNTRAINED_ZOO, entry.name)
        meta["initialized"] = True
    return Model(net, meta, None)


def _from_caffemodel(path: Path, prototxt, input_shapes=None) -> Model:
    """``prototxt``: given or found beside ``path`` (:func:`locate`); None: match the zoo's nets."""
    from converters import caffe

    if prototxt is not None:
        net = caffe.load(prototxt, path, input_shapes=input_shapes)
        return Model(net, _meta_from_build(net, {"source": str(path), "prototxt": str(prototxt)}), str(path))
    return _match_zoo(path)


def _match_zoo(path: Path) -> Model:
    """The zoo net whose layer names and blob shapes match the caffemodel's weights."""
    from converters.caffe.builder import build_net
    from converters.caffe.reader import read_caffemodel

    model = read_caffemodel(path)
    entry, net = match_zoo(path, model.blobs,
                           lambda definition: build_net(definition, model.blobs, source=f"caffemodel {path}"))
    meta = {"source": str(path), "zoo": entry.name, "preprocess": dict(entry.preprocess)}
    return Model(net, meta, str(path))


def match_zoo(path: Path, blobs: dict, build):
    """(entry, ``build(definition)``) of the first zoo net whose weighted layers all have ``blobs`` (the
    caffemodel's, by layer name) and for which ``build`` raises no ConversionError (layer names and blob
    shapes match); no such net is a CompressError asking for ``--prototxt``. Torch-free but for ``build``."""
    import zoo
    from converters.caffe.prototxt import read_net_text

    for entry in zoo.ZOO.values():
        definition = read_net_text(entry.prototxt)
        weighted = {layer.name for layer in definition.layer
                    if layer.type in ("Convolution", "InnerProduct", "Deconvolution")}
        if not weighted or not weighted <= set(blobs):
            continue
        try:
            result = build(definition)
        except ConversionError:
            continue
        log.info(MATCHED_ZOO, path, entry.name)
        return entry, result
    first = list(blobs.items())[:4]
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
