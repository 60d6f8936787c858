"""Training checkpoints: one ``torch.save`` of plain data (tensors, numbers, strings, dicts), written
atomically after every epoch and read back with ``weights_only=True``.

Contents: ``model`` (state dict), ``optimizer``, ``scaler`` (AMP), ``method`` (Z/U/u/rho...),
``masks`` (None during the method phase), ``epoch`` (epochs completed), ``step`` (optimizer steps so
far), ``rng`` (torch CPU/CUDA generator states), ``teacher`` (the distillation teacher's state
dict, or None), ``history``, ``info`` (what run this is, to refuse resuming a different one) and
``command`` (the command line's parameters, so that ``--resume`` alone continues the run). On resume every
field is checked before it is used (``compress/savedstate.py``): ``weights_only`` only guarantees plain data.

:func:`weights_digest` names the model a run started from (its ``info["weights"]``, checked on resume).
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from converters.atomic import atomic_open
from converters.errors import reason

FORMAT = "compress-checkpoint"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    with atomic_open(path, "wb") as f:
        torch.save({"format": FORMAT, "version": 1, **payload}, f)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise CompressError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of many kinds
        raise CompressError(f"cannot read checkpoint {path}: {reason(e)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CompressError(f"{path} is not a compress training checkpoint")
    return ckpt


def rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], where: str = "rng") -> None:
    """Restore :func:`rng_state`'s generators, each state checked first (``where`` names it)."""
    from compress.savedstate import Fields

    fields = Fields(state, where)
    cpu = fields.tensor("cpu", tuple(torch.get_rng_state().shape), torch.uint8)
    cuda = fields.sequence("cuda") if "cuda" in state and torch.cuda.is_available() else None
    try:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
    except (RuntimeError, TypeError, ValueError) as e:
        raise CompressError(f"{where}: not a generator state ({reason(e)})") from None


def read_command(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``command`` record of a checkpoint (None when it has none), read without loading its tensors
    into memory (memory-mapped)."""
    if not os.path.isfile(path):
        raise CompressError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - pickle/zip errors of many kinds
        raise CompressError(f"cannot read checkpoint {path}: {reason(e)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CompressError(f"{path} is not a compress training checkpoint")
    command = ckpt.get("command")
    if command is None:
        return None
    if not (isinstance(command, dict) and isinstance(command.get("params", {}), dict)):
        raise CompressError(f"checkpoint {path}: its command record is damaged")
    return command


def weights_digest(net: nn.Module) -> str:
    """A short digest of every parameter and buffer: the identity of the model a run started from."""
    h = hashlib.blake2b(digest_size=12)
    for key, t in net.state_dict().items():
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
