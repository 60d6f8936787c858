"""``--device``: the torch device and the onnxruntime providers it names, for every command (below the
training engine and the techniques, so that evaluating, verifying and training all read it the same way)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from compress.errors import CompressError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a torch device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CompressError("--device cuda requested but no CUDA device is available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise CompressError(f"--device must be auto, cpu or cuda[:N], got {device!r}") from None


def ort_providers(device: str) -> tuple[str, ...]:
    """onnxruntime's execution providers for ``--device``: the CPU one for auto/cpu, CUDA first for cuda[:N]
    (one line when this onnxruntime has no CUDA provider)."""
    if device in ("auto", "cpu"):
        return ("CPUExecutionProvider",)
    if not device.startswith("cuda"):
        raise CompressError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise CompressError(f"--device {device}: this onnxruntime has no CUDA provider "
                            f"(it has {', '.join(ort.get_available_providers())})")
    return ("CUDAExecutionProvider", "CPUExecutionProvider")
