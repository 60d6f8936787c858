"""``train_solver(config)``: the library function behind ``compress train`` (``caffe train``).

Reads the solver (``--max-iter`` replaces its ``max_iter``, ``--weights`` its ``weights``), builds the
session (:mod:`compress.solver.session`), tests at iteration 0 unless ``test_initialization: false``,
and runs the shared training loop with Caffe's solver: ``max_iter`` updates with tests every
``test_interval``, display every ``display``, snapshots every ``snapshot`` and after training
(``snapshot_after_train``). ``-o OUT.caffemodel`` also writes ``OUT.prototxt``, the deploy definition
of the trained net (data, loss and accuracy layers replaced by an ``Input``), so that every command of
the tool finds it beside the weights.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from compress.errors import CompressError


@dataclass(frozen=True)
class SolverTrainConfig:
    solver: str
    weights: tuple[str, ...] | None = None  # None: the solver's own ``weights`` field
    output: str | None = None  # a .caffemodel (+ its deploy .prototxt beside it)
    max_iter: int | None = None
    log: str | None = None  # JSON lines: {"iter", "loss", "lr"} and {"iter", "test"}
    resume: str | None = None  # a <prefix>_iter_N.solverstate.pt
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_iter is not None and self.max_iter < 1:
            raise CompressError(f"--max-iter must be >= 1, got {self.max_iter}")
        if self.output is not None and Path(self.output).suffix.lower() != ".caffemodel":
            raise CompressError(f"-o must name a .caffemodel (its deploy .prototxt is written beside it), "
                                f"got {self.output}")


@dataclass(frozen=True)
class SolverTrainResult:
    iterations: int
    test: dict | None  # the last test pass's outputs
    files: list[str] = field(default_factory=list)  # what was written: -o and its prototxt, snapshots
    history: list[dict] = field(default_factory=list)


def train_solver(config: SolverTrainConfig) -> SolverTrainResult:
    from compress.outputs import check_outputs
    from compress.prune.api import resolve_device
    from compress.prune.methods import method_class
    from compress.prune.progress import Progress
    from compress.prune.targets import prunable_layers
    from compress.prune.trainer import TrainConfig, train
    from compress.solver.observer import CaffeObserver
    from compress.solver.read import read_solver
    from compress.solver.session import build_session

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CompressError("compress train does not run under torchrun yet; run it as one process")
    solver = read_solver(config.solver, weights=list(config.weights) if config.weights is not None else None)
    if config.max_iter is not None:
        solver = dataclasses.replace(solver, max_iter=config.max_iter)
    if solver.max_iter < 1:
        raise CompressError(f"{solver.where('max_iter')}: max_iter must be >= 1 (or give --max-iter)")
    deploy = str(Path(config.output).with_suffix(".prototxt")) if config.output else None
    inputs = [config.solver, *solver.weights, *(n.path for n in (solver.train_net, *solver.test_nets) if n)]
    check_outputs([config.output, deploy, config.log], files=[p for p in inputs if p])
    if config.resume is not None and not os.path.isfile(config.resume):
        raise CompressError(f"state to resume from not found: {config.resume}")
    device = resolve_device(config.device)
    s = build_session(solver, device)
    progress = Progress(config.progress)
    if config.log and config.resume is None and os.path.exists(config.log):
        os.unlink(config.log)  # a fresh run starts a fresh log; a resumed one appends
    observer = CaffeObserver(solver, s.train_net, progress, config.log)
    method = method_class("default")(prunable_layers(s.train_net), None, epochs=1)
    cfg = TrainConfig(lr=1.0, seed=s.seed, checkpoint=None, progress=False,
                      info={"solver": solver.hyperparameters(), "net": _digest(s.train_net.netdef),
                            "test_interval": solver.test_interval, "snapshot": solver.snapshot})
    try:
        if config.resume is None and solver.test_now(0) and s.tests:
            observer.test(0, s.task.evaluate())
        result = train(s.train_net, method, None, None, cfg, device, resume=config.resume, task=s.task,
                       batches=s.batches, segments=s.segments(1, 1, 0), optimizer=s.optimizer(),
                       observer=observer)
    finally:
        observer.close()
    files = list(observer.snapshots)
    if config.output:
        from converters import caffe

        caffe.save(s.train_net, config.output)
        _write_deploy(deploy, (s.tests[0].net if s.tests else s.train_net).netdef)
        files += [config.output, deploy]
    last = next((h["test"] for h in reversed(result.history) if h.get("test")), None)
    return SolverTrainResult(result.steps, last, files, result.history)


def _write_deploy(path: str, netdef: str) -> None:
    from converters.atomic import atomic_write_text

    atomic_write_text(path, netdef)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
