"""What ``caffe train`` shows and writes while it trains, for the shared loop (BVLC ``solver.cpp``).

- Every iteration: one JSON line ``{"iter": N, "loss": L, "lr": R}`` in the ``--log`` file (N counts
  from 0, L is the mean loss of that iteration's ``iter_size`` forward passes, R the rate its update
  used), and every test pass ``{"iter": N, "test": {output blob: value, ...}}`` (N updates done).
- Every ``display`` iterations Caffe's block: ``Iteration N (x iter/s), loss = S`` with ``S`` the loss
  smoothed over the last ``average_loss`` iterations (``Solver::UpdateSmoothedLoss``), each train net
  output, and ``Iteration N, lr = R``; each test pass prints ``Test net output #i: name = value``.
- Every ``snapshot`` iterations ``<snapshot_prefix>_iter_N.caffemodel`` and, beside it, the resumable
  state ``<snapshot_prefix>_iter_N.solverstate.pt`` (the project's checkpoint format, not Caffe's
  binary ``.solverstate``: resume with ``compress train --resume``); both written atomically.
"""
from __future__ import annotations

import json
import time
from typing import Any

from compress.errors import CompressError
from compress.savedstate import Fields
from compress.train.progress import Progress
from compress.train.trainer import Observer


def snapshot_paths(prefix: str, it: int) -> tuple[str, str]:
    """Caffe's snapshot name for iteration ``it``, and the resumable state beside it."""
    base = f"{prefix}_iter_{it}"
    return f"{base}.caffemodel", f"{base}.solverstate.pt"


class CaffeObserver(Observer):
    def __init__(self, solver, train_net, progress: Progress, log: str | None, *,
                 make_dirs: bool = False, writes: bool = True) -> None:
        self.solver, self.train_net, self.progress = solver, train_net, progress
        self.writes = writes  # False on torchrun's ranks other than 0: they print and write nothing
        self.make_dirs = make_dirs  # create the snapshot folder (a pruning run's own); Caffe expects it
        self.log_path = log
        self._log = None
        self.losses: list[float] = []  # the last average_loss losses (a ring, as Caffe keeps them)
        self.smoothed = 0.0
        self.snapshots: list[str] = []
        self.last_test: dict[str, float] | None = None  # the outputs of the last test pass
        self._clock = (time.perf_counter(), 0)

    # --- per iteration -------------------------------------------------------------------------
    def step(self, trainer, it: int, loss: float, rate: float, info: dict) -> None:
        self._smooth(it, loss)
        self.write({"iter": it, "loss": loss, "lr": rate})
        if self.solver.display_now(it) and self.progress.enabled:
            start, first = self._clock
            now = time.perf_counter()
            speed = (it - first) / (now - start) if it > first and now > start else 0.0
            self._clock = (now, it)
            outputs = {k: float(v.detach().double().mean())
                       for k, v in (info.get("outputs") or {}).items()}
            self.progress.caffe_display(it, self.smoothed, rate, outputs, speed)

    def _smooth(self, it: int, loss: float) -> None:
        """Caffe's ``UpdateSmoothedLoss`` (the start iteration is 0: a resumed run restores the ring)."""
        n = max(1, self.solver.average_loss)
        if len(self.losses) < n:
            self.losses.append(loss)
            size = len(self.losses)
            self.smoothed = (self.smoothed * (size - 1) + loss) / size
        else:
            idx = it % n
            self.smoothed += (loss - self.losses[idx]) / n
            self.losses[idx] = loss

    # --- per segment ---------------------------------------------------------------------------
    def segment_end(self, trainer, entry: dict) -> None:
        it = trainer.step
        if entry.get("test"):
            self.test(it, entry["test"])
        last = trainer.epoch == len(trainer.segments)
        if self.solver.snapshot_now(it) or (last and self.solver.snapshot_at_end(it)):
            self.snapshot(trainer)  # Solve's snapshot after training, unless one was just written
        if self._log is not None:
            self._log.flush()

    def test(self, it: int, outputs: dict[str, float]) -> None:
        self.last_test = outputs
        self.write({"iter": it, "test": outputs})
        self.progress.caffe_test(it, outputs)

    def snapshot(self, trainer) -> tuple[str, str]:
        from converters import caffe

        model, state = snapshot_paths(self.solver.snapshot_prefix, trainer.step)
        if self.make_dirs and self.writes:
            import os

            os.makedirs(os.path.dirname(model) or ".", exist_ok=True)
        if self.writes:
            caffe.save(self.train_net, model)
        trainer.save_state(state)  # every rank: it gathers their generators
        self.snapshots.append(model)
        self.progress.line(f"Snapshotting to binary proto file {model} (resumable state: {state})")
        return model, state

    # --- log and state -------------------------------------------------------------------------
    def write(self, record: dict[str, Any]) -> None:
        if self.log_path is None or not self.writes:
            return
        if self._log is None:
            self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._log.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "smoothed": self.smoothed}

    def load_state_dict(self, state: dict, where: str = "observer") -> None:
        fields = Fields(state, where)
        losses = fields.numbers("losses")
        if len(losses) > max(1, self.solver.average_loss):
            raise CompressError(f"{fields.at('losses')}: {len(losses)} losses kept, average_loss is "
                                f"{self.solver.average_loss}")
        self.losses, self.smoothed = losses, fields.number("smoothed")
