"""Learning-rate policies against hand-computed values, Caffe's multistep counter, and real Caffe's lr."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from compress.solver import POLICIES, SolverConfig, learning_rate, rates

# policy -> (fields, the rates of iterations 0, 1, 2, ... computed by hand from Caffe's formulas)
CASES = {
    "fixed": (dict(), [0.1, 0.1, 0.1]),
    "step": (dict(gamma=0.5, stepsize=3), [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]),
    "exp": (dict(gamma=0.5), [0.1, 0.05, 0.025, 0.0125]),
    "inv": (dict(gamma=3.0, power=0.5),  # 0.1 (1 + 3 it)^-0.5
            [0.1, 0.05, 0.1 / math.sqrt(7), 0.1 / math.sqrt(10), 0.1 / math.sqrt(13), 0.025]),
    "multistep": (dict(gamma=0.1, stepvalue=(2, 5)), [0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001]),
    "poly": (dict(power=2.0, max_iter=4), [0.1, 0.05625, 0.025, 0.00625, 0.0]),  # 0.1 (1 - it/4)^2
    "sigmoid": (dict(gamma=math.log(3), stepsize=2),  # 0.1 / (1 + 3^(2 - it))
                [0.1 / 10, 0.1 / 4, 0.1 / 2, 0.1 * 3 / 4, 0.1 * 9 / 10]),
}


def _cfg(policy: str, **fields) -> SolverConfig:
    return SolverConfig(**{"base_lr": 0.1, "lr_policy": policy, "max_iter": 100, **fields})


def test_every_policy_has_a_case():
    assert set(CASES) == set(POLICIES)


@pytest.mark.parametrize("policy", POLICIES)
def test_policy_by_hand(policy):
    fields, want = CASES[policy]
    got = list(rates(_cfg(policy, **fields), 0, len(want)))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12, err_msg=policy)


@pytest.mark.parametrize("policy", POLICIES)
def test_rate_is_a_float32(policy):
    rate, _ = learning_rate(_cfg(policy, **CASES[policy][0]), 1)
    assert isinstance(rate, np.float32)


def test_multistep_counter_advances_one_step_per_call():
    """Caffe's current_step_ moves by at most one per GetLearningRate: a run that starts (or resumes with
    current_step 0) past several stepvalues catches up one iteration at a time."""
    cfg = _cfg("multistep", gamma=0.1, stepvalue=(2, 5))
    assert learning_rate(cfg, 10, 0) == (pytest.approx(0.01), 1)
    np.testing.assert_allclose(list(rates(cfg, 10, 13, current_step=0)), [0.01, 0.001, 0.001], rtol=1e-6)
    assert learning_rate(cfg, 10, 2) == (pytest.approx(0.001), 2)  # a restored counter is kept


def test_step_counter_is_recomputed_from_the_iteration():
    cfg = _cfg("step", gamma=0.5, stepsize=3)
    assert learning_rate(cfg, 7, current_step=0) == (pytest.approx(0.025), 2)


def test_integer_powers_are_taken_in_double():
    """pow(float gamma, int step) is C++11's double overload, rounded to float once: 0.01 * 0.1^2 is the
    float nearest 1e-4, where a float32 chain of products would be one ulp above it."""
    cfg = _cfg("step", base_lr=0.01, gamma=0.1, stepsize=1)
    rate, _ = learning_rate(cfg, 2)
    assert rate == np.float32(1e-4)
    chain = np.float32(np.float32(np.float32(0.01) * np.float32(0.1)) * np.float32(0.1))
    assert rate != chain


def test_lenet_inv_policy_matches_real_caffe(caffe_lenet):
    """Caffe 1.0's own log: lr at every one of the 2,000 iterations (printed to 6 significant digits)."""
    logged = json.loads((caffe_lenet / "reference.json").read_text())["lr"]
    cfg = SolverConfig(base_lr=0.01, lr_policy="inv", gamma=0.0001, power=0.75, momentum=0.9,
                       weight_decay=0.0005, max_iter=2000)
    got = list(rates(cfg))
    assert len(logged) == len(got) == 2000
    worst = max(abs(got[int(it)] - lr) / lr for it, lr in logged.items())
    assert worst < 1e-5, worst
