"""CaffeSolver against a NumPy transcription of BVLC's solvers, step by step.

``CaffeReference`` below is written from src/caffe/solvers/{sgd,nesterov,adagrad,rmsprop,adadelta,adam}
_solver.cpp line by line (CPU branches, float32, one array per blob, the history_/update_/temp_ blobs
kept as Caffe keeps them), independently of compress/solver/updates.py. Each scenario switches on one
feature so a failure names it: a changing rate (the rate lives inside SGD's history), iter_size 2,
gradient clipping, lr_mult 0 and 2, decay_mult 0, L1, gradients absent.
"""
from __future__ import annotations

import copy
import io
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from compress.errors import CompressError
from compress.solver import RULES, CaffeSolver, Learnable, SolverConfig

f32 = np.float32


class CaffeReference:
    """BVLC SGDSolver and subclasses, CPU path, transcribed to NumPy float32."""

    def __init__(self, cfg: SolverConfig, data: list[np.ndarray], lr_mult: list[float],
                 decay_mult: list[float]):
        self.p, self.data = cfg, [d.astype(np.float32).copy() for d in data]
        self.lr, self.decay = lr_mult, decay_mult
        n = len(data)
        extra = cfg.type in ("AdaDelta", "Adam")  # AdaDeltaPreSolve / AdamPreSolve
        self.history = [np.zeros_like(d) for d in self.data * (2 if extra else 1)]
        self.update = [np.zeros_like(d) for d in self.data]
        self.temp = [np.zeros_like(d) for d in self.data]
        self.n, self.iter_, self.current_step_ = n, 0, 0

    def get_learning_rate(self) -> np.float32:
        p = self.p
        if p.lr_policy == "fixed":
            return f32(p.base_lr)
        if p.lr_policy == "step":
            self.current_step_ = self.iter_ // p.stepsize
            return f32(f32(p.base_lr) * f32(p.gamma) ** self.current_step_)
        if p.lr_policy == "multistep":
            if self.current_step_ < len(p.stepvalue) and self.iter_ >= p.stepvalue[self.current_step_]:
                self.current_step_ += 1
            return f32(f32(p.base_lr) * f32(p.gamma) ** self.current_step_)
        raise AssertionError(p.lr_policy)

    def apply_update(self, diff: list[np.ndarray]) -> float:
        rate = self.get_learning_rate()
        self.clip_gradients(diff)
        for i in range(self.n):
            self.normalize(i, diff)
            self.regularize(i, diff)
            self.compute_update_value(i, diff, rate)
        for i in range(self.n):  # Net::Update -> Blob::Update: data = -1 * diff + data
            self.data[i] = self.data[i] - diff[i]
        self.iter_ += 1
        return float(rate)

    def clip_gradients(self, diff):
        clip = f32(self.p.clip_gradients)
        if clip < 0:
            return
        sumsq = f32(0)
        for d in diff:
            sumsq = f32(sumsq + f32(np.dot(d.ravel(), d.ravel())))
        l2 = f32(np.sqrt(sumsq))
        if l2 > clip:
            for d in diff:
                d *= f32(clip / l2)

    def normalize(self, i, diff):
        if self.p.iter_size != 1:
            diff[i] *= f32(1) / f32(self.p.iter_size)

    def regularize(self, i, diff):
        local_decay = f32(self.p.weight_decay) * f32(self.decay[i])
        if local_decay:
            if self.p.regularization_type == "L2":
                diff[i] += local_decay * self.data[i]
            else:
                self.temp[i] = np.sign(self.data[i]).astype(np.float32)
                diff[i] += local_decay * self.temp[i]

    @staticmethod
    def axpby(a, x, b, y):  # caffe_cpu_axpby: cblas_sscal(b, y); cblas_saxpy(a, x, y)
        y *= f32(b)
        if a != 0:
            y += f32(a) * x

    def compute_update_value(self, i, diff, rate):
        p, h, n = self.p, self.history, self.n
        local_rate = f32(rate) * f32(self.lr[i])
        m = f32(p.momentum)
        if p.type == "SGD":
            self.axpby(local_rate, diff[i], m, h[i])
            diff[i] = h[i].copy()
        elif p.type == "Nesterov":
            self.update[i] = h[i].copy()
            self.axpby(local_rate, diff[i], m, h[i])
            self.axpby(f32(1) + m, h[i], -m, self.update[i])
            diff[i] = self.update[i].copy()
        elif p.type == "AdaGrad":
            self.update[i] = diff[i] ** 2
            h[i] = self.update[i] + h[i]
            self.update[i] = np.sqrt(h[i]) + f32(p.delta)
            self.update[i] = diff[i] / self.update[i]
            diff[i] = local_rate * self.update[i]
        elif p.type == "RMSProp":
            self.update[i] = diff[i] ** 2
            self.axpby(f32(1) - f32(p.rms_decay), self.update[i], f32(p.rms_decay), h[i])
            self.update[i] = np.sqrt(h[i]) + f32(p.delta)
            self.update[i] = diff[i] / self.update[i]
            diff[i] = local_rate * self.update[i]
        elif p.type == "AdaDelta":
            self.update[i] = diff[i] ** 2
            self.axpby(f32(1) - m, self.update[i], m, h[i])
            self.temp[i] = np.full_like(diff[i], f32(p.delta))
            self.update[i] = self.temp[i] + h[n + i]
            self.temp[i] = self.temp[i] + h[i]
            self.update[i] = np.sqrt(self.update[i] / self.temp[i])
            diff[i] = diff[i] * self.update[i]
            self.update[i] = diff[i] ** 2
            self.axpby(f32(1) - m, self.update[i], m, h[n + i])
            diff[i] = local_rate * diff[i]
        elif p.type == "Adam":
            b1, b2, t = f32(p.momentum), f32(p.momentum2), self.iter_ + 1
            correction = f32(math.sqrt(1.0 - float(b2) ** t) / (1.0 - float(b1) ** t))
            self.axpby(f32(1) - b1, diff[i], b1, h[i])
            self.temp[i] = diff[i] * diff[i]
            self.axpby(f32(1) - b2, self.temp[i], b2, h[n + i])
            self.temp[i] = h[i] / (np.sqrt(h[n + i]) + f32(p.delta))
            diff[i] = (local_rate * correction) * self.temp[i]
        else:
            raise AssertionError(p.type)


# Every solver type with the hyperparameters its users set (Caffe's examples).
TYPES = {
    "SGD": dict(momentum=0.9),
    "Nesterov": dict(momentum=0.95),
    "AdaGrad": dict(delta=1e-6),
    "RMSProp": dict(rms_decay=0.98, delta=1e-6),
    "AdaDelta": dict(momentum=0.95, delta=1e-6, base_lr=1.0),
    "Adam": dict(momentum=0.9, momentum2=0.999, delta=1e-8, base_lr=0.001),
}

# One feature per scenario: (config overrides, lr_mults, decay_mults).
SCENARIOS = {
    "rate_changes": (dict(lr_policy="step", gamma=0.5, stepsize=2), [1, 1, 1], [1, 1, 1]),
    "iter_size_2": (dict(iter_size=2), [1, 1, 1], [1, 1, 1]),
    "clipping": (dict(clip_gradients=0.5, iter_size=2), [1, 1, 1], [1, 1, 1]),
    "lr_mult_0_and_2": (dict(), [1, 0, 2], [1, 1, 1]),
    "lr_mult_0_clipped": (dict(clip_gradients=0.5), [0, 1, 1], [1, 1, 1]),
    "decay_mult_0": (dict(weight_decay=0.05), [1, 2, 1], [1, 0, 1]),
    "L1": (dict(regularization_type="L1", weight_decay=0.01), [1, 1, 2], [1, 2, 1]),
    "multistep": (dict(lr_policy="multistep", gamma=0.5, stepvalue=(1, 3, 4)), [1, 1, 1], [1, 1, 1]),
}


def _config(solver_type: str, **overrides) -> SolverConfig:
    base = dict(type=solver_type, base_lr=0.01, lr_policy="fixed", weight_decay=5e-4, max_iter=100)
    return SolverConfig(**{**base, **TYPES[solver_type], **overrides})


def _problem(seed: int = 0) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Three blobs (a conv weight, a bias, a matrix) and six iterations of gradients."""
    rng = np.random.default_rng(seed)
    shapes = [(4, 3, 3, 3), (4,), (5, 7)]
    data = [rng.standard_normal(s).astype(np.float32) * f32(0.3) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) * f32(0.2) for s in shapes] for _ in range(6)]
    return data, grads


def _solver(cfg, data, lr_mult, decay_mult) -> tuple[list[torch.Tensor], CaffeSolver]:
    params = [torch.tensor(d, requires_grad=True) for d in data]
    opt = CaffeSolver([Learnable(p, lm, dm, f"blob{i}")
                       for i, (p, lm, dm) in enumerate(zip(params, lr_mult, decay_mult, strict=True))], cfg)
    return params, opt


def _steps(opt, params, grads) -> tuple[list[list[np.ndarray]], list[float]]:
    """One step per gradient set: the weights after each step, the rates used."""
    out, lrs = [], []
    for g in grads:
        opt.zero_grad()
        for p, gi in zip(params, g, strict=True):
            p.grad = torch.tensor(gi)
        opt.step()
        out.append([p.detach().numpy().copy() for p in params])
        lrs.append(opt.last_rate)
    return out, lrs


def _run_torch(cfg, data, grads, lr_mult, decay_mult, steps=None):
    params, opt = _solver(cfg, data, lr_mult, decay_mult)
    return (*_steps(opt, params, grads[:steps]), opt)


def _run_reference(cfg, data, grads, lr_mult, decay_mult):
    ref = CaffeReference(cfg, data, lr_mult, decay_mult)
    out, lrs = [], []
    for g in grads:
        # Caffe computes no parameter diff for lr_mult 0 (param_propagate_down false): it stays cleared.
        diff = [np.zeros_like(gi) if lm == 0 else gi.copy() for gi, lm in zip(g, lr_mult, strict=True)]
        lrs.append(ref.apply_update(diff))
        out.append([d.copy() for d in ref.data])
    return out, lrs, ref


def _close(got: np.ndarray, want: np.ndarray, where: str) -> None:
    """Equal up to float32 rounding: BLAS fuses a*x+y and NumPy does not, dot products sum in another
    order, and an element where m*h and lr*g nearly cancel keeps the absolute error of its terms, so
    the absolute slack is relative to the blob's largest value. A wrong rule is off by > 1e-3."""
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5 * np.abs(want).max(), err_msg=where)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("solver_type", RULES)
def test_update_matches_caffe_transcription(solver_type, scenario):
    overrides, lr_mult, decay_mult = SCENARIOS[scenario]
    cfg = _config(solver_type, **overrides)
    data, grads = _problem()
    got, got_lr, opt = _run_torch(cfg, data, grads, lr_mult, decay_mult)
    want, want_lr, ref = _run_reference(cfg, data, grads, lr_mult, decay_mult)
    assert got_lr == want_lr
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        for i, (gi, wi) in enumerate(zip(g, w, strict=True)):
            _close(gi, wi, f"{solver_type}/{scenario}: step {step}, blob {i}")
    # the histories too (Caffe's history_[i], and history_[N + i] for AdaDelta and Adam)
    params = {n: p for g in opt.param_groups for n, p in zip(g["names"], g["params"], strict=True)}
    for k, key in enumerate(["history", "history2"][:RULES[solver_type].histories]):
        for i in range(ref.n):
            _close(opt.state[params[f"blob{i}"]][key].numpy(), ref.history[k * ref.n + i],
                   f"{solver_type}/{scenario}: {key} of blob {i}")
    for i, lm in enumerate(lr_mult):
        if lm == 0:  # frozen bit for bit, whatever its .grad held
            assert all(np.array_equal(g[i], data[i]) for g in got)


def test_every_rule_moves_the_weights_differently():
    """The scenarios above would not notice two rules computing the same thing: they must differ."""
    data, grads = _problem()
    finals = {t: _run_torch(_config(t), data, grads, [1, 1, 1], [1, 1, 1])[0][-1][0] for t in RULES}
    for a in RULES:
        for b in RULES:
            if a < b:
                assert not np.allclose(finals[a], finals[b], rtol=1e-3), (a, b)


def test_sgd_rate_lives_inside_the_history_unlike_torch_sgd():
    """v = m v + lr g: with a rate that halves, Caffe's step differs from torch.optim.SGD's lr (m v + g)."""
    cfg = _config("SGD", lr_policy="step", gamma=0.5, stepsize=1, weight_decay=0.0)
    w0 = np.ones(3, np.float32)
    g = [[np.full(3, 1.0, np.float32)]] * 2
    got, lrs, _ = _run_torch(cfg, [w0], g, [1], [1])
    # hand-computed: step 0: v = 0.01, w = 0.99; step 1: v = 0.9*0.01 + 0.005 = 0.014, w = 0.976
    assert lrs == [pytest.approx(0.01), pytest.approx(0.005)]
    np.testing.assert_allclose(got[1][0], np.float32(0.976), rtol=1e-6)
    p = torch.nn.Parameter(torch.ones(3))
    torch_sgd = torch.optim.SGD([p], lr=0.01, momentum=0.9)
    for lr in (0.01, 0.005):
        torch_sgd.param_groups[0]["lr"] = lr
        p.grad = torch.ones(3)
        torch_sgd.step()
    assert abs(float(p.detach()[0]) - 0.976) > 1e-3  # torch: 1 - 0.01 - 0.005*1.9 = 0.9805


def test_clipping_uses_the_global_norm_before_normalization():
    """Two blobs, norm 5 over both (3, 4), clip 1 with iter_size 2: diffs become (0.6, 0.8),
    then halved (normalizing first would clip (1.5, 2) to the same (0.6, 0.8), not halve it)."""
    cfg = SolverConfig(base_lr=1.0, lr_policy="fixed", clip_gradients=1.0, iter_size=2)
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = CaffeSolver([a, b], cfg)
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])
    opt.step()
    assert opt.last_grad_norm == pytest.approx(5.0)
    assert float(a.detach()) == pytest.approx(-0.3) and float(b.detach()) == pytest.approx(-0.4)


def test_missing_gradient_is_a_zero_diff_momentum_and_decay_still_move():
    cfg = SolverConfig(base_lr=0.1, lr_policy="fixed", momentum=0.5, weight_decay=0.1)
    w = torch.ones(2, requires_grad=True)
    opt = CaffeSolver([w], cfg)
    w.grad = torch.ones(2)
    opt.step()  # diff = 1 + 0.1 = 1.1, v = 0.11, w = 0.89
    opt.zero_grad()
    opt.step()  # diff = 0.089, v = 0.055 + 0.0089 = 0.0639, w = 0.8261
    np.testing.assert_allclose(w.detach().numpy(), 0.8261, rtol=1e-6)


def _tiny_problem(solver_type: str, **overrides):
    data, grads = _problem(seed=1)
    cfg = _config(solver_type, lr_policy="multistep", gamma=0.5, stepvalue=(2, 5), clip_gradients=2.0,
                  **overrides)
    return cfg, data, grads


@pytest.mark.parametrize("solver_type", RULES)
def test_resume_continues_bit_for_bit(solver_type):
    """Three steps, save (through torch.save / weights_only load), restore into a fresh solver, and
    the next three steps equal the uninterrupted run's exactly (histories, iteration, current_step)."""
    cfg, data, grads = _tiny_problem(solver_type)
    lr_mult, decay_mult = [1, 0, 2], [1, 1, 0]
    straight, straight_lr, _ = _run_torch(cfg, data, grads, lr_mult, decay_mult)
    first, _, opt = _run_torch(cfg, data, grads, lr_mult, decay_mult, steps=3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    params, opt2 = _solver(cfg, first[-1], lr_mult, decay_mult)
    opt2.load_state_dict(state)
    assert (opt2.iteration, opt2.current_step) == (3, 1)
    resumed, resumed_lr = _steps(opt2, params, grads[3:])
    assert resumed_lr == straight_lr[3:]
    for a, b in zip(resumed, straight[3:], strict=True):
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y)


def test_loading_does_not_alias_the_saved_state():
    cfg, data, grads = _tiny_problem("SGD")
    _, _, opt = _run_torch(cfg, data, grads, [1, 1, 1], [1, 1, 1], steps=2)
    state = opt.state_dict()
    before = copy.deepcopy(state)
    _, _, opt2 = _run_torch(cfg, data, grads[:1], [1, 1, 1], [1, 1, 1])
    opt2.load_state_dict(state)
    opt2.step()
    for k, s in state["state"].items():
        assert torch.equal(s["history"], before["state"][k]["history"])


def test_resume_refuses_another_solver_or_net():
    cfg, data, grads = _tiny_problem("SGD")
    _, _, opt = _run_torch(cfg, data, grads, [1, 1, 1], [1, 1, 1], steps=1)
    adam_cfg = replace(cfg, type="Adam", base_lr=0.001)
    _, adam = _solver(adam_cfg, data, [1, 1, 1], [1, 1, 1])
    with pytest.raises(CompressError, match="expected the state of a Adam CaffeSolver, found 'SGD'"):
        adam.load_state_dict(opt.state_dict())
    _, other = _solver(cfg, data, [1, 2, 1], [1, 1, 1])
    with pytest.raises(CompressError, match="parameter groups"):
        other.load_state_dict(opt.state_dict())


def test_bad_learnables():
    cfg = _config("SGD")
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(CompressError, match="b: the same tensor as a"):
        CaffeSolver([Learnable(w, name="a"), Learnable(w, name="b")], cfg)
    with pytest.raises(CompressError, match="no learnable parameters"):
        CaffeSolver([], cfg)
    with pytest.raises(CompressError, match="must be finite"):
        CaffeSolver([Learnable(w, float("nan"))], cfg)


def test_next_rate_peeks_without_advancing():
    cfg = _config("SGD", lr_policy="multistep", gamma=0.1, stepvalue=(0,))
    opt = CaffeSolver([torch.zeros(1, requires_grad=True)], cfg)
    assert opt.next_rate() == pytest.approx(0.001) and opt.current_step == 0
    opt.step()
    assert opt.last_rate == pytest.approx(0.001) and (opt.iteration, opt.current_step) == (1, 1)
