"""The RVSM/RGSM seed code's two variants (tdinh15/rvsm-rgsm-admm, main.py) against a transcription of
that code, and the trainer hooks they use: ``before_step`` gets the step's learning rate, ``end_epoch``
runs after every method-phase epoch (before ``end_iteration``), never in the retrain."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from compress.layers import prunable_layers
from compress.prune import ops
from compress.prune.methods import method_class
from compress.prune.methods.base import Method
from compress.prune.targets import Targets
from compress.train.schedule import cosine
from compress.train.trainer import TrainConfig, train
from tests.nets import Tiny
from tests.test_prune_train import loader


def batches(n=2, bs=8):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n * bs, 1, 6, 6, generator=g), torch.randint(0, 3, (n * bs,), generator=g)
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, n * bs, bs)]


def run_steps(net, method, lr, momentum):
    """The trainer's step order: backward, before_step(lr), SGD with momentum, after_step."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    for x, y in batches():
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        method.before_step(net, lr)
        opt.step()
        method.after_step(net)


def seed_reference(net, beta, lamb, lr, momentum):
    """main.py of the seed, RVSM branch, on every prunable layer: after backward,
    ``w.data -= lr*beta*(w - u)``, then the SGD step (momentum on the task gradient alone), then
    ``u = thres(w, sqrt(2 lamb / beta))``. Returns the weights of every parameter."""
    gamma = math.sqrt(2 * lamb / beta)
    params = dict(net.named_parameters())
    weights = [params["conv1.weight"], params["fc.weight"]]
    u = [w.detach().where(w.detach().abs() > gamma, torch.zeros_like(w)) for w in weights]
    buf: dict[str, torch.Tensor] = {}
    for x, y in batches():
        for p in params.values():
            p.grad = None
        F.cross_entropy(net(x), y).backward()
        with torch.no_grad():
            for w, s in zip(weights, u, strict=True):
                w -= lr * beta * (w - s)
            for name, p in params.items():  # torch.optim.SGD's momentum rule, written out
                buf[name] = p.grad.clone() if name not in buf else buf[name] * momentum + p.grad
                p -= lr * buf[name]
        u = [w.detach().where(w.detach().abs() > gamma, torch.zeros_like(w)) for w in weights]
    return {n: p.detach().clone() for n, p in params.items()}


def test_seed_pull_matches_the_seed_code_and_differs_from_the_optimizer_pull():
    beta, lamb, lr, momentum = 0.5, 2e-3, 0.1, 0.9
    torch.manual_seed(0)
    ref_net = Tiny()
    start = {k: v.clone() for k, v in ref_net.state_dict().items()}
    ref = seed_reference(ref_net, beta, lamb, lr, momentum)
    got = {}
    for pull in ("seed", "optimizer"):
        net = Tiny()
        net.load_state_dict(start)
        m = method_class("rvsm")(prunable_layers(net), None, beta=beta, lamb=lamb, pull=pull)
        m.init(net)
        run_steps(net, m, lr, momentum)
        got[pull] = dict(net.named_parameters())
        assert torch.equal(m.u["fc"], ops.hard_threshold(net.fc.weight.detach(), math.sqrt(2 * lamb / beta)))
    for name, value in ref.items():
        assert torch.allclose(got["seed"][name], value, atol=1e-6), name
    assert not torch.allclose(got["optimizer"]["fc.weight"], ref["fc.weight"], atol=1e-4)


def test_seed_pull_without_a_learning_rate_is_refused():
    net = Tiny()
    m = method_class("rgsm")(prunable_layers(net), None, pull="seed")
    m.init(net)
    with pytest.raises(ValueError, match="needs the step's learning rate"):
        m.before_step(net)


@pytest.mark.parametrize("name", ["rvsm", "rgsm"])
@pytest.mark.parametrize("reset,expected", [("epoch", [True, True]), ("never", [False, False])])
def test_reset_epoch_replaces_w_by_u_after_every_epoch(name, reset, expected):
    torch.manual_seed(0)
    net = Tiny()
    hp = {"rvsm": {"beta": 1.0, "lamb": 0.02}, "rgsm": {"beta1": 1.0, "lamb1": 0.02}}[name]
    m = method_class(name)(prunable_layers(net), None, epochs=2, reset=reset, **hp)
    w_is_u = []
    inner = m.end_epoch

    def end_epoch(model):
        inner(model)
        w_is_u.append(all(torch.equal(layer.weight, m.u[n]) for n, layer in m.layers.items()))
    m.end_epoch = end_epoch
    train(net, m, loader(), None, TrainConfig(lr=0.05))
    assert w_is_u == expected and any((m.u[n] == 0).any() for n in m.layers)


class Spy(Method):
    """Records the hooks the trainer calls, in order."""

    name = "spy"

    def __init__(self, layers, targets):
        super().__init__(layers, targets, epochs=4)
        self.calls: list = []

    def cycles(self):
        return [1, 3]

    def before_step(self, model, lr=None):
        self.calls.append(("step", lr))

    def end_epoch(self, model):
        self.calls.append(("epoch",))

    def end_iteration(self, model, k):
        self.calls.append(("iteration", k))


def test_trainer_calls_end_epoch_after_every_method_epoch_and_passes_the_rate():
    torch.manual_seed(0)
    net = Tiny()
    m = Spy(prunable_layers(net), Targets({"fc": 0.5}))
    steps = len(loader())
    train(net, m, loader(), None, TrainConfig(lr=0.4, retrain_epochs=2))
    events = [c for c in m.calls if c[0] != "step"]
    assert events == [("epoch",), ("iteration", 0), ("epoch",), ("epoch",), ("epoch",), ("iteration", 1)]
    rates = [c[1] for c in m.calls if c[0] == "step"]
    cycle2 = [cosine(0.4, t, 3 * steps) for t in range(3 * steps)]  # the second cycle: 3 epochs
    assert rates == [cosine(0.4, t, steps) for t in range(steps)] + cycle2  # none in the retrain
