"""Every quantization method's name and hyperparameters, declared without torch.

``compress quantize`` builds its flags from :data:`PARAMS`, so that its ``--help`` and its usage errors
answer before torch is imported; each method class takes its ``params`` from here
(``params = PARAMS["qgt"]``). A test checks that ``compress.quant.methods.METHODS`` and this table name the
same methods in the same order, and that :data:`RAMP_SHAPES` are the regulariser's ramps.
"""
from __future__ import annotations

from compress.params import Param

RAMP_SHAPES = ("linear", "cosine", "exp")  # compress.quant.regularizer.RAMPS

PARAMS: dict[str, tuple[Param, ...]] = {
    "ptq": (),
    # qgt and admm: measured on LeNet/MNIST (README "Quantization"): the ADMM 71.2x model at 4 and 2 bits.
    "qgt": (
        Param("epochs", int, 10, "Fine-tuning epochs", low=1),
        Param("qgt_lambda", float, 20.0, "QGT: strength of the pull towards the grid once ramped up",
              low=0),
        Param("qgt_lambda_min", float, 1e-3, "QGT: strength of the pull at the first step", low=0),
        Param("qgt_ramp", float, 1.0, "QGT: fraction of the steps over which the pull rises", low=0, high=1),
        Param("qgt_ramp_shape", str, "exp", "QGT: shape of the rise", choices=RAMP_SHAPES),
        Param("qgt_refit", str, "epoch", "QGT: refit the grids' scales to the weights after every epoch, "
              "or keep the initial ones", choices=("epoch", "never")),
        Param("qgt_forward", str, "quantized", "QGT: the weights of the forward pass (quantized: the "
              "gradient there updates the float weights)", choices=("quantized", "float")),
    ),
    "admm": (
        Param("rho", float, 1e-2, "ADMM penalty per layer", low=0, low_open=True),
        Param("rho_growth", float, 1.3, "Multiplier of rho after each ADMM iteration", low=1),
        Param("admm_iters", int, 10, "ADMM iterations", low=1),
        Param("epochs_per_iter", int, 1, "Epochs per ADMM iteration", low=1),
        Param("admm_scale", str, "refit", "ADMM: the Z-step's grid (refit to W + U, or fixed at the start)",
              choices=("refit", "fixed")),
    ),
}
