"""What every quantization method shares: the grids, the masks that keep zeros zero, the hard quantization.

A quantization method is a set of the training loop's hooks (:class:`compress.train.hooks.MethodHooks`)
that does not prune (so the trainer runs its method phase and no hard prune or masked retrain follows)::

    init(model)             fit each selected layer's grid on the weights as they are (the configured
                            scale method); record which weights are zero (the masks); the method's own
                            set-up (:meth:`_start`)
    before_step(model)      the method's pull (:meth:`_pull`: QGT's regulariser gradient, ADMM's
                            rho (W - Z + U)), computed on the kept entries of a mostly pruned layer
                            (:mod:`compress.quant.kept`; the pull is zero on its zeros)
    after_step(model)       the masks on the weights: every zero is zero again after each optimizer
                            step, whatever the optimizer did there (momentum, weight decay, Adam act
                            entry by entry, so what they do at a masked entry never reaches another;
                            the gradients are not masked: one pass less per step)
    end_iteration(model, k) ADMM's Z/U update (the base does nothing)
    finalize(model)         hard quantization: every selected weight onto its grid (``q * s``)

The masks (``zeros``: where a weight is zero) cover every Convolution/Deconvolution/InnerProduct layer
that has zero weights, quantized or not, so a pruned model stays exactly as sparse. During the method
phase the trainer evaluates the weights as they would be quantized now (:meth:`eval_weights`), so each
epoch's test accuracy is the quantized model's. Grids, masks and counters live in :meth:`state_dict`,
so a resumed run is exact.
"""
from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch
from torch import nn

from compress.layers import PrunableLayer
from compress.quant.config import GridConfig
from compress.quant.grid import LayerGrid, fake_quantize
from compress.quant.kept import Kept
from compress.quant.ptq import LayerQuant, apply_grids
from compress.quant.scale import fit_grid
from compress.train.hooks import MethodHooks
from compress.train.weights import weights_as


class QuantMethod(MethodHooks):
    """Base of the quantization methods: fixed grids fitted at the start, masks, hard quantization."""

    #: whether the method fine-tunes (ptq: no; the command then refuses the training flags)
    trains: ClassVar[bool] = True

    def __init__(self, layers: dict[str, PrunableLayer], grid: GridConfig, **hp: Any) -> None:
        self.steps_per_epoch: int | None = None  # set by plan(); validate() may read it
        super().__init__(layers, **hp)
        self.grid = grid
        self.bits = grid.layer_bits(list(layers))  # {selected layer: bits}, in the net's order
        self.layers = {n: layers[n] for n in self.bits}
        self.grids: dict[str, LayerGrid] = {}
        self.zeros: dict[str, torch.Tensor] = {}  # {layer: where its weight is zero}, layers with zeros
        self.kept: dict[str, Kept | None] = {}  # {selected layer: its kept entries, if mostly pruned}
        self.t = 0  # optimizer steps taken in the method phase

    def plan(self, steps_per_epoch: int | None) -> None:
        """The length of an epoch in optimizer steps (schedules that ramp over the run need it)."""
        self.steps_per_epoch = steps_per_epoch

    def fit(self, name: str, w: torch.Tensor) -> LayerGrid:
        """The grid of layer ``name`` for weights ``w``, as the configuration says."""
        return fit_grid(w, self.bits[name], per_channel=self.grid.per_channel, method=self.grid.scale,
                        name=name)

    # --- hooks -------------------------------------------------------------------------------
    @torch.no_grad()
    def init(self, model: nn.Module) -> None:
        self.zeros = {n: layer.weight == 0 for n, layer in self.all_layers.items()
                      if not bool(layer.weight.all())}
        self.grids = {n: self.fit(n, layer.weight) for n, layer in self.layers.items()}
        self.kept = {n: Kept.of(self.zeros.get(n)) for n in self.layers}
        self.t = 0
        self._start()

    def _start(self) -> None:
        """The method's own set-up after the grids are fitted (ADMM: Z and U)."""

    @torch.no_grad()
    def before_step(self, model: nn.Module, lr: float | None = None) -> None:
        self._pull()

    def _pull(self) -> None:
        """Add the method's gradient term to the weights' gradients (after backward)."""

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for n, zero in self.zeros.items():
            self.all_layers[n].weight.masked_fill_(zero, 0.0)
        self.t += 1

    def final_grids(self) -> dict[str, LayerGrid]:
        """The grids of the hard quantization (by default the ones fitted at the start)."""
        return self.grids

    def finalize(self, model: nn.Module) -> dict[str, LayerQuant]:
        """Hard-quantize every selected weight onto its final grid; what changed, per layer."""
        return apply_grids(model, self.final_grids())

    # --- views and state ---------------------------------------------------------------------
    def eval_weights(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """The weights quantized on the current grids, for the epoch's evaluation."""
        grids = self.final_grids()
        with torch.no_grad():
            quantized = {n: fake_quantize(layer.weight, grids[n]) for n, layer in self.layers.items()}
        return weights_as(self.layers, quantized)

    def state_dict(self) -> dict[str, Any]:
        return {"grids": {n: g.scales.clone() for n, g in self.grids.items()},
                "zeros": {n: z.clone() for n, z in self.zeros.items()}, "t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.grids = {n: LayerGrid(self.bits[n], state["grids"][n]) for n in self.layers}
        self.zeros = {n: z.to(self.all_layers[n].weight.device) for n, z in state["zeros"].items()}
        self.kept = {n: Kept.of(self.zeros.get(n)) for n in self.layers}
        self.t = int(state["t"])
