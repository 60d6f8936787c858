"""A Caffe user's set-up, built: the solver, its TRAIN and TEST nets with their data layers, and the
pieces the shared training loop takes (task, batches, optimizer factory, segments).

``build_session(solver, device)`` follows ``caffe train --solver S --weights W``: it reads the data layers
of the TRAIN net (and of each TEST net) through ``compress.data.caffe``, builds the phase nets with
``converters.caffe.phase`` (fillers drawn from ``random_seed``, or 0 when the solver leaves it unset, so
runs repeat; trained blobs copied in by layer name from each ``weights`` file in turn; TEST nets sharing
the TRAIN net's blobs), and collects every learnable blob with its ``lr_mult``/``decay_mult`` for the
:class:`~compress.solver.optimizer.CaffeSolver`.

How the solver's iterations map onto a pruning run (``compress prune --solver``): one *epoch* of the
shared loop is one run of the solver's schedule, ``max_iter`` iterations with the policy starting again
at ``base_lr`` (the ADMM authors' Caffe fork restarts its solver the same way), so each ADMM iteration,
the masked retrain's epochs and the other methods' epochs each replay the solver's learning-rate policy;
segments end at every ``test_interval`` (a test pass) and ``snapshot``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from compress.errors import CompressError
from compress.solver.config import SolverConfig
from compress.solver.optimizer import CaffeSolver, Learnable
from compress.solver.task import CaffeTask, SolverBatches, TestNet
from compress.train.schedule import Segment, cycle_segments, split_segments

DEFAULT_SEED = 0  # random_seed unset (Caffe would draw one): a fixed seed keeps runs repeatable


@dataclass
class Session:
    solver: SolverConfig
    train_net: nn.Module  # converters.caffe.phase.PhaseNet in train mode
    tests: list[TestNet]
    task: CaffeTask
    batches: SolverBatches
    learnables: list[Learnable]
    seed: int

    def optimizer(self, cyclic: bool = False):
        """A factory ``(params, lr, weight_decay, cfg) -> CaffeSolver`` for the shared loop (the learning
        rate and decay come from the solver; ``cyclic``: the policy restarts every ``max_iter``)."""
        learnables, solver = self.learnables, self.solver

        def make(params, lr, weight_decay, cfg):
            cls = CyclicCaffeSolver if cyclic else CaffeSolver
            return cls(learnables, solver)
        return make

    def segments(self, cycles: list[int], retrain_epochs: int,
                 evaluate_epoch_ends: bool = False) -> list[Segment]:
        """The loop's segments: ``max_iter`` iterations per epoch, cut at every test interval and
        snapshot; tests at multiples of ``test_interval`` (and, for pruning, at every epoch end). ``cycles``:
        the method phase's cycles in epochs (``method.cycles()``)."""
        s = self.solver
        epochs = cycle_segments(cycles, retrain_epochs, s.max_iter)
        test_every = s.test_interval if s.test_iter and self.tests else 0
        segs = split_segments(epochs, [s.test_interval if test_every else 0, s.snapshot], test_every)
        if evaluate_epoch_ends and self.tests:
            segs = [dataclasses.replace(g, evaluate=True) if (g.start + g.steps) % s.max_iter == 0 else g
                    for g in segs]
        return segs


class CyclicCaffeSolver(CaffeSolver):
    """A CaffeSolver whose policy restarts every ``max_iter`` updates (Caffe's ``iter`` and
    ``current_step`` go back to 0; the histories carry on), for solver-driven pruning."""

    @torch.no_grad()
    def step(self, closure=None):
        period = max(1, self.config.max_iter)
        total = self.iteration
        if total % period == 0:
            self.current_step = 0
        self.iteration = total % period
        try:
            return super().step(closure)
        finally:
            self.iteration = total + 1


def build_session(solver: SolverConfig, device: torch.device, dist=None) -> Session:
    from compress.data.caffe import build_feeder
    from converters.caffe.params import param_specs
    from converters.caffe.phase import build_phase_net, phase_layers

    if solver.train_net is None:
        raise CompressError(f"{solver.origin}: the solver names no train net")
    seed = solver.random_seed if solver.random_seed >= 0 else DEFAULT_SEED
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    counter = iter(range(1 << 30))

    def feeders(spec, phase):
        layers = [layer for layer in phase_layers(spec.param, phase) if _is_data(layer)]
        if not layers:
            raise CompressError(f"{solver.origin}: the {phase} net ({spec.source}) has no data layer "
                                "(Data, ImageData or HDF5Data) to train from")
        return [build_feeder(layer, phase, seed=seed + next(counter)) for layer in layers]

    train_feeders = feeders(solver.train_net, "TRAIN")
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    for f in train_feeders:  # each rank its share of the records; tests run on rank 0, on all of them
        f.shard(rank, world)
    blobs = _weights(solver.weights)
    train_net = build_phase_net(solver.train_net.param, "TRAIN", blobs=blobs, generator=generator,
                                input_shapes=_shapes(train_feeders), source=", ".join(solver.weights) or "-")
    tests = []
    for spec in solver.test_nets:
        fs = feeders(spec, "TEST")
        net = build_phase_net(spec.param, "TEST", input_shapes=_shapes(fs), share_with=train_net,
                              generator=generator)
        tests.append(TestNet(net, fs, int(spec.test_iter)))
    train_net.to(device)
    for t in tests:
        t.net.to(device)
    learnables = [Learnable(s.param, s.lr_mult, s.decay_mult, s.name) for s in param_specs(train_net)
                  if isinstance(s.param, nn.Parameter)]
    if world > 1:
        torch.manual_seed(seed + rank)  # the weights are drawn: each rank its own dropout masks
    return Session(solver, train_net, tests, CaffeTask(train_net, tests, device, tests_here=rank == 0),
                   SolverBatches(train_feeders, solver.iter_size), learnables, seed)


def _is_data(layer) -> bool:
    from compress.data.caffe import FEEDERS
    from converters.caffe.layers.io import DATA_TYPES

    return layer.type in FEEDERS or layer.type in DATA_TYPES


def _shapes(feeders) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for f in feeders:
        shapes.update(f.shapes)
    return shapes


def _weights(paths) -> dict | None:
    """Blobs of each caffemodel in turn, a later file's layers replacing an earlier one's (Caffe's
    ``CopyTrainedLayersFrom`` for every ``--weights`` entry)."""
    if not paths:
        return None
    from converters.caffe.reader import read_caffemodel

    blobs: dict = {}
    for p in paths:
        blobs.update(read_caffemodel(p).blobs)
    return blobs


def model_weights(model, prototxt, net) -> list[str]:
    """Copy MODEL's blobs into a solver's net by layer name (a ``.caffemodel`` as Caffe's ``--weights``,
    or any model the tool loads); returns the net's learnable layers MODEL has no blobs for."""
    from pathlib import Path

    from converters.caffe import caffe_blobs
    from converters.caffe.params import copy_trained_layers

    if Path(str(model)).suffix.lower() == ".caffemodel":
        from converters.caffe.reader import read_caffemodel

        blobs = read_caffemodel(model).blobs
    else:
        from compress.modelfile import load_model

        blobs = caffe_blobs(load_model(model, prototxt).net)
    copied = [n for n in blobs if any(node.name == n for node in net.nodes)]
    if not copied:
        raise CompressError(f"{model}: none of its layers ({', '.join(list(blobs)[:6])}) is in the solver's "
                            "net; give the weights trained with this train_val")
    copy_trained_layers(net, blobs, str(model))
    return [n.name for n in net.nodes if n.name not in blobs and _has_blobs(net.layer(n.name))]


def _has_blobs(module) -> bool:
    from converters.caffe.layers.base import CaffeBlobs

    return isinstance(module, CaffeBlobs) and bool(module.get_caffe_blobs())
