"""Mutated solver.prototxt files, train_val nets and solver states, each run through ``compress train``
(``--resume`` for a state) in a LeNet set-up (``lenet_setup.py``).

* solver: its text's tokens and values (``prototxts.py``), and its fields: a learning-rate policy without
  its parameters, another solver type, ``snapshot_format: HDF5``, a net or weights file that is missing,
  a folder or 100,000 characters long, ``iter_size``, test nets and states;
* train_val: tokens, values and graph mutations (``graph.py``), and what a Data layer and a loss hold:
  batch size, source and backend, ``transform_param`` (a NaN scale, a crop larger than the image, a
  mean file that is not one), ``loss_weight: 0``, learning-rate multipliers, shared parameter names;
* state: the dict ``torch.save`` wrote, at any depth (a field deleted, of another type, out of range, an
  empty cursor or optimizer state, a tensor of another shape or holding NaN), or its zip and bytes.

A case whose run would be long by design (``max_iter: 2147483647`` runs for ever, as in Caffe) is
drawn again: training work is bounded by :data:`WORK` images and :data:`SNAPSHOTS` snapshots.
"""
from __future__ import annotations

import random

from tools.fuzz import lenet_setup, values
from tools.fuzz.case import Case
from tools.fuzz.graph import mutate_graph, set_scalar
from tools.fuzz.modelfiles import archive_mutation
from tools.fuzz.prototxts import token_mutation, value_mutation

WORK = 4000  # images forwarded and backpropagated, test passes included
SNAPSHOTS = 4
LONG = "x" * 100000
TRAIN = ("train", "solver.prototxt", "-o", "out.caffemodel", "--quiet", "--device", "cpu")
WRITES = ("out.caffemodel", "out.prototxt")


def case(target: str, mutation: str, changed: dict[str, bytes], encoded: bool = False,
         resume: bool = False) -> Case:
    """The set-up with ``changed`` files, running ``compress train`` (``--resume`` the state)."""
    files = {**lenet_setup.files(encoded), **({lenet_setup.STATE: lenet_setup.state()} if resume else {}),
             **changed}
    argv = TRAIN + (("--resume", lenet_setup.STATE) if resume else ())
    return Case(target, mutation, files, argv=argv, writes=WRITES, may_leave=lenet_setup.SNAPSHOTS)


def bounded(make, rng: random.Random) -> Case:
    """``make(rng)``, drawn again while the run it sets up would exceed the work bound."""
    for _ in range(20):
        c = make(rng)
        if within_bounds(c.files):
            return c
    return case(c.target, "seed", {})


def within_bounds(files: dict[str, bytes]) -> bool:
    """Whether the solver and net would train at most :data:`WORK` images and write at most
    :data:`SNAPSHOTS` snapshots (texts that do not parse train nothing)."""
    from google.protobuf import text_format

    from converters.caffe.proto import caffe_pb2

    solver, net = caffe_pb2.SolverParameter(), caffe_pb2.NetParameter()
    try:
        text_format.Merge(files["solver.prototxt"].decode(), solver)
        text_format.Merge(files["train_val.prototxt"].decode(), net)
    except Exception:  # noqa: BLE001 - not parsable (or not UTF-8): nothing would run
        return True
    batch = max([layer.data_param.batch_size for layer in net.layer] + [1])
    steps = max(solver.max_iter, 0)
    tests = steps // solver.test_interval + 1 if solver.test_interval > 0 else 1
    work = steps * max(solver.iter_size, 1) * batch + tests * sum(max(t, 0) for t in solver.test_iter) * batch
    snapshots = steps // solver.snapshot if solver.snapshot > 0 else 0
    return work <= WORK and snapshots <= SNAPSHOTS and solver.average_loss <= 10 ** 6


# -- solver.prototxt -------------------------------------------------------------------------------

def generate_solver(rng: random.Random) -> Case:
    return bounded(_solver_case, rng)


def _solver_case(rng: random.Random) -> Case:
    text = lenet_setup.SOLVER
    kind = rng.choice(["token", "value", "field", "field", "field"])
    if kind == "token":
        text, what = token_mutation(rng, text)
    elif kind == "value":
        text, what = value_mutation(rng, text)
    else:
        text, what = _solver_field(rng, text)
    return case("solver", what, {"solver.prototxt": text.encode("utf-8", "surrogateescape")})


def _solver_field(rng: random.Random, text: str) -> tuple[str, str]:
    from google.protobuf import text_format

    from converters.caffe.proto import caffe_pb2

    msg = text_format.Parse(text, caffe_pb2.SolverParameter())
    op = rng.choice(["set", "set", "drop", "policy", "type", "hdf5", "net", "weights", "state", "iter_size"])
    if op == "set":
        field = rng.choice([f for f in msg.DESCRIPTOR.fields if f.message_type is None])
        set_scalar(rng, msg, field)
        op = f"set-{field.name}"
    elif op == "drop":
        name = rng.choice(["net", "base_lr", "lr_policy", "max_iter", "test_iter", "test_interval", "gamma",
                           "power", "snapshot_prefix", "random_seed"])
        msg.ClearField(name)
        op = f"drop-{name}"
    elif op == "policy":
        msg.lr_policy = rng.choice(["fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid", "cosine",
                                    ""])
        if rng.random() < 0.5:
            msg.ClearField(rng.choice(["gamma", "power", "stepsize"]))
        if rng.random() < 0.3:
            msg.stepvalue.extend(rng.sample([0, 1, 3, 2, -1, 2 ** 31 - 1], k=2))
    elif op == "type":
        msg.type = rng.choice(["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam", "Lion", ""])
        if rng.random() < 0.3:
            msg.solver_type = rng.choice(list(msg.SolverType.values()))
    elif op == "hdf5":
        msg.snapshot_format = msg.HDF5
    elif op == "net":
        path = rng.choice(["missing.prototxt", LONG, "train_lmdb", "solver.prototxt", "",
                           "train_lmdb/data.mdb"])
        field = rng.choice(["net", "train_net", "test_net"])
        if field == "test_net":
            msg.test_net.append(path)
        else:
            setattr(msg, field, path)
    elif op == "weights":
        msg.weights.append(rng.choice(["missing.caffemodel", "train_val.prototxt", LONG, "a.caffemodel, b",
                                       "train_lmdb/data.mdb", ","]))
    elif op == "state":
        target = msg.train_state if rng.random() < 0.5 else msg.test_state.add()
        target.level = rng.choice([0, 1, -1, 2 ** 31 - 1])
        target.stage.append(rng.choice(["deploy", "", LONG]))
    else:
        msg.iter_size = rng.choice([0, 1, 2, 7, 50, 1000, -1, 2 ** 31 - 1])
    return text_format.MessageToString(msg), f"solver-{op}"


# -- train_val.prototxt ----------------------------------------------------------------------------

def generate_train_val(rng: random.Random) -> Case:
    return bounded(_train_val_case, rng)


def _train_val_case(rng: random.Random) -> Case:
    text = lenet_setup.TRAIN_VAL
    kind = rng.choice(["token", "value", "graph", "data", "data", "loss"])
    if kind == "token":
        text, what = token_mutation(rng, text)
    elif kind == "value":
        text, what = value_mutation(rng, text)
    elif kind == "graph":
        text, what = mutate_graph(rng, text)
    else:
        text, what = _data_or_loss(rng, text, kind)
    return case("train-val", what, {"train_val.prototxt": text.encode("utf-8", "surrogateescape")})


def _data_or_loss(rng: random.Random, text: str, kind: str) -> tuple[str, str]:
    from google.protobuf import text_format

    from converters.caffe.prototxt import parse_net_text

    net = parse_net_text(text)
    layers = {layer.name: layer for layer in net.layer}
    if kind == "data":
        layer = rng.choice([x for x in net.layer if x.type == "Data"])
        op = rng.choice(["batch", "source", "backend", "transform", "transform", "data-param", "type",
                         "tops"])
        if op == "batch":
            layer.data_param.batch_size = rng.choice([0, 1, 3, 24, 25, 64, 2 ** 31])
        elif op == "source":
            layer.data_param.source = rng.choice(["missing_lmdb", "solver.prototxt", "", LONG, ".",
                                                  "test_lmdb"])
        elif op == "backend":
            layer.data_param.backend = layer.data_param.LEVELDB
        elif op == "transform":
            t = layer.transform_param
            field = rng.choice(list(t.DESCRIPTOR.fields))
            if field.name == "mean_file":
                t.mean_file = rng.choice(["missing.binaryproto", "solver.prototxt", "train_lmdb/data.mdb"])
            elif field.name == "mean_value":
                t.mean_value.extend([rng.choice(values.FLOATS)] * rng.choice([1, 2, 3]))
            else:
                set_scalar(rng, t, field)
            op = f"transform-{field.name}"
        elif op == "data-param":
            field = rng.choice([f for f in layer.data_param.DESCRIPTOR.fields if f.name not in ("source",)])
            set_scalar(rng, layer.data_param, field)
            op = f"data-param-{field.name}"
        elif op == "type":
            layer.type = rng.choice(["ImageData", "HDF5Data", "MemoryData", "DummyData", "Input",
                                     "WindowData"])
        else:
            del layer.top[rng.randrange(len(layer.top)):]
        return text_format.MessageToString(net), f"data-{op}"
    op = rng.choice(["loss-weight", "loss-param", "lr-mult", "param-name", "accuracy", "no-loss"])
    loss = layers["loss"]
    if op == "loss-weight":
        loss.loss_weight.extend(rng.choice([[0.0], [float("nan")], [float("inf")], [-1.0], [1e30],
                                            [1.0, 1.0]]))
    elif op == "loss-param":
        set_scalar(rng, loss.loss_param, rng.choice(list(loss.loss_param.DESCRIPTOR.fields)))
    elif op == "lr-mult":
        spec = rng.choice([p for x in net.layer for p in x.param])
        set_scalar(rng, spec, spec.DESCRIPTOR.fields_by_name[rng.choice(["lr_mult", "decay_mult"])])
    elif op == "param-name":
        for x in rng.sample([layers["conv1"], layers["conv2"], layers["ip1"], layers["ip2"]], k=2):
            x.param[0].name = "shared"
    elif op == "accuracy":
        layers["accuracy"].accuracy_param.top_k = rng.choice([0, 5, 10, 11, 2 ** 31 - 1])
    else:
        net.layer.remove(loss)
    return text_format.MessageToString(net), op


# -- .solverstate.pt --------------------------------------------------------------------------------

SPECIAL_VALUES = [None, -1, 0, 10 ** 30, 2 ** 63 - 1, "x", LONG, [], {}, 1.5, float("nan"), True, b"\xff"]


def generate_state(rng: random.Random) -> Case:
    data, what = archive_mutation(rng, lenet_setup.state(), _state_dict)
    return case("solverstate", what, {lenet_setup.STATE: data}, resume=True)


def _state_dict(rng: random.Random, state: dict) -> str:
    """One change anywhere in the state's nested dicts and lists, in place; its name."""
    import torch

    places = list(_walk(state, ()))
    container, key, path = rng.choice(places)
    op = rng.choice(["delete", "value", "value", "tensor", "empty", "extra"])
    value = container[key]
    if op == "delete" and isinstance(container, dict):
        del container[key]
    elif op == "tensor" or (op == "value" and isinstance(value, torch.Tensor) and rng.random() < 0.6):
        container[key] = _tensor_like(rng, value)
        op = "tensor"
    elif op == "empty" and isinstance(value, (dict, list)):
        container[key] = type(value)()
    elif op == "extra" and isinstance(value, dict):
        value[rng.choice(["extra", 7, LONG])] = rng.choice(SPECIAL_VALUES)
    else:
        container[key] = rng.choice(SPECIAL_VALUES)
        op = "value"
    return f"{op}:{'.'.join(map(str, path))[:80]}"


def _walk(value, path: tuple):
    """(container, key, path) of every value inside ``value``, depth first."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield value, k, (*path, k)
        yield from _walk(v, (*path, k))


def _tensor_like(rng: random.Random, t):
    import torch

    if not isinstance(t, torch.Tensor):
        return torch.zeros(3)
    kind = rng.choice(["shape", "nan", "dtype", "scalar", "huge"])
    if kind == "shape":
        return torch.zeros(t.numel() + 1) if t.dim() < 2 else t.reshape(t.shape[0], -1)[:, :1].clone()
    if kind == "nan" and t.is_floating_point() and t.numel():
        t = t.clone()
        t.view(-1)[0] = float("nan")
        return t
    if kind == "dtype":
        return t.to(torch.float64 if not t.is_floating_point() else torch.int64)
    if kind == "scalar":
        return torch.tensor(1.0)
    return t.clone().fill_(2 ** 40) if not t.is_floating_point() else t.clone().fill_(3e38)
