"""``admm``: weight pruning by ADMM (Zhang et al. 2018, "A Systematic DNN Weight Pruning Framework
using Alternating Direction Method of Multipliers", arXiv 1804.03294).

    min f(W) s.t. card(W_i) <= l_i   ->   L = f(W) + sum_i rho_i/2 ||W_i - Z_i + U_i||^2
    W-step: SGD on L for one ADMM iteration (``epochs_per_iter`` epochs); the penalty gradient
            rho_i (W_i - Z_i + U_i) is added once per step per layer (Z, U are plain tensors, never
            in the autograd graph; the penalty is the squared norm)
    Z-step: Z_i = Proj(W_i + U_i)  (keep the l_i largest |entries|, or the largest-norm groups)
    U-step: U_i = U_i + W_i - Z_i
Z and U start at Proj(W), 0 and are updated once per ADMM iteration, never reset. rho_i is multiplied by
``rho_growth`` after every iteration. The trainer restarts the learning-rate cycle (cosine from ``--lr``)
at the start of every ADMM iteration, like the authors' solver resetting to base_lr. After the last
iteration: hard prune to the targets and masked retraining (the trainer's retrain phase).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.params import Param
from compress.prune.methods import register
from compress.prune.methods.base import Method, project


@register
class ADMM(Method):
    name = "admm"
    # Measured on LeNet/MNIST at admm-71x (README "Results", bench/lenet_methods.py): the best of the
    # schedules tried, 15 iterations of 1 epoch with rho 1e-3 .. 0.05, then 45 epochs of masked retrain.
    params = (
        Param("rho", float, 1e-3, "ADMM penalty per layer", low=0, low_open=True),
        Param("rho_growth", float, 1.3, "Multiplier of rho after each ADMM iteration", low=1),
        Param("admm_iters", int, 15, "ADMM iterations", low=0),
        Param("epochs_per_iter", int, 1, "Epochs per ADMM iteration", low=1),
    )
    default_pcen = 80.0
    default_retrain_epochs = 45

    def validate(self) -> None:
        if self.targets is None:
            raise CompressError("admm needs targets (--targets, --keep or --pcen)")

    def total_epochs(self) -> int:
        return int(self.hp["admm_iters"]) * int(self.hp["epochs_per_iter"])

    def cycle_epochs(self) -> int:
        return int(self.hp["epochs_per_iter"])

    def _proj(self, name: str, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return project(self.layers[name], x, self.targets, out)

    @torch.no_grad()
    def init(self, model: nn.Module) -> None:
        self.Z = {n: self._proj(n, layer.weight.detach()) for n, layer in self.layers.items()}
        self.U = {n: torch.zeros_like(z) for n, z in self.Z.items()}
        self.rho = {n: float(self.hp["rho"]) for n in self.layers}
        self.k = 0
        self._refresh()

    def _refresh(self) -> None:
        self._D = {n: self.U[n] - self.Z[n] for n in self.layers}  # grad += rho (W + D)

    @torch.no_grad()
    def before_step(self, model: nn.Module) -> None:
        for n, layer in self.layers.items():
            w = layer.weight
            if w.grad is not None:
                w.grad.add_(w.detach(), alpha=self.rho[n]).add_(self._D[n], alpha=self.rho[n])

    @torch.no_grad()
    def end_iteration(self, model: nn.Module, k: int) -> None:
        """Z = Proj(W + U), U = W + U - Z, in place: W + U goes into U's storage, Z is projected into its
        own (its magnitudes are the scratch), so no full-size temporary is made. Bit for bit the
        formulas: Z is W + U or a signed zero entrywise, so U = (W + U) - Z is exact."""
        growth = float(self.hp["rho_growth"])
        for n, layer in self.layers.items():
            v = self.U[n].add_(layer.weight.detach())
            z = self._proj(n, v, out=self.Z[n])
            torch.sub(v.sub_(z), z, out=self._D[n])
            self.rho[n] *= growth
        self.k = k + 1

    def sparse_weights(self) -> dict[str, torch.Tensor]:
        return dict(self.Z)

    def metrics(self) -> dict[str, float]:
        num = sum(float((layer.weight.detach() - self.Z[n]).pow(2).sum()) for n, layer in self.layers.items())
        den = sum(float(layer.weight.detach().pow(2).sum()) for layer in self.layers.values())
        return {"admm_residual": (num / den) ** 0.5 if den else 0.0,
                "rho": max(self.rho.values()) if self.rho else 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"Z": {n: t.clone() for n, t in self.Z.items()},
                "U": {n: t.clone() for n, t in self.U.items()}, "rho": dict(self.rho), "k": self.k}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = {n: layer.weight.device for n, layer in self.layers.items()}
        self.Z = {n: state["Z"][n].to(dev[n], copy=True) for n in self.layers}  # updated in place
        self.U = {n: state["U"][n].to(dev[n], copy=True) for n in self.layers}
        self.rho = {n: float(state["rho"][n]) for n in self.layers}
        self.k = int(state["k"])
        self._refresh()
