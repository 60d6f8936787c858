"""When things happen in a training run: its segments ("epochs") and the learning rate at every step.

A run is a list of :class:`Segment`: a stretch of optimizer steps that ends with an evaluation, a log
entry and (maybe) a checkpoint. Segments belong to a phase (``method``: the pruning method shapes the
steps; ``retrain``: masked retraining after the hard prune) and to a learning-rate *cycle* inside it
(an ADMM iteration restarts the rate at its base value, as the ADMM authors' solver does; the other
methods' phase and the retrain are one cycle each). With data loaders a segment is one pass over the
training data (an epoch; ``steps`` may be unknown until the loader is exhausted); with a Caffe solver a
segment ends at every ``test_interval`` and at every cycle end.

Learning-rate schedules are registered by name; each maps (base rate, step in cycle, cycle length) to
the rate of that step, from the counters alone, so a resumed run sets exactly the same values (a
Caffe solver computes its own rate from its policy: ``compress.solver``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from compress.errors import CompressError

PHASES = ("method", "retrain")


@dataclass(frozen=True)
class Segment:
    phase: str  # "method" or "retrain"
    cycle: int  # index of the learning-rate cycle within its phase (the ADMM iteration)
    start: int  # steps of the cycle before this segment
    steps: int | None  # steps in this segment (None: until the data runs out)
    cycle_steps: int | None  # length of the cycle in steps (None: unknown)
    ends_cycle: bool  # the method's end_iteration runs after this segment
    evaluate: bool = True  # a test pass follows it (a solver: only at multiples of test_interval)
    ends_epoch: bool = True  # the method's end_epoch runs after this segment (False: an epoch cut short)


def cycle_segments(cycles: list[int], retrain_epochs: int, steps_per_epoch: int | None) -> list[Segment]:
    """One segment per epoch: the method phase as learning-rate cycles of ``cycles[k]`` epochs each
    (a method's ``cycles()``: its ADMM iterations, a progressive stage's retrain), then the retrain."""
    spe = steps_per_epoch
    out = []
    for k, epochs in enumerate([*cycles, retrain_epochs]):
        phase, cycle = ("method", k) if k < len(cycles) else ("retrain", 0)
        out += [Segment(phase, cycle, e * spe if spe else 0, spe, epochs * spe if spe else None,
                        e == epochs - 1) for e in range(epochs)]
    return out


def split_segments(segments: list[Segment], every: list[int], test_every: int | None = None) -> list[Segment]:
    """``segments`` (all of known length) cut so that one ends at every multiple of each number in
    ``every`` (global step counts: a solver's test interval and snapshot interval). With ``test_every``
    only the segments ending at its multiples evaluate (0: none does)."""
    out: list[Segment] = []
    done = 0
    every = [n for n in every if n and n > 0]
    for seg in segments:
        if seg.steps is None:
            raise ValueError("split_segments needs segments of known length")
        start, stop = seg.start, seg.start + seg.steps
        while start < stop:
            cut = min([stop - start] + [n - done % n for n in every])
            last = start + cut == stop
            start, done = start + cut, done + cut
            test = seg.evaluate if test_every is None else bool(test_every) and done % test_every == 0
            out.append(Segment(seg.phase, seg.cycle, start - cut, cut, seg.cycle_steps,
                               seg.ends_cycle and last, test, seg.ends_epoch and last))
    return out


Schedule = Callable[[float, int, int | None], float]  # (base, step in cycle, cycle length) -> rate


def cosine(base: float, t: int, total: int | None) -> float:
    """Cosine from ``base`` to 0 over the cycle (constant when its length is unknown)."""
    if not total:
        return base
    return base * 0.5 * (1 + math.cos(math.pi * t / total))


def constant(base: float, t: int, total: int | None) -> float:
    return base


SCHEDULES: dict[str, Schedule] = {"cosine": cosine, "constant": constant}


def schedule(name: str) -> Schedule:
    try:
        return SCHEDULES[name]
    except KeyError:
        raise CompressError(f"lr schedule must be one of {', '.join(SCHEDULES)}, got {name!r}") from None
