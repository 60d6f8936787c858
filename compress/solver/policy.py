"""Caffe's learning-rate policies, exactly as BVLC ``SGDSolver<float>::GetLearningRate`` computes them.

    fixed      base_lr
    step       base_lr * gamma ^ floor(iter / stepsize)
    exp        base_lr * gamma ^ iter
    inv        base_lr * (1 + gamma * iter) ^ (-power)
    multistep  base_lr * gamma ^ current_step, current_step advancing by at most one per call, when
               iter >= stepvalue[current_step] (Caffe's counter: it is solver state, saved and restored)
    poly       base_lr * (1 - iter / max_iter) ^ power
    sigmoid    base_lr * 1 / (1 + exp(-gamma * (iter - stepsize)))

The arithmetic follows Caffe's types (src/caffe/solvers/sgd_solver.cpp, compiled with ``<math.h>``):
float32 throughout, ``pow(float, float)`` and ``exp(float)`` are C's ``powf``/``expf`` (called here
through ctypes, because NumPy's own float32 ``power`` rounds differently in a fifth of the cases), and
``pow(float, int)`` (step, exp, multistep) is evaluated in double and rounded to float when stored.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

f32 = np.float32


def _libm() -> ctypes.CDLL | None:
    for name in (ctypes.util.find_library("m"), None):
        try:
            lib = ctypes.CDLL(name)
            lib.powf.restype, lib.powf.argtypes = ctypes.c_float, [ctypes.c_float, ctypes.c_float]
            lib.expf.restype, lib.expf.argtypes = ctypes.c_float, [ctypes.c_float]
            return lib
        except (OSError, AttributeError):
            continue
    return None


_LIBM = _libm()


def powf(x: np.float32, y: np.float32) -> np.float32:
    """C's ``powf`` (what Caffe's ``pow(float, float)`` calls); NumPy's float32 power where no libm."""
    return f32(_LIBM.powf(float(x), float(y))) if _LIBM else np.power(f32(x), f32(y))


def expf(x: np.float32) -> np.float32:
    """C's ``expf`` (Caffe's ``exp(float)``)."""
    return f32(_LIBM.expf(float(x))) if _LIBM else np.exp(f32(x))


def _pow_int(base: float, n: int) -> float:
    """``pow(float, int)``: both promoted to double (C++11 ``std::pow``), the result a double."""
    return math.pow(float(f32(base)), float(n))


class PolicyFields(Protocol):
    """The solver fields the policies read (:class:`compress.solver.config.SolverConfig` has them; that
    module validates a config against :data:`POLICIES`, so this one names the fields instead of importing
    it)."""

    base_lr: float | None
    lr_policy: str | None
    gamma: float | None
    power: float | None
    stepsize: int | None
    stepvalue: tuple[int, ...]
    max_iter: int


@dataclass(frozen=True)
class Policy:
    """One ``lr_policy``: the solver fields it reads (validated present) and ``rate(cfg, iter, step)``."""

    name: str
    needs: tuple[str, ...]
    rate: Callable[[PolicyFields, int, int], tuple[np.float32, int]]


POLICIES: dict[str, Policy] = {}


def register(name: str, *needs: str):
    def deco(fn):
        POLICIES[name] = Policy(name, needs, fn)
        return fn
    return deco


@register("fixed")
def _fixed(cfg: PolicyFields, it: int, step: int) -> tuple[np.float32, int]:
    return f32(cfg.base_lr), step


@register("step", "gamma", "stepsize")
def _step(cfg: PolicyFields, it: int, step: int) -> tuple[np.float32, int]:
    step = it // cfg.stepsize
    return f32(float(f32(cfg.base_lr)) * _pow_int(cfg.gamma, step)), step


@register("exp", "gamma")
def _exp(cfg: PolicyFields, it: int, step: int) -> tuple[np.float32, int]:
    return f32(float(f32(cfg.base_lr)) * _pow_int(cfg.gamma, it)), step


@register("inv", "gamma", "power")
def _inv(cfg: PolicyFields, it: int, step: int) -> tuple[np.float32, int]:
    base = f32(1) + f32(cfg.gamma) * f32(it)
    return f32(cfg.base_lr) * powf(base, -f32(cfg.power)), step


@register("multistep", "gamma", "stepvalue")
def _multistep(cfg: PolicyFields, it: int, step: int) -> tuple[np.float32, int]:
    if step < len(cfg.stepvalue) and it >= cfg.stepvalue[step]:
        step += 1
    return f32(float(f32(cfg.base_lr)) * _pow_int(cfg.gamma, step)), step


@register("poly", "power")
def _poly(cfg: PolicyFields, it: int, step: int) -> tuple[np.float32, int]:
    return f32(cfg.base_lr) * powf(f32(1) - f32(it) / f32(cfg.max_iter), f32(cfg.power)), step


@register("sigmoid", "gamma", "stepsize")
def _sigmoid(cfg: PolicyFields, it: int, step: int) -> tuple[np.float32, int]:
    e = expf(-f32(cfg.gamma) * (f32(it) - f32(cfg.stepsize)))
    return f32(cfg.base_lr) * (f32(1) / (f32(1) + e)), step


def learning_rate(cfg: PolicyFields, it: int, current_step: int = 0) -> tuple[np.float32, int]:
    """The float32 rate Caffe uses for the update at iteration ``it`` and the new ``current_step``."""
    return POLICIES[cfg.lr_policy].rate(cfg, it, current_step)


def rates(cfg: PolicyFields, start: int = 0, stop: int | None = None,
          current_step: int = 0) -> Iterator[float]:
    """The rates of iterations ``start .. stop - 1`` (default ``max_iter``), as one solver run sees them."""
    for it in range(start, cfg.max_iter if stop is None else stop):
        rate, current_step = learning_rate(cfg, it, current_step)
        yield float(rate)
