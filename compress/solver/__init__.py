"""Caffe's solver as a library: solver.prototxt, learning-rate policies, the exact update rules.

    >>> from compress.solver import read_solver, CaffeSolver, Learnable
    >>> cfg = read_solver("lenet_solver.prototxt")          # a validated SolverConfig
    >>> opt = CaffeSolver([Learnable(w, 1, 1, "conv1/0"), Learnable(b, 2, 0, "conv1/1")], cfg)
    >>> # per iteration: opt.zero_grad(); iter_size x loss.backward(); opt.step(); opt.last_rate

Modules: ``config`` (SolverConfig, NetSpec), ``read`` (solver.prototxt -> SolverConfig), ``policy``
(lr_policy registry), ``updates`` (solver type registry), ``optimizer`` (CaffeSolver). Importing this
package imports torch: import it inside the functions that need it, not at a CLI module's top.
"""
from __future__ import annotations

from compress.solver.config import NetSpec, SolverConfig
from compress.solver.optimizer import CaffeSolver, Learnable
from compress.solver.policy import POLICIES, learning_rate, rates
from compress.solver.read import parse_solver, read_solver
from compress.solver.updates import RULES

__all__ = ["RULES", "POLICIES", "CaffeSolver", "Learnable", "NetSpec", "SolverConfig", "learning_rate",
           "parse_solver", "rates", "read_solver"]
