"""``ptq``: post-training quantization, no data and no training (:mod:`compress.quant.ptq`).

Each selected weight gets its grid from the weights as they are (max-abs or MSE scale) and is replaced
by its nearest grid point. As a method it has no hyperparameters and no epochs: ``init`` fits the
grids, ``finalize`` applies them.
"""
from __future__ import annotations

from compress.quant.method_params import PARAMS
from compress.quant.methods.base import QuantMethod


class PTQ(QuantMethod):
    name = "ptq"
    params = PARAMS["ptq"]
    trains = False

    def total_epochs(self) -> int:
        return 0
