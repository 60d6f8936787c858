"""What ``compress info`` shows of a model: its inputs, outputs, and per layer the type, top shapes and
parameter count, read without torch wherever it can be.

:func:`net_info` resolves the model as :func:`compress.modelfile.load_model` does (``locate``) and reads
what loading it would read, in the same order and with the same readers: the prototxt, the caffemodel
(numpy), a model file's archive (``compress/archive.py``'s checks, then ``compress/skeleton.py`` for the
blob shapes). Instead of building the net it plans its shapes (``converters/caffe/shapes/``) and checks
the blobs against them (``netinit.check_blobs``, the builder's own check). An error that comes before
the net is built (no such file, a syntax error, a file that is not a model) is the loader's and is
raised as it is. Whatever the torch-free reading is not sure to answer exactly as the loader (a net the
plan refuses, blobs that do not fit, weights holding NaN or infinity, a pickle beyond the skeleton
reader, a net near the memory limit) is handed to the loader itself: the answer is then today's, in
today's words, only slower. The library's warnings (dropped training layers, untrained weights, ignored
blobs) are held while the torch-free reading runs and are given out only when its answer stands, so
nothing is said twice.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from converters.errors import ConversionError

log = logging.getLogger("compress")
LOGGERS = ("converters", "compress")


@dataclass(frozen=True)
class NetInfo:
    name: str
    inputs: dict[str, tuple[int, ...]]
    outputs: list[str]
    layers: list  # converters.caffe.LayerSummary, in execution order
    with_torch: bool = False  # True when the model had to be loaded (the torch-free reading handed over)


def net_info(spec: str | os.PathLike, prototxt: str | os.PathLike | None = None) -> NetInfo:
    """The inputs, outputs and layer rows of the model ``spec`` (anything ``load_model`` accepts)."""
    with _held_logs() as held:
        try:
            info = _without_torch(spec, prototxt)
        except _HandOver:
            held.clear()
            info = None
    if info is not None:
        return info
    return _with_torch(spec, prototxt)


class _HandOver(Exception):
    """The torch-free reading cannot vouch for its answer: load the model instead."""


def _with_torch(spec, prototxt) -> NetInfo:
    from compress.modelfile import load_model
    from converters.caffe import summarize

    net = load_model(spec, prototxt).net
    return NetInfo(net.name, dict(net.inputs), list(net.outputs), summarize(net), with_torch=True)


def _without_torch(spec, prototxt) -> NetInfo:
    from compress.modelfile import UNTRAINED_DEFINITION, UNTRAINED_ZOO, locate, match_zoo
    from converters.caffe.prototxt import read_net_text

    where = locate(spec, prototxt)
    if where.kind == "zoo":
        entry = where.entry
        net = read_net_text(entry.prototxt)
        if not entry.has_weights:
            plan = _plan(net)
            log.warning(UNTRAINED_ZOO, entry.name)
            return _rows(plan)
        return _rows(_with_caffemodel(net, entry.weights))
    if where.kind == "prototxt":
        plan = _plan(read_net_text(where.path))
        log.warning(UNTRAINED_DEFINITION, spec)
        return _rows(plan)
    if where.kind == "caffemodel":
        if where.prototxt is not None:
            return _rows(_with_caffemodel(read_net_text(where.prototxt), where.path))
        blobs = _caffemodel_blobs(where.path)
        _, plan = match_zoo(where.path, blobs, lambda net: _plan(net, blobs, f"caffemodel {where.path}",
                                                                  refuse=True))
        return _rows(plan)
    return _rows(_model_file(str(where.path)))


def _with_caffemodel(net, path: Path):
    return _plan(net, _caffemodel_blobs(path), f"caffemodel {path}")


def _caffemodel_blobs(path: Path) -> dict:
    """The caffemodel's blobs (``read_caffemodel``); NaN or infinity among them is the loader's to judge."""
    import numpy as np

    from converters.caffe.reader import read_caffemodel

    blobs = read_caffemodel(path).blobs
    if not all(np.isfinite(a).all() for arrays in blobs.values() for a in arrays):
        raise _HandOver
    return blobs


def _plan(net, blobs: dict | None = None, source: str = "", refuse: bool = False):
    """The shape plan of ``net`` with ``blobs`` checked against it. A ConversionError hands over to the
    loader, or with ``refuse`` is raised (the zoo match tries the next net, as the loader does)."""
    from converters.caffe.memory import available_memory
    from converters.caffe.shapes.plan import plan_shapes

    try:
        plan = plan_shapes(net, blobs)
        if blobs is not None:
            plan.check_blobs(blobs, source)
    except ConversionError:
        if refuse:
            raise
        raise _HandOver from None
    if 2 * plan.memory_bytes() > available_memory().nbytes:  # near the guard's limit: its exact count decides
        raise _HandOver
    return plan


def _model_file(path: str):
    """A model file's plan, checked as ``read_model_file`` checks the file (its archive, its definition,
    the storages' size), its blob shapes read from the pickle without torch."""
    from compress.archive import check_expansion, inspect_model_file
    from compress.errors import CompressError
    from compress.modelfile import ACCEPTED, FORMAT, VERSION, parse_meta, parse_netdef
    from compress.skeleton import BlobSkeleton, Unreadable, read_skeleton

    inspection = inspect_model_file(path, ACCEPTED)
    netdef = parse_netdef(inspection.netdef, path)
    check_expansion(path, inspection, 4 * _plan(netdef).param_count())
    try:
        data = read_skeleton(path, finite=True)
    except Unreadable:
        raise _HandOver from None
    if not (isinstance(data, dict) and data.get("format") == FORMAT and type(data.get("version")) is int
            and 1 <= data["version"] <= VERSION and data.get("netdef") == inspection.netdef
            and isinstance(data.get("meta"), str) and isinstance(data.get("blobs"), dict)):
        raise _HandOver  # the loader says what is wrong
    try:
        parse_meta(data["meta"], path)
    except CompressError:
        raise _HandOver from None
    blobs = data["blobs"]
    if not all(isinstance(k, str) and isinstance(v, (list, tuple))
               and all(isinstance(b, BlobSkeleton) for b in v) for k, v in blobs.items()):
        raise _HandOver
    return _plan(netdef, blobs, f"model file {path}")


def _rows(plan) -> NetInfo:
    from converters.caffe import LayerSummary

    rows = [LayerSummary(n.name, n.type, n.tops, tuple(plan.shapes[t] for t in n.tops), n.params)
            for n in plan.nodes]
    return NetInfo(plan.name, dict(plan.inputs), plan.outputs, rows)


class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def clear(self) -> None:
        self.records.clear()


@contextmanager
def _held_logs():
    """Hold what the library logs (``converters``, ``compress``) in the block; give it out afterwards, to
    the handlers it would have reached, unless the block cleared it."""
    held = _Held()
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers[:] = [held]
        logger.propagate = False
    try:
        yield held
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers[:] = handlers
            logger.propagate = propagate
        for record in held.records:
            logging.getLogger(record.name).handle(record)
