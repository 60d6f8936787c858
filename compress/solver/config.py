"""The solver configuration: Caffe's ``SolverParameter`` as a frozen, validated dataclass.

Field names, defaults and meanings are BVLC Caffe's (src/caffe/proto/caffe.proto, ``SolverParameter``);
``gamma``, ``power``, ``stepsize`` and ``base_lr`` are ``None`` when unset so that a learning-rate policy
missing one of its parameters is an error instead of Caffe's silent 0. The same object is what a
solver.prototxt fills (``compress.solver.read``) and what Python callers build directly, e.g.

    SolverConfig(base_lr=0.01, lr_policy="inv", gamma=1e-4, power=0.75, momentum=0.9,
                 weight_decay=5e-4, max_iter=10000)

The ``*_now`` helpers answer the loop's questions the way ``Solver::Step``/``Solver::Solve`` do.
Fields a solver may hold that change nothing here (``debug_info``, ``snapshot_diff``,
``layer_wise_reduce``) are accepted by the reader and not kept.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from compress.errors import CompressError
from converters.caffe.names import cut, shown

TRAIN_FIELDS = ("net", "net_param", "train_net", "train_net_param")


@dataclass(frozen=True)
class NetSpec:
    """A net the solver names: the train net, or one test-net instance with its ``test_iter``.

    ``param`` is the ``caffe_pb2.NetParameter`` with ``state`` merged as Caffe's ``InitTrainNet`` /
    ``InitTestNets`` do (phase, then the net's own state, then ``train_state`` / ``test_state``), so a
    builder filtering layers by ``param.state`` sees what Caffe sees.
    """

    source: str  # Caffe's words: "net file: train_val.prototxt", "test_net_param", ...
    field: str  # the solver field it came from: net, net_param, train_net, test_net, ...
    path: str | None  # the net file as the solver names it (relative to the working directory)
    param: Any = field(compare=False, repr=False)
    test_iter: int | None = None  # batches per test pass (test nets only)

    @property
    def phase(self) -> str:
        """``TRAIN`` or ``TEST``: the merged state's phase."""
        return "TRAIN" if self.param.state.phase == 0 else "TEST"


@dataclass(frozen=True)
class SolverConfig:
    """Every ``SolverParameter`` field training reads; validated on construction (one clear line)."""

    base_lr: float | None = None
    lr_policy: str | None = None
    type: str = "SGD"
    gamma: float | None = None
    power: float | None = None
    stepsize: int | None = None
    stepvalue: tuple[int, ...] = ()
    max_iter: int = 0
    momentum: float = 0.0
    momentum2: float = 0.999
    delta: float = 1e-8
    rms_decay: float = 0.99
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    clip_gradients: float = -1.0  # < 0: off
    iter_size: int = 1
    test_iter: tuple[int, ...] = ()
    test_interval: int = 0
    test_initialization: bool = True
    test_compute_loss: bool = False
    display: int = 0
    average_loss: int = 1
    snapshot: int = 0
    snapshot_prefix: str = ""
    snapshot_after_train: bool = True
    snapshot_format: str = "BINARYPROTO"
    random_seed: int = -1  # < 0: not set
    solver_mode: str = "GPU"
    device_id: int = 0
    weights: tuple[str, ...] = ()  # caffemodels to start from (Caffe's comma lists split)
    train_net: NetSpec | None = None
    test_nets: tuple[NetSpec, ...] = ()
    origin: str = "<solver>"  # the file, for messages
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("stepvalue", "test_iter", "weights", "test_nets"):  # lists given by Python callers
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _validate(self)

    def where(self, name: str) -> str:
        """``file:line`` of a top-level field (just ``file`` when unknown or not given)."""
        line = self.lines.get(name)
        return f"{self.origin}:{line}" if line else self.origin

    def error(self, name: str, what: str) -> CompressError:
        return CompressError(f"{self.where(name)}: {name}: {what}")

    # -- the loop's questions, as Solver::Step / Solver::Solve ask them ---------------------------

    def test_now(self, it: int) -> bool:
        """Test before the update of iteration ``it`` (``Step``; iteration 0 with test_initialization)."""
        return self.test_at_end(it) and (it > 0 or self.test_initialization)

    def test_at_end(self, it: int) -> bool:
        """``Solve``'s test after the last update, ``it`` being the iteration reached."""
        return bool(self.test_iter) and self.test_interval > 0 and it % self.test_interval == 0

    def display_now(self, it: int) -> bool:
        return self.display > 0 and it % self.display == 0

    def snapshot_now(self, it: int) -> bool:
        """Snapshot after an update, ``it`` being the count of updates done."""
        return self.snapshot > 0 and it % self.snapshot == 0

    def snapshot_at_end(self, it: int) -> bool:
        """The extra snapshot ``Solve`` writes after the last update unless one was just written."""
        return self.snapshot_after_train and not self.snapshot_now(it)

    def input_files(self) -> list[str]:
        """The files a run reads besides the solver itself: its weights and its net files."""
        return [*self.weights, *(n.path for n in (self.train_net, *self.test_nets) if n and n.path)]

    def hyperparameters(self) -> dict[str, Any]:
        """The optimization fields as plain JSON data (for a model's meta and logs)."""
        keep = ("type", "base_lr", "lr_policy", "gamma", "power", "stepsize", "stepvalue", "max_iter",
                "momentum", "momentum2", "delta", "rms_decay", "weight_decay", "regularization_type",
                "clip_gradients", "iter_size", "random_seed")
        out = {k: getattr(self, k) for k in keep}
        out["stepvalue"] = list(self.stepvalue)
        return out


def _validate(cfg: SolverConfig) -> None:
    from compress.solver.policy import POLICIES
    from compress.solver.updates import RULES

    for f in fields(cfg):
        _check_type(cfg, f.name, getattr(cfg, f.name), f.type)
    if cfg.type not in RULES:
        raise cfg.error("type", f"unknown solver type {shown(cfg.type)}; expected one of {', '.join(RULES)}")
    if cfg.base_lr is None:
        raise cfg.error("base_lr", "missing (the starting learning rate)")
    if cfg.lr_policy is None:
        raise cfg.error("lr_policy", f"missing; expected one of {', '.join(POLICIES)}")
    if cfg.lr_policy not in POLICIES:
        raise cfg.error("lr_policy", f"unknown policy {shown(cfg.lr_policy)}; "
                                     f"expected one of {', '.join(POLICIES)}")
    for need in POLICIES[cfg.lr_policy].needs:
        if getattr(cfg, need) in (None, ()):
            raise cfg.error(need, f"missing: lr_policy {shown(cfg.lr_policy)} needs {need}")
    if cfg.regularization_type not in ("L2", "L1"):
        raise cfg.error("regularization_type", f"expected L2 or L1, found {shown(cfg.regularization_type)}")
    for name in ("base_lr", "max_iter", "momentum", "momentum2", "delta", "rms_decay", "weight_decay",
                 "test_interval", "display", "snapshot", "device_id"):
        if getattr(cfg, name) < 0:
            raise cfg.error(name, f"must be >= 0, found {getattr(cfg, name)}")
    for name in ("test_iter", "stepvalue"):
        if any(v < 0 for v in getattr(cfg, name)):
            raise cfg.error(name, f"must be >= 0, found {list(getattr(cfg, name))}")
    for name in ("iter_size", "average_loss"):
        if getattr(cfg, name) < 1:
            raise cfg.error(name, f"must be >= 1, found {getattr(cfg, name)}")
    if "gamma" in POLICIES[cfg.lr_policy].needs and cfg.gamma < 0:
        raise cfg.error("gamma", f"must be >= 0 for lr_policy {shown(cfg.lr_policy)}, found {cfg.gamma}")
    if "stepsize" in POLICIES[cfg.lr_policy].needs and cfg.stepsize <= 0:
        raise cfg.error("stepsize", f"must be > 0 for lr_policy {shown(cfg.lr_policy)}, found {cfg.stepsize}")
    if cfg.lr_policy == "poly" and cfg.max_iter <= 0:
        raise cfg.error("max_iter", f"must be > 0 for lr_policy 'poly' (it divides by it), "
                                    f"found {cfg.max_iter}")
    if cfg.type == "Adam" and cfg.momentum >= 1:
        raise cfg.error("momentum", f"must be below 1 for Adam (its bias correction divides by "
                                    f"1 - momentum^t), found {cfg.momentum}")
    if cfg.type in ("AdaGrad", "RMSProp") and cfg.momentum != 0:  # Caffe 1.0's constructor_sanity_check
        raise cfg.error("momentum", f"Momentum cannot be used with {cfg.type} (Caffe refuses it too), "
                                    f"found {cfg.momentum}; remove it or set it to 0")
    if cfg.type == "RMSProp" and not 0 <= cfg.rms_decay < 1:
        raise cfg.error("rms_decay", f"rms_decay should lie between 0 and 1 (Caffe: 0 <= rms_decay < 1), "
                                     f"found {cfg.rms_decay}")
    for name, solver_type in (("momentum2", "Adam"), ("momentum", "AdaDelta")):
        if cfg.type == solver_type and getattr(cfg, name) > 1:
            raise cfg.error(name, f"must be <= 1 for {solver_type} (a moving-average weight), "
                                  f"found {getattr(cfg, name)}")
    if cfg.solver_mode not in ("CPU", "GPU"):
        raise cfg.error("solver_mode", f"expected CPU or GPU, found {shown(cfg.solver_mode)}")
    if cfg.snapshot_format == "HDF5":
        raise cfg.error("snapshot_format", "HDF5 snapshots (Caffe's .caffemodel.h5 and .solverstate.h5) are "
                                           "not supported; remove the field or set BINARYPROTO (snapshots "
                                           "are written as .caffemodel and .solverstate.pt)")
    if cfg.snapshot_format != "BINARYPROTO":
        raise cfg.error("snapshot_format", f"expected BINARYPROTO, found {shown(cfg.snapshot_format)}")
    if cfg.test_nets:
        if len(cfg.test_nets) != len(cfg.test_iter):
            raise cfg.error("test_iter", f"{len(cfg.test_iter)} given for {len(cfg.test_nets)} test nets")
        if cfg.test_interval <= 0:
            raise cfg.error("test_interval", "must be > 0 when there are test nets (test_iter given), "
                                             f"found {cfg.test_interval}")


_KINDS = {"float": ((int, float), "a number"), "int": ((int,), "an integer"), "str": ((str,), "a string"),
          "bool": ((bool,), "true or false")}


def _check_type(cfg: SolverConfig, name: str, value: Any, annotation: str) -> None:
    """Reject values of the wrong kind (a string for a number, a bool for an int, NaN)."""
    base = annotation.split(" | ")[0]
    if base == "tuple[int, ...]" and not all(_is(v, (int,)) for v in value):
        raise cfg.error(name, f"expected integers, found {cut(repr(list(value)), 120)}")
    if base not in _KINDS or (value is None and "None" in annotation):
        return
    kinds, expected = _KINDS[base]
    if not _is(value, kinds) or (base == "float" and not math.isfinite(value)):
        raise cfg.error(name, f"expected {expected}, found {cut(repr(value), 120)}")


def _is(value: Any, kinds: tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
