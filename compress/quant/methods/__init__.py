"""Quantization methods by name, one file each (the trainer's hooks: :mod:`.base`).

    ptq     no training: grids fitted on the weights, weights rounded onto them
    qgt     quantization-guided training (Ghamari et al. 2021): a ramped pull towards the grid
    admm    ADMM quantization (Ye et al. 2018, Leng et al. 2018): Z/U projection onto the grid
"""
from __future__ import annotations

from compress.errors import CompressError
from compress.quant.methods.admm import ADMMQuant
from compress.quant.methods.base import QuantMethod
from compress.quant.methods.ptq import PTQ
from compress.quant.methods.qgt import QGT

METHODS: dict[str, type[QuantMethod]] = {cls.name: cls for cls in (PTQ, QGT, ADMMQuant)}


def method_class(name: str) -> type[QuantMethod]:
    """The quantization method registered as ``name``; an unknown name lists the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(METHODS)
        raise CompressError(f"unknown quantization method {name!r}; available: {known}") from None
