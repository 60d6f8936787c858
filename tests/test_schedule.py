"""Segments of a run and the learning rate at each step, against hand-written expectations."""
from __future__ import annotations

import math

import pytest

from compress.errors import CompressError
from compress.train.schedule import Segment, cosine, cycle_segments, schedule, split_segments


def test_cycle_segments_cycles_and_retrain():
    segs = cycle_segments([2, 2], retrain_epochs=2, steps_per_epoch=10)
    assert [(s.phase, s.cycle, s.start, s.steps, s.cycle_steps, s.ends_cycle) for s in segs] == [
        ("method", 0, 0, 10, 20, False), ("method", 0, 10, 10, 20, True),
        ("method", 1, 0, 10, 20, False), ("method", 1, 10, 10, 20, True),
        ("retrain", 0, 0, 10, 20, False), ("retrain", 0, 10, 10, 20, True)]


def test_unknown_epoch_length_gives_unknown_cycles():
    (seg,) = cycle_segments([1], 0, None)
    assert seg.steps is None and seg.cycle_steps is None and cosine(0.1, 5, None) == 0.1


def test_split_segments_cuts_at_every_global_multiple():
    segs = cycle_segments([1, 1], 1, 7)  # steps 0-7, 7-14, 14-21 (global)
    out = split_segments(segs, [5, 10])
    ends, done = [], 0
    for s in out:
        done += s.steps
        ends.append(done)
    assert ends == [5, 7, 10, 14, 15, 20, 21]
    assert [s.ends_cycle for s in out] == [False, True, False, True, False, False, True]
    assert [s.ends_epoch for s in out] == [False, True, False, True, False, False, True]  # epochs of 7
    assert [(s.phase, s.start) for s in out[:2]] == [("method", 0), ("method", 5)]
    assert sum(s.steps for s in out if s.phase == "retrain") == 7


def test_cosine_and_constant():
    assert cosine(1.0, 0, 10) == 1.0
    assert cosine(1.0, 5, 10) == pytest.approx(0.5)
    assert cosine(2.0, 3, 12) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert schedule("constant")(0.3, 7, 10) == 0.3
    with pytest.raises(CompressError, match="lr schedule must be one of cosine, constant, got 'step'"):
        schedule("step")


def test_segment_is_frozen():
    with pytest.raises(AttributeError):
        Segment("method", 0, 0, 1, 1, True).steps = 2  # type: ignore[misc]


def test_cycle_segments_of_unequal_cycles():
    """A method's own cycles (progressive ADMM: two 1-epoch ADMM iterations, a 2-epoch stage retrain)."""
    segs = cycle_segments([1, 1, 2], 1, 5)
    assert [(s.phase, s.cycle, s.start, s.cycle_steps, s.ends_cycle) for s in segs] == [
        ("method", 0, 0, 5, True), ("method", 1, 0, 5, True), ("method", 2, 0, 10, False),
        ("method", 2, 5, 10, True), ("retrain", 0, 0, 5, True)]
    assert all(s.ends_epoch for s in segs)


def test_method_cycles_divide_the_method_phase_into_equal_cycles_and_a_rest():
    from compress.layers import prunable_layers
    from compress.prune.methods.base import Method
    from tests.nets import Tiny

    class EveryTwo(Method):
        def cycle_epochs(self) -> int:
            return 2

    assert EveryTwo(prunable_layers(Tiny()), epochs=4).cycles() == [2, 2]
    assert EveryTwo(prunable_layers(Tiny()), epochs=5).cycles() == [2, 2, 1]
    assert Method(prunable_layers(Tiny()), epochs=3).cycles() == [3]
