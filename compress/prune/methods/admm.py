"""``admm``: weight pruning by ADMM (Zhang et al. 2018, "A Systematic DNN Weight Pruning Framework
using Alternating Direction Method of Multipliers", arXiv 1804.03294), one-shot or progressive (Ye et
al. 2019, "Progressive DNN Compression: A Key to Achieve Ultra-High Weight Pruning and Quantization
Rates using ADMM", arXiv 1903.09769).

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

``--progressive``: ``stages`` stages; stage ``s`` of ``S`` targets ``t ** (s/S)`` of each layer's keep
ratio ``t`` (:mod:`compress.prune.methods.stages`), the last the targets. Each stage but the last is
``admm_iters`` ADMM iterations, a hard prune to its ratios and ``stage_retrain`` epochs of masked
retraining (one learning-rate cycle at ``--lr``); the next stage starts ADMM afresh from that model
(Z = Proj(W), U = 0, rho back to ``--rho``) with the pruned weights held at zero. The last stage is
ADMM towards the targets, then the trainer's hard prune and ``--retrain-epochs`` retrain.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.prune.method_params import PARAMS
from compress.prune.methods.base import Method, hard_prune, project
from compress.prune.methods.registry import register
from compress.prune.methods.stages import load_masks, masks_state, stage_targets
from compress.train.weights import apply_masks, mask_grads

PROGRESSIVE_ONLY = ("stages", "stage_retrain")


@register
class ADMM(Method):
    name = "admm"
    params = PARAMS["admm"]
    default_pcen = 80.0
    default_retrain_epochs = 45
    default_retrain_weight_decay = 1e-4

    def validate(self) -> None:
        if self.targets is None:
            raise CompressError("admm needs targets (--targets, --keep or --pcen)")
        stray = [f"--{n.replace('_', '-')}" for n in PROGRESSIVE_ONLY if n in self.given]
        if stray and not self.hp["progressive"]:
            verb = "applies" if len(stray) == 1 else "apply"
            raise CompressError(f"admm: {', '.join(stray)} {verb} only with --progressive")
        if self.hp["progressive"] and int(self.hp["admm_iters"]) < 1:
            raise CompressError("admm --progressive needs --admm-iters >= 1 (each stage ends with ADMM)")
        n = int(self.hp["stages"]) if self.hp["progressive"] else 1
        self.stage_targets = stage_targets(self.targets, n)
        # one entry per learning-rate cycle of the method phase: (stage, "admm" | "retrain")
        self.plan = []
        for s in range(n):
            self.plan += [(s, "admm")] * int(self.hp["admm_iters"])
            if s < n - 1 and int(self.hp["stage_retrain"]) > 0:
                self.plan.append((s, "retrain"))

    def cycles(self) -> list[int]:
        epochs = {"admm": int(self.hp["epochs_per_iter"]), "retrain": int(self.hp["stage_retrain"])}
        return [epochs[part] for _, part in self.plan]

    def total_epochs(self) -> int:
        return sum(self.cycles())

    def _where(self) -> tuple[int, str]:
        """The stage and part of the cycle now running (after the last: the last stage's ADMM)."""
        return self.plan[self.cycle] if self.cycle < len(self.plan) else (len(self.stage_targets) - 1, "admm")

    @torch.no_grad()
    def _project(self, model: nn.Module | None, values: dict[str, torch.Tensor],
                 out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Z = Proj(values) for every ADMM layer, into ``out`` when given: each layer onto its own sparse
        set, and, in channel mode on a CaffeNet, every coupled channel set kept or zeroed as one (the
        ``k`` sets of largest importance of ``values``; :mod:`compress.prune.coupling`)."""
        targets = self.stage_targets[self._where()[0]]
        coupling = self.coupling(model)
        z = {}
        for n, layer in self.layers.items():
            if coupling is None or coupling.legacy(n):
                z[n] = project(layer, values[n], targets, None if out is None else out[n])
        if coupling is not None:
            every = {n: values[n] if n in values else layer.weight.detach()
                     for n, layer in self.all_layers.items()}
            masks = coupling.masks(every, targets)
            for n in self.layers:
                if n in z:
                    if n in masks:
                        z[n].mul_(masks[n])
                else:
                    dest = torch.empty_like(values[n]) if out is None else out[n]
                    z[n] = torch.mul(values[n], masks[n], out=dest) if n in masks else dest.copy_(values[n])
        return z

    @torch.no_grad()
    def init(self, model: nn.Module) -> None:
        self.k, self.cycle, self.masks = 0, 0, None  # cycles completed, the cycle running
        self._model = model
        self._start()

    @torch.no_grad()
    def _start(self) -> None:
        """ADMM from the weights as they are, towards the current stage's targets."""
        model = getattr(self, "_model", None)
        self.Z = self._project(model, {n: layer.weight.detach() for n, layer in self.layers.items()})
        self.U = {n: torch.zeros_like(z) for n, z in self.Z.items()}
        self.rho = {n: float(self.hp["rho"]) for n in self.layers}
        self._refresh()

    def _refresh(self) -> None:
        self._D = {n: self.U[n] - self.Z[n] for n in self.layers}  # grad += rho (W + D)

    @torch.no_grad()
    def before_step(self, model: nn.Module, lr: float | None = None) -> None:
        if self._where()[1] == "admm":
            for n, layer in self.layers.items():
                w = layer.weight
                if w.grad is not None:
                    rho = self.rho[n] * self.accumulated
                    w.grad.add_(w.detach(), alpha=rho).add_(self._D[n], alpha=rho)
        if self.masks is not None:
            mask_grads(self.all_layers, self.masks)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        if self.masks is not None:
            apply_masks(self.all_layers, self.masks)

    @torch.no_grad()
    def end_iteration(self, model: nn.Module, k: int) -> None:
        """After an ADMM iteration: Z = Proj(W + U), U = W + U - Z, in place (W + U goes into U's
        storage, Z is projected into its own: no full-size temporary; bit for bit the formulas, as Z is
        W + U or a signed zero entrywise)."""
        if self._where()[1] == "admm":
            growth = float(self.hp["rho_growth"])
            v = {n: self.U[n].add_(layer.weight.detach()) for n, layer in self.layers.items()}
            self._project(model, v, out=self.Z)
            for n in self.layers:
                torch.sub(v[n].sub_(self.Z[n]), self.Z[n], out=self._D[n])
                self.rho[n] *= growth
        self.k = k + 1

    @torch.no_grad()
    def start_cycle(self, model: nn.Module, k: int) -> None:
        """Cycle ``k`` opens: after a stage's ADMM (but the last stage's: the trainer's finalize_masks)
        the hard prune to its ratios; a stage's ADMM starts afresh (Z, U, rho). Done here rather than
        after the previous cycle, so every epoch logs the model it trained."""
        done, self.cycle = self._where(), k
        now = self._where()
        if k == 0 or now == done:
            return
        if done[1] == "admm":
            self.masks = hard_prune(self.all_layers, self.stage_targets[done[0]], self.coupling(model))
        if now[1] == "admm":
            self._model = model
            self._start()

    def sparse_weights(self) -> dict[str, torch.Tensor]:
        if self._where()[1] == "retrain":
            return {n: layer.weight.detach() for n, layer in self.layers.items()}
        return dict(self.Z)

    def metrics(self) -> dict[str, Any]:
        stage, part = self._where()
        out: dict[str, Any] = {"stage": stage + 1, "part": part} if self.hp["progressive"] else {}
        if part == "admm":
            w = {n: layer.weight.detach() for n, layer in self.layers.items()}
            num = sum(float((w[n] - self.Z[n]).pow(2).sum()) for n in w)
            den = sum(float(t.pow(2).sum()) for t in w.values())
            out.update(admm_residual=(num / den) ** 0.5 if den else 0.0,
                       rho=max(self.rho.values()) if self.rho else 0.0)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"Z": {n: t.clone() for n, t in self.Z.items()},
                "U": {n: t.clone() for n, t in self.U.items()}, "rho": dict(self.rho), "k": self.k,
                "cycle": self.cycle, "masks": masks_state(self.masks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = {n: layer.weight.device for n, layer in self.layers.items()}
        self.Z = {n: state["Z"][n].to(dev[n], copy=True) for n in self.layers}  # updated in place
        self.U = {n: state["U"][n].to(dev[n], copy=True) for n in self.layers}
        self.rho = {n: float(state["rho"][n]) for n in self.layers}
        self.k = int(state["k"])
        self.cycle = int(state.get("cycle", self.k))
        self.masks = load_masks(state.get("masks"), self.all_layers)
        self._refresh()
