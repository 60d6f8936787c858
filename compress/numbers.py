"""Numbers read from files (JSON meta, checkpoints): what is a finite number, and float32 values.

A JSON integer may have any number of digits, and ``math.isfinite`` or ``float()`` raise OverflowError
on one beyond a float's range; a bool is an int to Python but never a number here.
"""
from __future__ import annotations

import math
from typing import Any


def finite_number(value: Any) -> bool:
    """``value`` is an int or float (not a bool) whose float is finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def as_float32(numbers: list) -> list[float]:
    """Numbers as the float32 values a tensor holds: beyond float32's range (an integer beyond any float
    included) they become infinities, below its smallest subnormal zero."""
    import torch

    wide = []
    for n in numbers:
        try:
            wide.append(float(n))
        except OverflowError:
            wide.append(math.inf if n > 0 else -math.inf)
    return torch.tensor(wide, dtype=torch.float32).tolist()
