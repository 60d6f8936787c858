"""The quantization methods through the shared trainer: the hooks against their formulas, zeros that stay
exactly zero, the hard quantization at the end, and resume bit for bit (as tests/test_prune_train.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.errors import CompressError
from compress.layers import prunable_layers
from compress.quant.config import GridConfig
from compress.quant.grid import fake_quantize, off_grid
from compress.quant.methods import METHODS, method_class
from compress.quant.scale import fit_grid
from compress.train.checkpoint import load_checkpoint
from compress.train.trainer import TrainConfig, train
from tests.nets import Tiny
from tests.test_prune_train import Interrupt, StopAfter, loader


def make(name: str, seed: int = 0, bits: int = 2, **hp):
    """Tiny with 70% of its weights pruned (zeros that must survive), and the method on it."""
    torch.manual_seed(seed)
    net = Tiny()
    with torch.no_grad():
        for m in (net.conv1, net.fc):
            m.weight[torch.rand_like(m.weight) < 0.7] = 0.0
    hp = {"epochs": 3, "admm_iters": 3, **hp}
    cls = method_class(name)
    hp = {k: v for k, v in hp.items() if k in {p.name for p in cls.params}}
    return net, cls(prunable_layers(net), GridConfig(bits), **hp)


def test_registry_and_unknown_name():
    assert list(METHODS) == ["ptq", "qgt", "admm"]
    with pytest.raises(CompressError, match="method 'kmeans'; available: ptq, qgt, admm"):
        method_class("kmeans")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ["qgt", "admm"])
def test_zeros_stay_exactly_zero_and_the_result_is_on_the_grid(name, optimizer):
    net, m = make(name, bits=3)
    zeros = {n: layer.weight.detach() == 0 for n, layer in prunable_layers(net).items()}
    cfg = TrainConfig(lr=0.5, momentum=0.99, weight_decay=0.1, lr_schedule="constant", optimizer=optimizer)
    train(net, m, loader(), loader(seed=2), cfg)
    for n, layer in prunable_layers(net).items():  # the trainer's last step: still exactly zero
        assert not layer.weight[zeros[n]].any(), n
    results = m.finalize(net)
    for n, layer in prunable_layers(net).items():
        assert not layer.weight[zeros[n]].any() and not torch.signbit(layer.weight[zeros[n]]).any(), n
        assert off_grid(layer.weight, m.grids[n]) == 0
        assert results[n].nonzero_after <= int((~zeros[n]).sum())


@pytest.mark.parametrize("shape, lambda_min, at", [
    ("linear", 0.0, ((0, 0.0), (5, 2.0), (20, 8.0), (35, 8.0))),
    ("exp", 0.008, ((0, 0.008), (10, 0.008 * 1000 ** 0.5), (15, 0.008 * 1000 ** 0.75), (20, 8.0))),
])
def test_qgt_step_adds_the_ramped_pull_then_masks(shape, lambda_min, at):
    """before_step: grad += lambda(t) (W - Q(W)) on the grids fitted at init (computed on the kept entries
    of the 70%-pruned layers, zero elsewhere); lambda rises from qgt_lambda_min to qgt_lambda over
    qgt_ramp of the planned steps; after_step zeroes the pruned weights again."""
    net, m = make("qgt", epochs=4, qgt_lambda=8.0, qgt_ramp=0.5, qgt_ramp_shape=shape,
                  qgt_lambda_min=lambda_min, qgt_forward="float")
    m.plan(10)  # 4 epochs x 10 steps: the ramp spans 20 steps
    m.init(net)
    w = net.fc.weight
    mask = w.detach() != 0
    grid = fit_grid(w, 2, method="mse", name="fc")
    assert torch.equal(m.grids["fc"].scales, grid.scales)
    assert m.kept["fc"] is not None and m.kept["fc"].index.numel() == int(mask.sum())
    for t, lam in at:
        m.t = t
        w.grad = torch.ones_like(w)
        m.before_step(net)
        expected = 1.0 + lam * (w.detach() - fake_quantize(w, grid))
        assert torch.allclose(w.grad, expected, atol=1e-6), t
        assert bool((w.grad[~mask] == 1.0).all())  # nothing added where the weight is pruned
    assert m.metrics()["qgt_lambda"] == 8.0
    with torch.no_grad():
        w.add_(0.5)
    m.after_step(net)
    assert not w[~mask].any() and bool((w[mask] != 0).any())


def test_qgt_straight_through_forward_and_float_update():
    """qgt_forward quantized: the net holds Q(W) for the forward pass; before the step the float W is back
    (the pull computed on it), the optimizer updates it with the gradient found at Q(W), and after the
    step the net holds the new Q(W) (pruned entries zero throughout)."""
    net, m = make("qgt", bits=2, qgt_refit="never", qgt_lambda=4.0, qgt_ramp=0.0)
    w = net.fc.weight
    w0 = w.detach().clone()
    m.init(net)
    grid = m.grids["fc"]
    assert torch.equal(w.detach(), fake_quantize(w0, grid))
    g = torch.linspace(-1, 1, w.numel()).view_as(w)  # "the gradient at Q(W)"
    w.grad = g.clone()
    m.before_step(net)
    assert torch.equal(w.detach(), w0)
    assert torch.allclose(w.grad, g + 4.0 * (w0 - fake_quantize(w0, grid)), atol=1e-6)
    with torch.no_grad():
        w.sub_(0.05 * w.grad)  # an SGD step on the float weights
    stepped = w.detach().clone()
    m.after_step(net)
    floats = stepped * (w0 != 0)
    assert torch.equal(w.detach(), fake_quantize(floats, grid))
    assert torch.equal(m.latent["fc"], floats.view(-1)[m.kept["fc"].index])
    result = m.finalize(net)["fc"]  # the float weights rounded: the same values, their rounding error
    assert torch.equal(w.detach(), fake_quantize(floats, grid)) and result.rel_error > 0


def test_kept_entries_and_the_whole_tensor_give_the_same_pull():
    """The per-step terms on a mostly pruned layer's kept entries (gathered, index_add_) equal the
    whole-tensor computation at every entry, for QGT and ADMM."""
    for name in ("qgt", "admm"):
        grads = []
        for sparse in (True, False):
            net, m = make(name, bits=3, qgt_ramp=0.0, qgt_forward="float")
            m.init(net)
            if not sparse:
                m.kept = {n: None for n in m.kept}
                m._start()
            with torch.no_grad():
                for layer in (net.conv1, net.fc):
                    layer.weight.add_(0.013 * (layer.weight != 0))
            if name == "admm":
                m.end_iteration(net, 0)
            for layer in (net.conv1, net.fc):
                layer.weight.grad = torch.full_like(layer.weight, 0.25)
            m.before_step(net)
            grads.append([net.conv1.weight.grad.clone(), net.fc.weight.grad.clone()])
        assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(*grads, strict=True)), name


def test_qgt_ramp_is_checked_before_any_work():
    with pytest.raises(CompressError, match="lambda_min must be from 0 to lambda"):
        make("qgt", qgt_lambda=1.0, qgt_lambda_min=2.0)
    with pytest.raises(CompressError, match="exponential QGT ramp starts above 0"):
        make("qgt", qgt_lambda_min=0.0)


def assert_ternary_projection(z: torch.Tensor, scales: torch.Tensor, v: np.ndarray, kept: np.ndarray) -> None:
    """``z`` is ``Proj_grid(v)`` on a 2-bit grid (levels -s, 0, s of each row), in NumPy: the float32 codes
    ``clip(rint(v / s), -1, 1)`` times ``s`` with the pruned entries zero, where ``s`` is Leng et al.'s
    scaling factor ``<|v|, q> / <q, q>`` (the mean magnitude of the entries coded +-1) and fits ``v`` no
    worse than max-abs does."""
    v = np.where(kept, v, np.float32(0)).astype(np.float32)
    s = scales.numpy()[:, None]
    q = np.clip(np.rint(v / s), -1, 1)
    assert np.array_equal(z.numpy(), np.where(kept, q * s, np.float32(0)))
    a, coded = np.abs(v).astype(np.float64), np.abs(q).astype(np.float64)
    assert (coded.sum(axis=1) > 0).all()
    # rounded to the nearest float16 value (compress.quant.scale.half_storable): within 2^-11 of it
    np.testing.assert_allclose(s[:, 0], (a * coded).sum(axis=1) / coded.sum(axis=1), rtol=2**-11)

    def error(scale: np.ndarray) -> np.ndarray:
        return ((a - np.clip(np.rint(a / scale), 0, 1) * scale) ** 2).sum(axis=1)

    assert (error(s.astype(np.float64)) <= error(a.max(axis=1, keepdims=True)) * (1 + 1e-3)).all()


def test_admm_hooks_are_its_formulas():
    """Two ADMM iterations on fc against NumPy: Z = Proj(W + U) (the second one with U != 0), U = U + W - Z
    in float32, the penalty gradient rho (W - Z + U) on the kept entries, rho doubling."""
    net, m = make("admm", rho=0.1, rho_growth=2.0)
    m.init(net)
    w = net.fc.weight
    kept = w.detach().numpy() != 0
    mask = torch.from_numpy(kept)
    assert_ternary_projection(m.Z["fc"], m.grids["fc"].scales, w.detach().numpy(), kept)  # Z = Proj(W)
    assert not m.U["fc"].any()  # U = 0
    for k, move in enumerate((0.01, -0.02)):  # W moves during each W-step
        with torch.no_grad():
            w.add_(move * mask)
        w.grad = torch.zeros_like(w)
        m.before_step(net)
        rho = 0.1 * 2 ** k
        want = rho * (w.detach().numpy() - m.Z["fc"].numpy() + m.U["fc"].numpy()) * kept
        np.testing.assert_allclose(w.grad.numpy(), want, rtol=1e-6, atol=1e-9)
        u, now = m.U["fc"].numpy().copy(), w.detach().numpy().copy()
        assert k == 0 or u.any()  # the second Z-step projects W + U, not W
        m.end_iteration(net, k)
        assert_ternary_projection(m.Z["fc"], m.grids["fc"].scales, u + now, kept)
        assert np.array_equal(m.U["fc"].numpy(), u + now - m.Z["fc"].numpy())
        assert m.rho["fc"] == pytest.approx(0.1 * 2 ** (k + 1), rel=1e-12)


def test_admm_fixed_scale_keeps_the_initial_grid():
    net, m = make("admm", admm_scale="fixed")
    m.init(net)
    start = m.grids["fc"].scales.clone()
    with torch.no_grad():
        net.fc.weight.mul_(3.0)
    m.end_iteration(net, 0)
    assert torch.equal(m.grids["fc"].scales, start)
    assert torch.equal(m.Z["fc"], fake_quantize(net.fc.weight + 0, m.grids["fc"]) * (net.fc.weight != 0))


def test_epoch_evaluation_sees_the_quantized_weights_and_restores_them():
    net, m = make("qgt")
    m.init(net)
    before = net.fc.weight.detach().clone()
    with m.eval_weights(net):
        assert off_grid(net.fc.weight, m.grids["fc"]) == 0
    assert torch.equal(net.fc.weight.detach(), before)


def assert_resume_is_exact(tmp_path, name: str, stop: int, **hp) -> None:
    """Uninterrupted, then killed at the start of epoch ``stop`` and resumed into a differently
    initialized net and method: identical weights and identical method state."""
    cfg = TrainConfig(lr=0.05, seed=3)
    net_a, m_a = make(name, **hp)
    m_a.plan(6)
    train(net_a, m_a, loader(), loader(seed=2), cfg)

    ckpt = str(tmp_path / "run.ckpt")
    cfg_b = TrainConfig(lr=0.05, seed=3, checkpoint=ckpt)
    net_b, m_b = make(name, **hp)
    m_b.plan(6)
    with pytest.raises(Interrupt):
        train(net_b, m_b, StopAfter(loader(), stop), loader(seed=2), cfg_b)
    assert load_checkpoint(ckpt)["epoch"] == stop
    net_c, m_c = make(name, seed=99, **hp)  # other weights and zeros: everything comes from the checkpoint
    m_c.plan(6)
    res = train(net_c, m_c, loader(), loader(seed=2), cfg_b, resume=ckpt)
    assert res.epochs == 3
    for (k, a), (_, c) in zip(net_a.state_dict().items(), net_c.state_dict().items(), strict=True):
        assert torch.equal(a, c), k
    for key, value in m_a.state_dict().items():
        other = m_c.state_dict()[key]
        if isinstance(value, dict):
            for n in value:
                assert (torch.equal(value[n], other[n]) if isinstance(value[n], torch.Tensor)
                        else value[n] == other[n]), (key, n)
        else:
            assert value == other, key
    m_a.finalize(net_a)
    m_c.finalize(net_c)
    assert torch.equal(net_a.fc.weight, net_c.fc.weight)


@pytest.mark.parametrize("name,stop", [("qgt", 1), ("qgt", 2), ("admm", 1), ("admm", 2)])
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, name, stop):
    assert_resume_is_exact(tmp_path, name, stop, qgt_lambda=5.0)
