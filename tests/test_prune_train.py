"""The trainer: masked retrain keeps zeros exactly, resume is bit-exact, NaN stops with the last good
checkpoint, a Caffe net ending in Softmax trains on its logits."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from compress.errors import CompressError, DivergenceError
from compress.layers import prunable_layers
from compress.logits import Logits
from compress.prune.methods import method_class
from compress.prune.targets import Targets
from compress.train.checkpoint import load_checkpoint
from compress.train.trainer import TrainConfig, train
from tests.nets import Tiny


def loader(n=48, bs=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True,
                      generator=torch.Generator().manual_seed(7))


def make(name, seed=0, **hp):
    torch.manual_seed(seed)
    net = Tiny()
    targets = Targets({"conv1": 0.5, "fc": 0.2}, "channel" if name == "rgsm" else "elem")
    hp = {"epochs": 2, "admm_iters": 2, "epochs_per_iter": 1, **hp}
    return net, method_class(name)(prunable_layers(net), targets, **hp)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masked_retrain_keeps_zeros_exactly_through_momentum_and_weight_decay(optimizer):
    net, m = make("magnitude")
    cfg = TrainConfig(lr=0.5, momentum=0.99, weight_decay=0.1, retrain_epochs=3, lr_schedule="constant",
                      optimizer=optimizer)
    res = train(net, m, loader(), loader(seed=2), cfg)
    for name, mask in res.masks.items():
        w = prunable_layers(net)[name].weight
        assert not w[~mask].any()  # exactly zero, not merely small
        assert int((w != 0).sum()) == int(mask.sum())
    assert int(res.masks["conv1"].sum()) == 18 and int(res.masks["fc"].sum()) == 38  # round(.2 * 192)


@pytest.mark.parametrize("retrain_wd,expected", [(None, 5e-4), (0.0, 0.0), (1e-3, 1e-3)])
def test_retrain_weight_decay_defaults_to_the_method_phase_one(tmp_path, retrain_wd, expected):
    ckpt = tmp_path / "run.ckpt"
    net, m = make("magnitude")
    train(net, m, loader(), None, TrainConfig(weight_decay=5e-4, retrain_weight_decay=retrain_wd,
                                              retrain_epochs=1, checkpoint=str(ckpt)))
    groups = load_checkpoint(ckpt)["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [expected]


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(CompressError, match="optimizer must be one of sgd, adam, got 'lbfgs'"):
        TrainConfig(optimizer="lbfgs")


class Interrupt(Exception):
    pass


class StopAfter:
    """A loader that raises at the start of epoch ``stop`` (0-based), like a killed run."""

    def __init__(self, inner, stop):
        self.inner, self.stop, self.epochs = inner, stop, 0
        self.generator = inner.generator

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        if self.epochs == self.stop:
            raise Interrupt
        self.epochs += 1
        return iter(self.inner)


def assert_resume_is_exact(tmp_path, name: str, stop: int, **options) -> str:
    """Train ``name`` uninterrupted, then killed at the start of epoch ``stop`` and resumed from its
    checkpoint into a differently initialized net: the final weights must be identical. Returns the
    checkpoint path."""
    cfg = TrainConfig(lr=0.05, retrain_epochs=2, seed=3, **options)
    net_a, m_a = make(name)
    train(net_a, m_a, loader(), loader(seed=2), cfg)

    ckpt = str(tmp_path / "run.ckpt")
    cfg_b = TrainConfig(lr=0.05, retrain_epochs=2, seed=3, checkpoint=ckpt, **options)
    net_b, m_b = make(name)
    with pytest.raises(Interrupt):
        train(net_b, m_b, StopAfter(loader(), stop), loader(seed=2), cfg_b)
    assert load_checkpoint(ckpt)["epoch"] == stop
    net_c, m_c = make(name, seed=99)  # different init: everything must come from the checkpoint
    res = train(net_c, m_c, loader(), loader(seed=2), cfg_b, resume=ckpt)
    assert res.epochs == 4
    for (k, a), (_, c) in zip(net_a.state_dict().items(), net_c.state_dict().items(), strict=True):
        assert torch.equal(a, c), k
    return ckpt


@pytest.mark.parametrize("name,stop", [("admm", 1), ("admm", 2), ("admm", 3), ("rvsm", 2), ("rgsm", 3)])
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, name, stop):
    assert_resume_is_exact(tmp_path, name, stop)


class NaNAt:
    """Batches of ``inner``; the input of (epoch, step) (1-based) is NaN."""

    def __init__(self, inner, epoch, step):
        self.inner, self.at, self.epoch = inner, (epoch, step), 0

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        self.epoch += 1
        for i, (x, y) in enumerate(self.inner, 1):
            yield (x * float("nan"), y) if (self.epoch, i) == self.at else (x, y)


def test_nan_loss_stops_with_the_last_good_checkpoint(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    net, m = make("admm")
    msg = f"loss became nan at epoch 2 step 3; last good checkpoint: {ckpt}"
    with pytest.raises(DivergenceError, match=msg):
        train(net, m, NaNAt(loader(), 2, 3), None, TrainConfig(checkpoint=str(ckpt), retrain_epochs=1))
    good = load_checkpoint(ckpt)
    assert good["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in good["model"].values())


def test_nan_in_the_first_epoch_says_there_is_no_checkpoint(tmp_path):
    net, m = make("default", epochs=1)
    with pytest.raises(DivergenceError, match="epoch 1 step 1; last good checkpoint: none"):
        train(net, m, NaNAt(loader(), 1, 1), None, TrainConfig(checkpoint=str(tmp_path / "c.ckpt")))
    assert not (tmp_path / "c.ckpt").exists()


def test_caffe_net_ending_in_softmax_trains_on_logits(tmp_path):
    from converters import caffe
    from tests.nets import TINY

    (tmp_path / "tiny.prototxt").write_text(TINY)
    net = caffe.load(tmp_path / "tiny.prototxt")
    logits = Logits(net)
    assert logits.blob == "ip1"
    x = torch.randn(2, 2, 8, 8)
    assert torch.allclose(torch.softmax(logits(x), 1), net(x))
    layers = prunable_layers(net)
    assert list(layers) == ["conv1", "ip1"]
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 2, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(3)]
    x, y = torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
    with torch.no_grad():
        before = net.forward_blobs(data[0][0])["ip1"]  # the logits the first (only) step sees
    m = method_class("admm")(layers, Targets({"conv1": 0.25, "ip1": 0.1}), admm_iters=1, epochs_per_iter=1)
    res = train(net, m, data[:1], data, TrainConfig(retrain_epochs=1))
    assert int((net.conv1.weight != 0).sum()) == 18  # round(0.25 * 72)
    assert int((net.ip1.weight != 0).sum()) == 32  # round(0.1 * 320)
    # epoch 1's loss is the cross-entropy of the logits before its one step, not of the Softmax output
    first = torch.nn.functional.cross_entropy(before, data[0][1]).item()
    on_probabilities = torch.nn.functional.cross_entropy(torch.softmax(before, 1), data[0][1]).item()
    assert abs(first - on_probabilities) > 0.05  # so the check below tells the two apart
    assert res.history[0]["loss"] == pytest.approx(first, rel=1e-6)
    assert res.history[0]["train_acc"] == int((before.argmax(1) == data[0][1]).sum()) / 8
    # the final test on all 24 samples: accuracy and loss of the pruned net's logits, counted here
    with torch.no_grad():
        after = net.forward_blobs(x)["ip1"]
    assert res.accuracy == int((after.argmax(1) == y).sum()) / 24
    assert res.history[-1]["test"]["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(after, y).item(), rel=1e-5)
