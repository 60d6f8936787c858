"""Read a solver.prototxt into a :class:`SolverConfig` the way ``caffe train --solver`` does.

Follows BVLC ``ReadSolverParamsFromTextFileOrDie`` (src/caffe/util/upgrade_proto.cpp: the old
``solver_type`` enum becomes ``type``; an unset ``snapshot_prefix`` is the solver's path without its
extension, a directory one gets the solver's stem appended), tools/caffe.cpp ``train()`` (the train
state's ``level`` and extra ``stage``s) and ``Solver::InitTrainNet`` / ``InitTestNets``
(src/caffe/solver.cpp: exactly one of net / net_param / train_net / train_net_param; test nets from
test_net_param, then test_net, then as many instances of the generic net as test_iters remain; one
test_iter per test net; NetState merged phase < the net's own state < train_state / test_state).
Paths inside the solver (``net``, ``train_net``, ``test_net``, ``weights``, ``snapshot_prefix``) are
relative to the working directory, as in Caffe, not to the solver's folder.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compress.errors import CompressError
from compress.solver.config import TRAIN_FIELDS, NetSpec, SolverConfig
from converters.caffe.names import shown_path

# SolverParameter.SolverType (deprecated enum) -> the type string (UpgradeSolverType).
SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
                "ADADELTA": "AdaDelta", "ADAM": "Adam"}
_OPTIONAL = ("base_lr", "lr_policy", "gamma", "power", "stepsize")  # None when unset
_FLOATS = ("base_lr", "gamma", "power", "momentum", "momentum2", "delta", "rms_decay", "weight_decay",
           "clip_gradients")
_SCALARS = ("base_lr", "lr_policy", "type", "gamma", "power", "stepsize", "max_iter", "momentum",
            "momentum2", "delta", "rms_decay", "weight_decay", "regularization_type", "clip_gradients",
            "iter_size", "test_interval", "test_initialization", "test_compute_loss", "display",
            "average_loss", "snapshot", "snapshot_after_train", "random_seed", "device_id")


def read_solver(path: str | os.PathLike, *, level: int = 0, stages: Sequence[str] = (),
                weights: Sequence[str] | None = None) -> SolverConfig:
    """Read and validate ``path``, as ``caffe train --solver path`` with ``--level``, ``--stage`` and
    ``--weights`` (given, it replaces the solver's ``weights``; ``()`` clears them, as ``--snapshot`` does).
    """
    from converters.caffe.prototxt import read_solver_text

    msg = read_solver_text(path)  # UTF-8 and syntax errors as file:line:column
    text = Path(path).read_text(encoding="utf-8")
    return _config(msg, text, str(path), level, stages, weights)


def parse_solver(text: str, filename: str = "<string>", *, level: int = 0, stages: Sequence[str] = (),
                 weights: Sequence[str] | None = None) -> SolverConfig:
    """:func:`read_solver` for solver ``text``, named ``filename`` in messages (and snapshot_prefix)."""
    from converters.caffe.prototxt import parse_solver_text

    return _config(parse_solver_text(text, filename), text, filename, level, stages, weights)


def _config(msg, text: str, filename: str, level: int, stages: Sequence[str],
            weights: Sequence[str] | None) -> SolverConfig:
    lines = field_lines(text)

    def where(name: str) -> str:
        return f"{filename}:{lines[name]}" if name in lines else filename

    values = {k: (getattr(msg, k) if msg.HasField(k) or k not in _OPTIONAL else None) for k in _SCALARS}
    values.update({k: _float(values[k]) for k in _FLOATS})
    if msg.HasField("solver_type"):
        if msg.HasField("type"):
            raise CompressError(f"{where('solver_type')}: solver_type: the old solver_type enum and the "
                                "type string cannot both be given")
        values["type"] = SOLVER_TYPES[msg.SolverType.Name(msg.solver_type)]
    msg.train_state.level = level  # caffe train sets it (--level, default 0) and appends --stage
    msg.train_state.stage.extend(stages)
    train, tests = _nets(msg, where)
    return SolverConfig(
        **values,
        stepvalue=tuple(msg.stepvalue),
        test_iter=tuple(msg.test_iter),
        snapshot_prefix=_snapshot_prefix(msg, filename),
        snapshot_format=msg.SnapshotFormat.Name(msg.snapshot_format),
        solver_mode=msg.SolverMode.Name(msg.solver_mode),
        weights=_weights(msg, where, weights),
        train_net=train, test_nets=tests, origin=filename, lines=lines)


def _weights(msg, where, override: Sequence[str] | None) -> tuple[str, ...]:
    """The caffemodels to start from: Caffe splits each entry at commas (LoadNetWeights)."""
    if override is not None:
        return tuple(_existing(where("weights"), "--weights", w) for w in override)
    return tuple(_existing(where("weights"), "weights", w.strip()) for e in msg.weights for w in e.split(","))


def _float(x: float | None) -> float | None:
    """A float32 field as the shortest decimal that rounds to it (0.01, not 0.009999999776)."""
    return None if x is None else float(str(np.float32(x)))


def _nets(msg, where) -> tuple[NetSpec, tuple[NetSpec, ...]]:
    from converters.caffe.proto import caffe_pb2

    given = [f for f in TRAIN_FIELDS if msg.HasField(f)]
    if len(given) != 1:
        what = "none" if not given else ", ".join(given)
        raise CompressError(f"{where(given[-1] if given else '')}: the solver must name exactly one train "
                            f"net with one of {', '.join(TRAIN_FIELDS)}; found {what}")
    field = given[0]
    is_file = field in ("net", "train_net")
    path = (msg.net or msg.train_net) if is_file else None
    train_param = _read_net(where(field), field, path) if is_file else getattr(msg, field)
    label = f"{field} file: {path}" if is_file else field
    sources: list[tuple[str, str, str | None, object]] = []  # (source, field, path, NetParameter)
    for net in msg.test_net_param:
        sources.append(("test_net_param", "test_net_param", None, net))
    for test_path in msg.test_net:
        sources.append((f"test_net file: {test_path}", "test_net", test_path,
                        _read_net(where("test_net"), "test_net", test_path)))
    n_iter, n_named = len(msg.test_iter), len(sources)
    if n_iter < n_named:
        raise CompressError(f"{where('test_iter')}: test_iter: given {_n(n_iter, 'time')} for "
                            f"{_n(n_named, 'test net')} "
                            "(test_net, test_net_param); each test net needs its test_iter")
    if n_iter > n_named and field not in ("net", "net_param"):
        what = "there is no test net" if not n_named else f"there are only {_n(n_named, 'test net')}"
        raise CompressError(f"{where('test_iter')}: test_iter: given {_n(n_iter, 'time')} but {what}: with "
                            f"{field}, name each with test_net or test_net_param (with net, Caffe tests "
                            "that net's TEST phase)")
    for _ in range(n_iter - n_named):  # instances of the generic net in the TEST phase
        sources.append((label, field, path, train_param))
    if msg.test_state and len(msg.test_state) != len(sources):
        raise CompressError(f"{where('test_state')}: test_state: given {_n(len(msg.test_state), 'time')} for "
                            f"{_n(len(sources), 'test net')}; give it once per test net or not at all")
    train = NetSpec(label, field, path, _with_state(train_param, caffe_pb2.TRAIN, msg.train_state))
    tests = tuple(NetSpec(src, f, p, _with_state(param, caffe_pb2.TEST,
                                                    msg.test_state[i] if msg.test_state else None),
                          test_iter=msg.test_iter[i])
                  for i, (src, f, p, param) in enumerate(sources))
    return train, tests


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _with_state(net, phase: int, extra):
    """A copy of ``net`` whose state is Caffe's merge: the phase, then the net's state, then ``extra``."""
    from converters.caffe.proto import caffe_pb2

    state = caffe_pb2.NetState(phase=phase)
    state.MergeFrom(net.state)
    if extra is not None:
        state.MergeFrom(extra)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    out.state.CopyFrom(state)
    return out


def _read_net(where: str, field: str, path: str):
    from converters.caffe.prototxt import read_net_text

    return read_net_text(_existing(where, field, path))


def _existing(where: str, field: str, path: str) -> str:
    """``path`` if it is a file (relative to the working directory); else one clear error."""
    if os.path.isfile(path):
        return path
    hint = ""
    if not os.path.isabs(path) and where.split(":")[0] != "<string>":
        beside = os.path.join(os.path.dirname(where.split(":")[0]), path)
        if os.path.isfile(beside):  # os.path: False, never an OSError, for a name too long to exist
            hint = f"; it exists as {beside}: Caffe resolves solver paths against the working directory"
    raise CompressError(f"{where}: {field}: file {shown_path(path)} not found (working directory "
                        f"{os.getcwd()}{hint})")


def _snapshot_prefix(msg, filename: str) -> str:
    """UpgradeSnapshotPrefixProperty: unset -> the solver path without extension; a dir -> dir/stem."""
    if not msg.HasField("snapshot_prefix"):
        return str(Path(filename).with_suffix(""))
    if os.path.isdir(msg.snapshot_prefix):
        return str(Path(msg.snapshot_prefix) / Path(filename).stem)
    return msg.snapshot_prefix


# strings, comments, braces, newlines, and a field name (followed by ':', '{' or '<')
_TOKENS = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#[^\n]*|[{}<>]|\n'
                     r'|([A-Za-z_]\w*)\s*(?=[:{<])')


def field_lines(text: str) -> dict[str, int]:
    """The line of each top-level field's first occurrence (strings and comments skipped)."""
    out: dict[str, int] = {}
    depth, line = 0, 1
    for m in _TOKENS.finditer(text):
        tok = m.group(0)
        if tok == "\n":
            line += 1
        elif tok in "{<":
            depth += 1
        elif tok in "}>":
            depth -= 1
        elif m.group(1) and depth == 0:
            out.setdefault(m.group(1), line)
    return out
