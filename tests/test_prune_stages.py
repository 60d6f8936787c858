"""Methods that prune in steps: Han's iterative magnitude rounds and progressive ADMM (Ye et al. 2019).

The intermediate ratios follow the stated rule (geometric in the keep ratio), each step's counts are
exact, pruned weights stay exactly zero through the later steps, the learning-rate cycles are the
declared ones, and a run interrupted inside a later stage resumes bit for bit.
"""
from __future__ import annotations

import pytest
import torch

from compress.errors import CompressError
from compress.layers import prunable_layers
from compress.prune.methods import method_class
from compress.prune.methods.stages import stage_targets
from compress.prune.targets import Targets
from compress.train.checkpoint import load_checkpoint
from compress.train.trainer import TrainConfig, train
from tests.nets import Tiny
from tests.test_prune_train import Interrupt, StopAfter, loader

TARGETS = {"conv1": 0.25, "fc": 0.04}  # conv1 36 weights -> 9; fc 192 -> 8 (round(7.68))


def nonzero(net) -> dict[str, int]:
    return {n: int((layer.weight != 0).sum()) for n, layer in prunable_layers(net).items()}


class Recorder:
    """Wraps a method: the nonzero counts and the method's own masks at every epoch end."""

    def __init__(self, method):
        self.m, self.epochs = method, []
        inner = method.end_epoch

        def end_epoch(model):
            inner(model)
            masks = getattr(method, "masks", None)
            self.epochs.append((nonzero(model), None if masks is None else
                                {n: int(mk.sum()) for n, mk in masks.items()}))
        method.end_epoch = end_epoch


def test_stage_targets_are_geometric_in_the_keep_ratio_and_end_at_the_targets():
    t = Targets({"a": 0.008, "b": 1.0, "c": 0.0}, source="x")
    steps = stage_targets(t, 3)
    assert [dict(s.keep) for s in steps[:2]] == [pytest.approx({"a": 0.2, "b": 1.0, "c": 0.0}),
                                                 pytest.approx({"a": 0.04, "b": 1.0, "c": 0.0})]
    assert steps[2] is t and stage_targets(t, 1) == [t]


# ----------------------------------------------------------------------- iterative magnitude


def test_magnitude_rounds_prune_part_of_the_way_then_exactly_to_the_targets():
    torch.manual_seed(0)
    net = Tiny()
    m = method_class("magnitude")(prunable_layers(net), Targets(TARGETS), rounds=3, round_epochs=2)
    assert m.cycles() == [2, 2] and m.total_epochs() == 4
    rec = Recorder(m)
    res = train(net, m, loader(), None, TrainConfig(lr=0.1, retrain_epochs=1, lr_schedule="constant"))
    # round j keeps t**(j/3): conv1 0.63 -> 23 of 36, 0.397 -> 14; fc 0.342 -> 66 of 192, 0.117 -> 22
    assert [c for c, _ in rec.epochs] == [{"conv1": 23, "fc": 66}] * 2 + [{"conv1": 14, "fc": 22}] * 2
    assert nonzero(net) == {"conv1": 9, "fc": 8} and [h["phase"] for h in res.history][-1] == "retrain"
    assert [h["round"] for h in res.history if h["phase"] == "method"] == [1, 1, 2, 2]
    # each epoch logs the model it trained: the last epoch of round 1 is not yet pruned to round 2
    assert [h["sparsity"] for h in res.history if h["phase"] == "method"] == pytest.approx(
        [1 - 89 / 228] * 2 + [1 - 36 / 228] * 2)


def test_magnitude_round_masks_are_nested_and_zeros_stay_zero():
    torch.manual_seed(0)
    net = Tiny()
    m = method_class("magnitude")(prunable_layers(net), Targets(TARGETS), rounds=2, round_epochs=2)
    seen = []
    inner = m.after_step

    def after_step(model):
        inner(model)
        seen.append({n: (layer.weight != 0).clone() for n, layer in prunable_layers(model).items()})
    m.after_step = after_step
    cfg = TrainConfig(lr=0.5, momentum=0.99, weight_decay=0.1, retrain_epochs=1)
    res = train(net, m, loader(), None, cfg)
    for a, b in zip(seen, seen[1:], strict=False):  # the support only ever shrinks
        assert all(not (b[n] & ~a[n]).any() for n in a)
    assert all(torch.equal(prunable_layers(net)[n].weight != 0, mask) for n, mask in res.masks.items())


def test_magnitude_one_round_is_one_shot_and_round_flags_need_rounds():
    m = method_class("magnitude")(prunable_layers(Tiny()), Targets(TARGETS))
    assert m.cycles() == [] and m.total_epochs() == 0
    with pytest.raises(CompressError, match="--round-epochs applies only with --rounds 2 or more"):
        method_class("magnitude")(prunable_layers(Tiny()), Targets(TARGETS), round_epochs=3)


# ------------------------------------------------------------------------- progressive ADMM


def progressive(seed=0, **hp):
    torch.manual_seed(seed)
    net = Tiny()
    hp = {"progressive": True, "stages": 2, "admm_iters": 2, "epochs_per_iter": 1, "stage_retrain": 2, **hp}
    return net, method_class("admm")(prunable_layers(net), Targets(TARGETS), rho=0.05, **hp)


def test_progressive_plan_cycles_and_stage_counts():
    net, m = progressive()
    assert m.cycles() == [1, 1, 2, 1, 1] and m.total_epochs() == 6
    rec = Recorder(m)
    res = train(net, m, loader(), loader(seed=2), TrainConfig(lr=0.05, retrain_epochs=1))
    # stage 1 keeps sqrt(t): conv1 0.5 -> 18 of 36, fc 0.2 -> 38 of 192; then the targets 9 and 8
    masks = [mk for _, mk in rec.epochs]
    assert masks == [None, None] + [{"conv1": 18, "fc": 38}] * 4
    counts = [c for c, _ in rec.epochs]
    assert counts[2] == counts[3] == {"conv1": 18, "fc": 38}  # the stage retrain: exactly the stage-1 mask
    assert counts[4]["fc"] <= 38 and nonzero(net) == {"conv1": 9, "fc": 8}
    method = [h for h in res.history if h["phase"] == "method"]
    assert [(h["stage"], h["part"]) for h in method] == [(1, "admm"), (1, "admm"), (1, "retrain"),
                                                         (1, "retrain"), (2, "admm"), (2, "admm")]
    assert "admm_residual" in method[-1] and res.history[-1]["phase"] == "retrain"
    # each epoch logs what it trained: ADMM epochs their residual, the stage retrain the stage-1 model
    # (its sparsity, not stage 2's first Z)
    assert ["admm_residual" in h for h in method] == [True, True, False, False, True, True]
    stage1 = 1 - (18 + 38) / 228
    assert [h["sparsity"] for h in method[:4]] == pytest.approx([stage1] * 4)


def test_progressive_stage_two_restarts_admm_from_the_pruned_model():
    net, m = progressive(stage_retrain=0)
    assert m.cycles() == [1, 1, 1, 1]
    starts = []
    inner = m._start

    def start():
        inner()
        starts.append(({n: z.clone() for n, z in m.Z.items()}, dict(m.rho),
                       {n: u.abs().sum() for n, u in m.U.items()}))
    m._start = start
    train(net, m, loader(), None, TrainConfig(lr=0.05, retrain_epochs=1))
    assert len(starts) == 2  # init and stage 2; no retrain cycle: the stage's prune comes just before
    z2, rho2, u2 = starts[1]
    assert {n: int((z != 0).sum()) for n, z in z2.items()} == {"conv1": 9, "fc": 8}
    assert rho2 == {"conv1": 0.05, "fc": 0.05} and all(float(u) == 0 for u in u2.values())


def test_progressive_flags_are_checked():
    with pytest.raises(CompressError, match="--stages, --stage-retrain apply only with --progressive"):
        method_class("admm")(prunable_layers(Tiny()), Targets(TARGETS), stages=3, stage_retrain=1)
    with pytest.raises(CompressError, match="needs --admm-iters >= 1"):
        method_class("admm")(prunable_layers(Tiny()), Targets(TARGETS), progressive=True, admm_iters=0)
    with pytest.raises(CompressError, match="admm: --progressive is a flag"):
        method_class("admm")(prunable_layers(Tiny()), Targets(TARGETS), progressive="yes")
    one_shot = method_class("admm")(prunable_layers(Tiny()), Targets(TARGETS), admm_iters=3)
    assert one_shot.cycles() == [1, 1, 1]


def assert_resume_is_exact(tmp_path, make, stop: int, epochs: int) -> dict:
    """``make(seed) -> (net, method)`` trained uninterrupted, then killed at the start of epoch ``stop``
    and resumed from its checkpoint into a differently initialized net: identical final weights.
    Returns the checkpoint as saved at the interruption."""
    cfg = TrainConfig(lr=0.05, retrain_epochs=2, seed=3)
    net_a, m_a = make(0)
    train(net_a, m_a, loader(), loader(seed=2), cfg)
    ckpt = str(tmp_path / "run.ckpt")
    cfg_b = TrainConfig(lr=0.05, retrain_epochs=2, seed=3, checkpoint=ckpt)
    net_b, m_b = make(0)
    with pytest.raises(Interrupt):
        train(net_b, m_b, StopAfter(loader(), stop), loader(seed=2), cfg_b)
    saved = load_checkpoint(ckpt)
    assert saved["epoch"] == stop
    net_c, m_c = make(99)  # different init: everything comes from the checkpoint
    assert train(net_c, m_c, loader(), loader(seed=2), cfg_b, resume=ckpt).epochs == epochs
    for (k, a), (_, c) in zip(net_a.state_dict().items(), net_c.state_dict().items(), strict=True):
        assert torch.equal(a, c), k
    return saved


@pytest.mark.parametrize("stop", [3, 5])  # inside stage 1's retrain; inside stage 2's ADMM
def test_progressive_resume_inside_a_later_stage_is_exact(tmp_path, stop):
    saved = assert_resume_is_exact(tmp_path, lambda seed: progressive(seed), stop, epochs=8)
    assert saved["method"]["masks"] is not None and saved["method"]["k"] == stop - 1


def test_magnitude_rounds_resume_inside_round_two_is_exact(tmp_path):
    def make(seed):
        torch.manual_seed(seed)
        net = Tiny()
        layers = prunable_layers(net)
        return net, method_class("magnitude")(layers, Targets(TARGETS), rounds=3, round_epochs=2)

    saved = assert_resume_is_exact(tmp_path, make, 3, epochs=6)
    assert saved["method"]["pruned"] == 2
