"""``CaffeSolver``: Caffe's ``SGDSolver::ApplyUpdate`` as a ``torch.optim.Optimizer``.

One ``step()`` is one Caffe update (BVLC src/caffe/solvers/sgd_solver.cpp):

    rate = GetLearningRate()                   the policy at ``iteration`` (compress.solver.policy)
    ClipGradients()                            global L2 norm of all diffs > clip_gradients: scale all
    for each parameter:
        Normalize                              diff *= 1/iter_size        (iter_size > 1)
        Regularize                             diff += local_decay * w    (L2) or * sign(w) (L1),
                                               local_decay = weight_decay * decay_mult (skipped if 0)
        ComputeUpdateValue(rate * lr_mult)     the solver type's rule (compress.solver.updates)
    w -= update;  ++iteration

The caller accumulates ``iter_size`` backward passes into ``.grad`` (not divided) and calls ``step()``;
``step()`` consumes the gradients in place like Caffe's diffs, so call ``zero_grad()`` before the next
accumulation. A parameter without ``.grad`` has a zero diff (Caffe clears every diff before each
iteration), so momentum and weight decay still move it. A parameter with ``lr_mult`` 0 gets a zero diff
whatever its ``.grad`` holds (Caffe computes no parameter gradient for it), is regularized and run
through the rule (its histories evolve as in Caffe) and its weights stay bit-identical.
BatchNorm's statistics blobs are not learnable: leave them out.

Parameters are given as ``Learnable(tensor, lr_mult, decay_mult, name)`` (or plain tensors: 1, 1) in
Caffe's ``learnable_params`` order; they are grouped by (lr_mult, decay_mult) so each group costs a
few ``torch._foreach_*`` calls. ``state_dict()`` holds the histories, ``iteration`` and Caffe's
``current_step``; loading it into a solver built the same way continues bit for bit.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np
import torch

from compress.errors import CompressError
from compress.savedstate import Fields, found
from compress.solver.config import SolverConfig
from compress.solver.policy import learning_rate
from compress.solver.updates import RULES, Hyper
from converters.caffe.names import cut

f32 = np.float32


class Learnable(NamedTuple):
    """One learnable blob and its ``param { lr_mult decay_mult }`` (Caffe's ParamSpec, default 1, 1)."""

    param: torch.Tensor
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    name: str = ""


class CaffeSolver(torch.optim.Optimizer):
    """Caffe's solver of ``config.type`` with ``config``'s policy, decay, clipping and iter_size."""

    def __init__(self, params: Iterable[Learnable | torch.Tensor], config: SolverConfig) -> None:
        entries = _entries(params)
        groups: dict[tuple[float, float], dict[str, Any]] = {}
        for e in entries:
            lr_mult, decay_mult = key = (float(f32(e.lr_mult)), float(f32(e.decay_mult)))
            group = groups.setdefault(key, {"params": [], "names": [], "lr_mult": lr_mult,
                                            "decay_mult": decay_mult})
            group["params"].append(e.param)
            group["names"].append(e.name)
        super().__init__(list(groups.values()), {"lr_mult": 1.0, "decay_mult": 1.0})
        self.config = config
        self.rule = RULES[config.type]
        self.hyper = Hyper.of(config)
        self.order = [e.param for e in entries]  # Caffe's learnable_params order (the clipping sum)
        self.iteration = 0  # updates done: the policy's ``iter``
        self.current_step = 0  # Caffe's current_step_ (step and multistep policies)
        self.last_rate: float | None = None  # the rate the last step used (Caffe's "lr = ...")
        self.last_grad_norm: float | None = None  # the L2 norm ClipGradients saw (when clipping)

    # torch decorates these with torch._disable_dynamo, which imports torch._dynamo (and with it sympy:
    # about a second) on the first call; a CaffeSolver never runs compiled, so it calls them undecorated.
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _undecorated(torch.optim.Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _undecorated(torch.optim.Optimizer.zero_grad)(self, set_to_none)

    def next_rate(self) -> float:
        """The rate the next ``step()`` will use."""
        return float(learning_rate(self.config, self.iteration, self.current_step)[0])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        diffs = {p: self._diff(p, group["lr_mult"]) for group in self.param_groups for p in group["params"]}
        rate, current_step = learning_rate(self.config, self.iteration, self.current_step)
        self._clip([diffs[p] for p in self.order])
        for group in self.param_groups:
            self._update_group(group, [diffs[p] for p in group["params"]], rate)
        self.iteration += 1
        self.current_step = current_step
        self.last_rate = float(rate)
        return loss

    def _diff(self, p: torch.Tensor, lr_mult: float) -> torch.Tensor:
        if p.grad is None or lr_mult == 0:
            return torch.zeros_like(p, memory_format=torch.contiguous_format)
        if p.grad.is_sparse:
            raise CompressError("CaffeSolver: sparse gradients are not supported")
        return p.grad

    def _clip(self, diffs: list[torch.Tensor]) -> None:
        clip = f32(self.config.clip_gradients)
        if clip < 0:
            return
        sumsq = f32(0)
        for d in diffs:  # Blob::sumsq_diff (a float32 dot) summed in float32, in Caffe's order
            flat = d.reshape(-1)
            sumsq = sumsq + f32(torch.dot(flat, flat).item())
        norm = np.sqrt(sumsq)
        self.last_grad_norm = float(norm)
        if norm > clip:
            torch._foreach_mul_(diffs, float(clip / norm))

    def _update_group(self, group: dict[str, Any], diffs: list[torch.Tensor], rate: np.float32) -> None:
        cfg, params = self.config, group["params"]
        if cfg.iter_size != 1:
            torch._foreach_mul_(diffs, float(f32(1) / f32(cfg.iter_size)))
        local_decay = float(f32(cfg.weight_decay) * f32(group["decay_mult"]))
        if local_decay:
            decay = params if cfg.regularization_type == "L2" else torch._foreach_sign(params)
            torch._foreach_add_(diffs, decay, alpha=local_decay)
        histories = [[self._history(p, k) for p in params] for k in range(self.rule.histories)]
        local_rate = float(rate * f32(group["lr_mult"]))
        update = self.rule.compute(diffs, histories, self.hyper, local_rate, self.iteration)
        if update is not None:
            torch._foreach_sub_(params, update)

    def _history(self, p: torch.Tensor, k: int) -> torch.Tensor:
        state = self.state[p]
        key = "history" if k == 0 else f"history{k + 1}"
        if key not in state:
            state[key] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        return state[key]

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        out = _undecorated(torch.optim.Optimizer.state_dict)(self)
        out["solver"] = {"type": self.config.type, "iter": self.iteration, "current_step": self.current_step}
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the same solver type, the same parameter groups, Caffe's
        counters in range, and every history a float tensor of its parameter's shape."""
        fields = Fields(state_dict, "optimizer")
        saved = state_dict.get("solver")
        if not isinstance(saved, dict) or saved.get("type") != self.config.type:
            what = found(saved.get("type")) if isinstance(saved, dict) else "no solver state"
            raise CompressError(f"optimizer: expected the state of a {self.config.type} CaffeSolver, "
                                f"found {what}")
        solver = fields.fields("solver")
        iteration = solver.integer("iter", 0, 2**31 - 1)  # Caffe's int counters
        current_step = solver.integer("current_step", 0, 2**31 - 1)
        groups = fields.sequence("param_groups")
        mine = [(g["lr_mult"], g["decay_mult"], g["names"]) for g in self.param_groups]
        theirs = [(g.get("lr_mult"), g.get("decay_mult"), g.get("names")) if isinstance(g, dict) else None
                  for g in groups]
        if mine != theirs:
            raise CompressError("optimizer: its parameter groups (lr_mult, decay_mult, names) differ from "
                                f"this net's: saved {cut(str(theirs), 200)}, expected {cut(str(mine), 200)}")
        ids = [i for g in groups for i in Fields(g, "optimizer.param_groups").sequence("params")]
        params = dict(zip(ids, [p for g in self.param_groups for p in g["params"]], strict=False))
        histories = {f"history{'' if k == 0 else k + 1}" for k in range(self.rule.histories)}
        state = {}
        for key, entry in fields.fields("state").state.items():
            held = Fields(entry, f"optimizer.state.{key}")
            extra = sorted(map(str, set(held.state) - histories))
            if key not in params or extra:
                what = "no parameter's index" if key not in params else \
                    f"{found(extra[0])} is no history of a {self.config.type} solver"
                raise CompressError(f"{held.where}: {what}")
            # Copy the histories: torch's loader would alias the given tensors.
            state[key] = {n: held.tensor(n, tuple(params[key].shape), params[key].dtype).clone()
                          for n in held.state}
        _undecorated(torch.optim.Optimizer.load_state_dict)(self, {**state_dict, "state": state})
        self.iteration, self.current_step = iteration, current_step


def _undecorated(method: Callable) -> Callable:
    """``method`` without torch's ``_disable_dynamo`` wrapper (``functools.wraps`` keeps it in
    ``__wrapped__``)."""
    return getattr(method, "__wrapped__", method)


def _entries(params: Iterable[Learnable | torch.Tensor]) -> list[Learnable]:
    entries, seen = [], {}
    for i, item in enumerate(params):
        e = Learnable(item) if isinstance(item, torch.Tensor) else Learnable(*item)
        name = e.name or f"#{i}"
        if not isinstance(e.param, torch.Tensor):
            raise CompressError(f"learnable {name}: expected a tensor, found {type(e.param).__name__}")
        if not (np.isfinite(e.lr_mult) and np.isfinite(e.decay_mult)):
            raise CompressError(f"learnable {name}: lr_mult and decay_mult must be finite, "
                                f"found {e.lr_mult}, {e.decay_mult}")
        if id(e.param) in seen:
            raise CompressError(f"learnable {name}: the same tensor as {seen[id(e.param)]} "
                                "(a shared blob is given once, by its owner)")
        seen[id(e.param)] = name
        entries.append(e._replace(name=e.name or name))
    if not entries:
        raise CompressError("CaffeSolver: no learnable parameters")
    return entries
