"""After ``compress export`` of a compressed model: does the file run at least as fast as the dense float32
export of the same model? A quick side-by-side check in onnxruntime, so that an export slower than what
it replaces never goes out without a warning (``compress bench`` measures properly).

The baseline is the model as loaded (before thinning, folding or packing), exported with every weight a
dense float32 initializer and LRN written the same way, into a temporary directory. Both files run in
turn (interleaved, medians) at batch 1 and 32, with ``OMP_NUM_THREADS`` intra-op threads (``--threads``),
else one; at most :data:`BUDGET_S` seconds per batch size after three rounds. The verdict allows
:data:`MARGIN` for noise: another process on the machine moves single runs by more than that.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

BATCHES = (1, 32)
ROUNDS = 20
BUDGET_S = 2.0
MARGIN = 1.10  # slower than the dense file by more than this: a warning


@dataclass(frozen=True)
class SpeedCheck:
    speedups: dict[int, float]  # batch -> dense p50 / written p50 (> 1: the export is faster)
    threads: int

    @property
    def slower(self) -> dict[int, float]:
        return {b: s for b, s in self.speedups.items() if s * MARGIN < 1.0}

    def describe(self) -> str:
        parts = ", ".join(f"{ratio_words(s)} at batch {b}" for b, s in self.speedups.items())
        return (f"speed against the dense float32 export of the same model: {parts} (onnxruntime, "
                f"{self.threads} thread{'s' if self.threads != 1 else ''}, quick check; compress bench "
                "measures side by side)")

    def warning(self, path: str) -> str | None:
        if not self.slower:
            return None
        parts = ", ".join(f"{1 / s:.2f}x slower at batch {b}" for b, s in self.slower.items())
        return f"{path} runs {parts} than the dense float32 export of the same model"


def ratio_words(speedup: float) -> str:
    """``1.33x faster``, ``1.33x slower``, or ``the same speed`` within half a percent."""
    if 0.995 <= speedup <= 1.005:
        return "the same speed"
    return f"{speedup:.2f}x faster" if speedup > 1 else f"{1 / speedup:.2f}x slower"


def check_speed(net, meta: dict, written: str, *, lrn: str = "fast",
                batches: tuple[int, ...] = BATCHES) -> SpeedCheck:
    """Time ``written`` against the dense float32 export of ``net`` (the model as loaded)."""
    from converters.onnx.export import export_onnx
    from converters.onnx.speed import medians
    from converters.onnx.verify import _env_threads

    threads = _env_threads() or 1
    base_meta = {k: v for k, v in meta.items() if k != "quantization"}
    with tempfile.TemporaryDirectory() as tmp:
        dense = os.path.join(tmp, "dense.onnx")
        export_onnx(net, dense, sparse=False, meta=base_meta, lrn=lrn)
        times = medians([dense, written], batches=batches, threads=threads, rounds=ROUNDS, budget_s=BUDGET_S)
    return SpeedCheck({b: t[0] / t[1] for b, t in times.items()}, threads)
