"""The Caffe front door's task and batches: what the shared training loop trains when a solver drives it.

:class:`CaffeTask` trains the TRAIN-phase net of a ``train_val.prototxt`` on its own objective (the
weighted sum of its loss layers, ``converters.caffe.phase``) and runs Caffe's test passes: ``test_iter``
forward passes of each TEST net (which shares the TRAIN net's blobs), each output blob averaged over
them, as BVLC ``Solver::Test`` does. :class:`SolverBatches` draws the TRAIN net's batches from its data
layers' feeders (``compress.data.caffe``), ``iter_size`` of them per update. Both carry their data
cursors in ``state_dict`` so that a resumed run reads the same records.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from compress.errors import CompressError
from compress.savedstate import Fields
from compress.train.trainer import MicroBatches
from converters.caffe.names import listed


def next_batch(feeders: Sequence) -> dict[str, torch.Tensor]:
    """One batch of every data layer of a net, merged into ``{top: tensor}``."""
    batch: dict[str, torch.Tensor] = {}
    for f in feeders:
        batch.update(f.next_batch())
    return batch


def feeders_state(feeders: Sequence) -> dict[str, Any]:
    return {f.name: f.state_dict() for f in feeders}


def load_feeders_state(feeders: Sequence, state: dict[str, Any], where: str) -> None:
    """Every feeder's cursor from ``state`` (``where``: its place in the checkpoint); one missing is an
    error, as a run that starts its data again would not be the run that was saved."""
    fields = Fields(state, where)
    missing = [f.name for f in feeders if f.name not in state]
    if missing:
        raise CompressError(f"{where}: no data cursor for layer(s) {listed(missing)}")
    for f in feeders:
        f.load_state_dict(state[f.name], fields.at(f.name))


def accuracy_top(net) -> str | None:
    """The top of the net's first Accuracy layer with ``top_k`` 1 (its top-1 accuracy, whatever the top is
    called), found by layer type; None when it has none."""
    for node in net.nodes:
        if node.type == "Accuracy" and node.tops:
            param = net.layer_params.get(node.name)
            if param is None or param.accuracy_param.top_k == 1:
                return node.tops[0]
    return None


@dataclass
class TestNet:
    """One TEST net of the solver, its data layers and ``test_iter``."""

    net: Any  # converters.caffe.phase.PhaseNet
    feeders: list
    test_iter: int


class CaffeTask:
    """Objective: the TRAIN net's weighted losses. Test outputs: every TEST net's output blobs averaged
    over its ``test_iter`` batches, keyed by blob name (``net1/<name>`` for a second test net...).

    Under torchrun the gradients are averaged over the ranks after each backward pass (the phase net's
    ``run`` is not a forward DDP can wrap; Caffe's multi-GPU solvers average the same way), and only rank 0
    tests (``tests_here``), on the whole test set, as Caffe's root solver does."""

    average_gradients = True

    def __init__(self, train_net, tests: list[TestNet], device: torch.device,
                 tests_here: bool = True) -> None:
        self.module, self.tests, self.device, self.tests_here = train_net, tests, device, tests_here
        self.accuracy_key = accuracy_top(tests[0].net) if tests else None

    def _to(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        out = model.run(self._to(batch))
        seen = len(next(iter(batch.values())))
        return out.objective, {"seen": seen, "outputs": out.outputs}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float] | None:
        if not self.tests or not self.tests_here:
            return None
        result: dict[str, float] = {}
        for k, t in enumerate(self.tests):
            sums: dict[str, torch.Tensor] = {}
            for _ in range(t.test_iter):
                out = t.net.run(self._to(next_batch(t.feeders)))
                for name, value in out.outputs.items():
                    v = value.detach().double().reshape(-1)
                    sums[name] = sums[name] + v if name in sums else v.clone()
            prefix = "" if k == 0 else f"net{k}/"
            for name, total in sums.items():
                mean = total / t.test_iter
                if mean.numel() == 1:
                    result[prefix + name] = float(mean)
                else:
                    result.update({f"{prefix}{name}[{i}]": float(v) for i, v in enumerate(mean)})
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"tests": [feeders_state(t.feeders) for t in self.tests]}

    def load_state_dict(self, state: dict[str, Any], where: str = "task") -> None:
        tests = Fields(state, where).sequence("tests")
        if len(tests) != len(self.tests):
            raise CompressError(f"{where}.tests: {len(tests)} test nets' cursors, the solver has "
                                f"{len(self.tests)} test nets")
        for k, (t, s) in enumerate(zip(self.tests, tests, strict=True)):
            load_feeders_state(t.feeders, s, f"{where}.tests[{k}]")


class SolverBatches:
    """The TRAIN net's batches: ``iter_size`` batches of its data layers per update, read sequentially
    (the feeders keep their cursors across segments; the segment index plays no part), each one when
    the loop is ready for it (:class:`MicroBatches`)."""

    steps_per_epoch = None

    def __init__(self, feeders: list, iter_size: int = 1) -> None:
        self.feeders, self.iter_size = feeders, iter_size

    def segment(self, index: int, steps: int | None) -> Iterator:
        if steps is None:
            raise CompressError("a solver-driven segment needs a length")
        for _ in range(steps):
            if self.iter_size > 1:
                yield MicroBatches(self.iter_size, lambda: next_batch(self.feeders))
            else:
                yield next_batch(self.feeders)

    def state_dict(self) -> dict:
        return feeders_state(self.feeders)

    def load_state_dict(self, state: dict, where: str = "batches") -> None:
        load_feeders_state(self.feeders, state, where)
