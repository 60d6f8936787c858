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
import sys
from dataclasses import dataclass, field
from pathlib import Path

from compress.errors import CompressError
from compress.lock import output_lock


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
    is_main: bool = True  # False on the ranks other than 0 of a torchrun job (they neither write nor print)


def train_solver(config: SolverTrainConfig) -> SolverTrainResult:
    """Run ``config``'s solver; under ``torchrun`` every rank runs it on its share of the TRAIN records
    (:meth:`compress.data.caffe.feeder.Feeder.shard`) with the gradients averaged, and rank 0 tests,
    prints, snapshots and writes, as ``caffe train -gpu 0,1,...`` does."""
    from compress.device import resolve_device
    from compress.outputs import check_outputs
    from compress.solver.observer import snapshot_paths
    from compress.solver.read import read_solver
    from compress.train.distributed import init_distributed

    solver = read_solver(config.solver, weights=list(config.weights) if config.weights is not None else None)
    if config.max_iter is not None:
        solver = dataclasses.replace(solver, max_iter=config.max_iter)
    if solver.max_iter < 1:
        raise CompressError(f"{solver.where('max_iter')}: max_iter must be >= 1 (or give --max-iter)")
    deploy = str(Path(config.output).with_suffix(".prototxt")) if config.output else None
    snapshots = [p for it in _snapshot_iterations(solver) for p in snapshot_paths(solver.snapshot_prefix, it)]
    inputs = [config.solver, *solver.input_files()]
    real = {os.path.realpath(p) for p in inputs}
    check_outputs([config.output, deploy, config.log, *snapshots[-2:],  # the folder, and any that is an input
                   *(p for p in snapshots[:-2] if os.path.realpath(p) in real)], files=inputs)
    if config.resume is not None and not os.path.isfile(config.resume):
        raise CompressError(f"state to resume from not found: {config.resume}")
    device = resolve_device(config.device)
    dist = init_distributed(device)
    try:
        outputs = [config.output, solver.snapshot_prefix if snapshots else None]
        with output_lock(outputs, enabled=dist.is_main):
            return _train(solver, config, dist, dist.device(device), snapshots, deploy)
    finally:
        dist.close()


def _train(solver, config: SolverTrainConfig, dist, device, snapshots: list[str],
           deploy: str | None) -> SolverTrainResult:
    from compress.layers import prunable_layers
    from compress.solver.observer import CaffeObserver
    from compress.solver.session import build_session
    from compress.train.hooks import PlainTraining
    from compress.train.progress import Progress
    from compress.train.trainer import TrainConfig, train

    main = dist.is_main
    s = build_session(solver, device, dist)
    for line in _warnings(solver, snapshots, config.resume) if main else ():  # once the set-up is good
        print(line, file=sys.stderr, flush=True)
    if main and config.log and config.resume is None and os.path.exists(config.log):
        os.unlink(config.log)  # a fresh run starts a fresh log; a resumed one appends
    observer = CaffeObserver(solver, s.train_net, Progress(config.progress and main), config.log, writes=main)
    method = PlainTraining(prunable_layers(s.train_net), epochs=1)
    cfg = TrainConfig(lr=1.0, seed=s.seed, checkpoint=None, progress=False, final_test=False,
                      info={"solver": solver.hyperparameters(), "net": _digest(s.train_net.netdef),
                            "test_interval": solver.test_interval, "snapshot": solver.snapshot},
                      command={"resume": _resume_command(config)})
    try:
        if main and config.resume is None and solver.test_now(0) and s.tests:
            observer.test(0, s.task.evaluate())
        result = train(s.train_net, method, None, None, cfg, device, dist, resume=config.resume, task=s.task,
                       batches=s.batches, segments=s.segments([1], 0), optimizer=s.optimizer(),
                       observer=observer)
    finally:
        observer.close()
    files = list(observer.snapshots)
    if config.output and main:
        from converters import caffe

        caffe.save(s.train_net, config.output)
        _write_deploy(deploy, (s.tests[0].net if s.tests else s.train_net).netdef)
        files += [config.output, deploy]
    last = observer.last_test or next((h["test"] for h in reversed(result.history) if h.get("test")), None)
    return SolverTrainResult(result.steps, last, files, result.history, main)


def _resume_command(config: SolverTrainConfig) -> str:
    """The command that continues this run from a snapshot state (``{checkpoint}`` stands for its path)."""
    import shlex

    parts = ["compress", "train", config.solver, *(f"--weights={w}" for w in config.weights or ()),
             *(["-o", config.output] if config.output else []),
             *([f"--max-iter={config.max_iter}"] if config.max_iter else []),
             *(["--log", config.log] if config.log else [])]
    return " ".join(shlex.quote(p) for p in parts) + " --resume {checkpoint}"


def _snapshot_iterations(solver) -> list[int]:
    """The iterations a run of ``solver`` snapshots at (every ``snapshot``, and after training)."""
    its = list(range(solver.snapshot, solver.max_iter + 1, solver.snapshot)) if solver.snapshot > 0 else []
    if solver.snapshot_at_end(solver.max_iter):
        its.append(solver.max_iter)
    return its


def _warnings(solver, snapshots: list[str], resume: str | None) -> list[str]:
    """What a Caffe user should know before the first iteration: test layers that never run, and
    snapshots of an earlier run that this one replaces (as caffe train does)."""
    out = []
    if not solver.test_nets and solver.train_net is not None and _has_test_layers(solver.train_net.param):
        out.append(f"warning: {solver.origin}: the net has TEST-phase layers but the solver gives no "
                   "test_iter, so no test pass will run (as in Caffe); add test_iter and test_interval")
    existing = [p for p in snapshots if p.endswith(".caffemodel") and os.path.exists(p)]
    if existing and resume is None:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        out.append(f"note: this run writes its snapshots over {existing[0]}{more} from an earlier run "
                   f"(snapshot_prefix {solver.snapshot_prefix!r}), as caffe train does")
    return out


def _has_test_layers(net) -> bool:
    return any(rule.HasField("phase") and rule.phase == 1 for layer in net.layer for rule in layer.include)


def _write_deploy(path: str, netdef: str) -> None:
    from converters.atomic import atomic_write_text

    atomic_write_text(path, netdef)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
