"""Where a pruning run's net, data and optimization come from: the two front doors of ``prune``.

- :class:`compress.train.loaders.LoaderFront` (the command-line flags, shared with ``compress quantize``): a
  model (zoo name, model file, ``.caffemodel``), a data source of :func:`compress.data.get_data` with the
  tool's epochs, cosine/constant rates and SGD/Adam.
- :class:`SolverFront` (``--solver SOLVER.prototxt``): a Caffe user's own set-up. The net is the
  solver's train_val (its TRAIN net, weights copied in by layer name from MODEL), the data its data
  layers, the optimizer, rate policy, weight decay and momentum the solver's. One epoch of the shared
  loop is one run of the solver's schedule (``max_iter`` iterations, the policy restarting at
  ``base_lr``: :mod:`compress.solver.session`), so an ADMM iteration, the masked retrain (1 run unless
  ``--retrain-epochs`` says otherwise) and the other methods' epochs each replay it.

Both give the loop its pieces and say what the model's meta records about them.
"""
from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError


class SolverFront:
    def __init__(self, model, cfg, dev: torch.device, dist) -> None:
        import dataclasses

        from compress.solver.read import read_solver
        from compress.solver.session import build_session, model_weights

        solver = read_solver(cfg.solver, weights=[])
        if cfg.max_iter is not None:
            solver = dataclasses.replace(solver, max_iter=cfg.max_iter)
        if solver.max_iter < 1:
            raise CompressError(f"{solver.where('max_iter')}: max_iter must be >= 1 (or give --max-iter)")
        self.solver, self.cfg, self.dev, self.dist = _own_snapshots(solver, cfg.output), cfg, dev, dist
        if cfg.output is not None:
            from compress.outputs import check_outputs

            check_outputs([cfg.output, *self.extra_outputs(cfg.output)], files=solver.input_files())
        self.session = build_session(solver, dev, dist)  # under torchrun: each rank its share
        self.net = self.session.train_net
        model_weights(model, cfg.prototxt, self.net)
        self.name, self.meta = str(model), {"source": str(model)}
        self.dataset = f"solver {cfg.solver}"

    def augment(self, given: tuple[str, ...] | None) -> tuple[str, ...]:
        if given:
            raise CompressError("--augment does not apply with --solver (the net's transform_param does "
                                "Caffe's crop and mirror)")
        return ()

    def retrain_default(self, cls, targets) -> int:
        return 1 if targets is not None else 0

    def retrain_weight_decay(self, cls, given: float | None) -> float | None:
        return given  # the solver's weight_decay and decay_mult, unless the flag says otherwise

    def hyperparameters(self, tc) -> dict[str, Any]:
        return {"solver": self.solver.hyperparameters(),
                "schedule": f"one epoch = one run of the solver's schedule ({self.solver.max_iter} "
                            "iterations, the lr policy restarting at base_lr)"}

    def before(self, tc) -> float | None:
        from compress.train.task import top1

        return top1(self.session.task, self.session.task.evaluate())

    def train_kwargs(self, method, tc) -> dict[str, Any]:
        from compress.solver.observer import CaffeObserver
        from compress.train.progress import Progress

        s, main = self.session, self.dist.is_main
        retrain = (tc.retrain_epochs or 0) if method.prunes else 0
        return {"train_data": None, "test_data": None, "task": s.task, "batches": s.batches,
                "segments": s.segments(method.cycles(), retrain, evaluate_epoch_ends=True),
                "optimizer": s.optimizer(cyclic=True),
                "observer": CaffeObserver(self.solver, self.net, Progress(tc.progress and main), None,
                                          make_dirs=True, writes=main)}

    def describe(self) -> str:
        return f"{self.dataset} ({self.solver.max_iter} iterations per epoch)"

    def notes(self) -> tuple[str, ...]:
        return ()

    def meta_extra(self) -> dict[str, Any]:
        return {"solver": {"path": self.cfg.solver, **self.solver.hyperparameters()}}

    @staticmethod
    def extra_outputs(output: str) -> list[str]:
        """What :meth:`save_extra` writes beside the model file (checked with the outputs before the run)."""
        from pathlib import Path

        return [str(Path(output).with_suffix(".caffemodel")), str(Path(output).with_suffix(".prototxt"))]

    def save_extra(self, output: str, net: nn.Module) -> list[str]:
        """Beside the model file: the weights as ``.caffemodel`` and the deploy ``.prototxt``."""
        from converters import caffe
        from converters.atomic import atomic_write_text

        weights, deploy = self.extra_outputs(output)
        caffe.save(net, weights)
        tests = self.session.tests
        atomic_write_text(deploy, (tests[0].net if tests else net).netdef)
        print(f"wrote {weights} and {deploy}", file=sys.stderr, flush=True)
        return [weights, deploy]


def snapshot_dir(output: str) -> str:
    """Where a solver-driven pruning run writes the solver's snapshots: beside its own output."""
    return f"{output}.snapshots"


def _own_snapshots(solver, output: str | None):
    """The solver with its snapshots moved out of the user's ``snapshot_prefix`` (where their own training
    run writes: a pruning run must never replace those files) into ``<output>.snapshots/``, or off without
    an output; the snapshot after training is off (the pruned model file is the run's result)."""
    import dataclasses
    import os

    if output is None or solver.snapshot <= 0:
        return dataclasses.replace(solver, snapshot=0, snapshot_after_train=False)
    name = os.path.basename(solver.snapshot_prefix.rstrip("/")) or "snapshot"
    return dataclasses.replace(solver, snapshot_prefix=os.path.join(snapshot_dir(output), name),
                               snapshot_after_train=False)
