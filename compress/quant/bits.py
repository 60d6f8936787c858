"""The bit widths a grid may have (2 to 8), checked without torch so that a wrong ``--bits`` is refused at
once (:mod:`compress.quant.grid` re-exports these)."""
from __future__ import annotations

from compress.errors import CompressError

MIN_BITS, MAX_BITS = 2, 8


def check_bits(bits: object, what: str = "bits") -> int:
    """``bits`` as an int in ``[MIN_BITS, MAX_BITS]``, else a CompressError naming ``what``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise CompressError(f"{what} must be an integer from {MIN_BITS} to {MAX_BITS} (a symmetric signed "
                            f"grid needs at least the levels -1, 0, 1), got {bits!r}")
    return bits
