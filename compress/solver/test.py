"""``caffe test``: a model's weights through the TEST phase of a Caffe set-up (``compress eval --solver``).

BVLC ``tools/caffe.cpp`` ``test()`` builds the TEST net of a net file, copies the trained weights in by layer
name and runs ``-iterations`` forward passes, printing every output blob averaged over them (a loss output
also ``(* loss_weight = ... loss)``). Given a solver, Caffe's own test passes are what a user knows: each of
its TEST nets (``test_net``, ``test_net_param``, or the TEST phase of ``net``) for its ``test_iter`` batches,
as ``caffe train`` runs them; given a train_val net, its TEST phase for ``iterations`` batches (by default
enough to read its first data layer's records once). The data layers are Caffe's (LMDB ``Data``,
``ImageData``, ``HDF5Data``) with their ``transform_param``, read from the first record on. The top-1
accuracy is the first ``Accuracy`` layer with ``top_k`` 1, whatever its top is called.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from compress.errors import CompressError

SCHEMA = "compress.caffe_test/1"


@dataclass(frozen=True)
class NetTest:
    """One TEST net's pass: its outputs averaged over ``iterations`` batches of ``batch`` images."""

    source: str  # the net as Caffe names it: "net file: train_val.prototxt", "test_net_param"...
    iterations: int
    batch: int | None  # images per batch of its first data layer
    outputs: dict[str, float]
    loss_weights: dict[str, float] = field(default_factory=dict)  # output blob -> its loss weight
    records: int | None = None  # records of its first data layer, when known


@dataclass(frozen=True)
class CaffeTestReport:
    model: str
    definition: str  # the solver or net file
    kind: str  # "solver" or "net"
    device: str
    nets: tuple[NetTest, ...]
    accuracy: float | None  # top-1 of the first TEST net, found by layer type
    accuracy_blob: str | None
    untrained: tuple[str, ...] = ()  # layers with blobs that the model did not give (filled by fillers)

    def as_dict(self) -> dict:
        return {"schema": SCHEMA, **asdict(self)}


def caffe_test(model: str, definition: str, *, iterations: int | None = None, device: str = "auto",
               prototxt: str | None = None) -> CaffeTestReport:
    """Run ``model``'s weights through the TEST phase of ``definition`` (a solver or train_val prototxt)."""
    import torch

    from compress.data.caffe import build_feeder
    from compress.device import resolve_device
    from compress.solver.session import _is_data, model_weights
    from compress.solver.task import CaffeTask, TestNet, accuracy_top
    from converters.caffe.phase import build_phase_net, loss_weights, phase_layers
    from converters.caffe.prototxt import prototxt_kind

    if iterations is not None and iterations < 1:
        raise CompressError(f"iterations must be >= 1, found {iterations}")
    try:
        text = Path(definition).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CompressError(f"{definition}: not a text prototxt (it is not UTF-8)") from None
    kind = prototxt_kind(text)
    if kind is None:
        raise CompressError(f"{definition}: neither a solver nor a net definition (no net/base_lr fields, no "
                            "layers)")
    specs, seed = _test_nets(definition, kind)
    dev = resolve_device(device)
    counter = iter(range(1 << 30))
    generator = torch.Generator().manual_seed(seed)
    tests, untrained, meta = [], set(), []
    for source, param, test_iter in specs:
        layers = [layer for layer in phase_layers(param, "TEST") if _is_data(layer)]
        if not layers:
            raise CompressError(f"{definition}: the TEST net ({source}) has no data layer (Data, ImageData "
                                "or HDF5Data) to test on")
        feeders = [build_feeder(layer, "TEST", seed=seed + next(counter)) for layer in layers]
        shapes = {k: v for f in feeders for k, v in f.shapes.items()}
        net = build_phase_net(param, "TEST", input_shapes=shapes, generator=generator)
        untrained.update(model_weights(model, prototxt, net))
        batch = next(iter(feeders[0].shapes.values()))[0]
        records = getattr(getattr(feeders[0], "records", None), "entries", None)
        n = iterations or test_iter or (math.ceil(records / batch) if records else None)
        if n is None:
            raise CompressError(f"{definition}: how many batches to test is unknown for {source}; give "
                                "--iterations N")
        weights = {layer.top[i]: w for layer in param.layer for i, w in loss_weights(layer)
                   if i < len(layer.top)}
        tests.append(TestNet(net.to(dev), feeders, n))
        meta.append((source, n, batch, records, weights))
    nets = []
    for test, (source, n, batch, records, weights) in zip(tests, meta, strict=True):
        outputs = CaffeTask(None, [test], dev).evaluate() or {}
        nets.append(NetTest(source, n, batch, outputs, {b: w for b, w in weights.items() if b in outputs},
                            records))
    key = accuracy_top(tests[0].net)
    return CaffeTestReport(model=str(model), definition=str(definition), kind=kind, device=str(dev),
                           nets=tuple(nets), accuracy=nets[0].outputs.get(key) if key else None,
                           accuracy_blob=key, untrained=tuple(sorted(untrained)))


def _test_nets(definition: str, kind: str) -> tuple[list[tuple[str, object, int | None]], int]:
    """``[(source, NetParameter in the TEST state, test_iter or None)]`` and the fillers' seed."""
    from compress.solver.session import DEFAULT_SEED

    if kind == "solver":
        from compress.solver.read import read_solver

        solver = read_solver(definition, weights=[])
        if not solver.test_nets:
            raise CompressError(f"{definition}: the solver has no test net (no test_iter): nothing to test; "
                                "give the train_val net instead, with --iterations")
        seed = solver.random_seed if solver.random_seed >= 0 else DEFAULT_SEED
        return [(t.source, t.param, t.test_iter) for t in solver.test_nets], seed
    from converters.caffe.proto import caffe_pb2
    from converters.caffe.prototxt import read_net_text

    param = read_net_text(definition)
    param.state.phase = caffe_pb2.TEST
    return [(f"net file: {definition}", param, None)], DEFAULT_SEED


def render(report: CaffeTestReport) -> str:
    """Caffe's lines: per TEST net, each output averaged over its batches (losses with their weight)."""
    lines = []
    for k, t in enumerate(report.nets):
        images = f"{t.iterations} batches of {t.batch}" if t.batch else f"{t.iterations} batches"
        wraps = ""
        if t.records and t.batch and t.iterations * t.batch > t.records:
            wraps = f"; the data layer wraps after its {t.records:,} records, as Caffe's does"
        elif t.records and t.batch and t.iterations * t.batch < t.records:
            wraps = f" of its {t.records:,} records"
        lines.append(f"{report.model} on {t.source} (TEST, {report.device}): {images}"
                     f" = {t.iterations * (t.batch or 0):,} images{wraps}")
        for i, (name, value) in enumerate(t.outputs.items()):
            w = t.loss_weights.get(name)
            loss = f" (* {w:g} = {value * w:.6g} loss)" if w else ""
            lines.append(f"  Test net output #{i}: {name} = {value:.6g}{loss}")
        if k == 0 and report.accuracy_blob:
            lines.append(f"  top-1 accuracy {report.accuracy:.2%} ({report.accuracy_blob}: the Accuracy "
                         "layer with top_k 1)")
    if report.untrained:
        names = ", ".join(report.untrained[:6]) + (" ..." if len(report.untrained) > 6 else "")
        lines.append(f"  warning: {len(report.untrained)} layer(s) not in the model, filled by their "
                     f"fillers: {names}")
    return "\n".join(lines) + "\n"
