"""A saved training state (a checkpoint, a ``.solverstate.pt``) read back field by field.

``torch.load(weights_only=True)`` guarantees plain data, not the right data: a resumed run must not
meet a cursor that is a string, a generator position of 10**30 or a momentum history of another
shape halfway through its first step. Every part of the run reads its own part of the state through
:class:`Fields`, whose accessors check the type and range of one field and raise one
:class:`~compress.errors.CompressError` naming it (``batches.mnist.position: expected an integer from
0 to 31, found 10**30``); the trainer prefixes the file.
"""
from __future__ import annotations

from typing import Any

import torch

from compress.errors import CompressError
from compress.numbers import finite_number
from converters.caffe.names import cut, listed
from converters.errors import reason


def found(value: Any) -> str:
    """A found value in a message: its repr, cut when long, or its type for containers and tensors."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return cut(repr(value), 60)


class Fields:
    """The dict ``state`` at ``where`` (a dotted path such as ``batches.mnist``), read field by field."""

    def __init__(self, state: Any, where: str) -> None:
        if not isinstance(state, dict):
            raise CompressError(f"{where}: expected a dict, found {found(state)}")
        self.state, self.where = state, where

    def at(self, key: Any) -> str:
        return f"{self.where}.{key}" if self.where else str(key)

    def get(self, key: Any) -> Any:
        if key not in self.state:
            raise CompressError(f"{self.at(key)}: missing")
        return self.state[key]

    def fields(self, key: Any) -> Fields:
        """The nested dict ``key``."""
        return Fields(self.get(key), self.at(key))

    def integer(self, key: Any, low: int = 0, high: int = 2**63 - 1) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise CompressError(f"{self.at(key)}: expected an integer from {low} to {high}, "
                                f"found {found(value)}")
        return value

    def number(self, key: Any) -> float:
        value = self.get(key)
        if not finite_number(value):
            raise CompressError(f"{self.at(key)}: expected a finite number, found {found(value)}")
        return float(value)

    def sequence(self, key: Any, length: int | None = None) -> list:
        value = self.get(key)
        if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
            what = "a list" if length is None else f"a list of {length}"
            raise CompressError(f"{self.at(key)}: expected {what}, found {found(value)}")
        return list(value)

    def numbers(self, key: Any) -> list[float]:
        """A list of finite numbers."""
        values = self.sequence(key)
        bad = [v for v in values if not finite_number(v)]
        if bad:
            raise CompressError(f"{self.at(key)}: expected finite numbers, found {found(bad[0])}")
        return [float(v) for v in values]

    def tensor(self, key: Any, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None,
               low: int | None = None, high: int | None = None) -> torch.Tensor:
        """A dense CPU tensor, of ``shape`` and ``dtype`` when given, its values in [low, high] when given
        (integers), finite (floats)."""
        return check_tensor(self.get(key), self.at(key), shape, dtype, low, high)


def check_tensor(value: Any, where: str, shape: tuple[int, ...] | None = None,
                 dtype: torch.dtype | None = None, low: int | None = None,
                 high: int | None = None) -> torch.Tensor:
    """``value`` as :meth:`Fields.tensor` checks it (``where`` names it)."""
    want = "a tensor" if shape is None else f"a tensor of shape {list(shape)}"
    if dtype is not None:
        want += f" of {dtype}"
    if not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.is_meta \
            or (shape is not None and tuple(value.shape) != tuple(shape)) \
            or (dtype is not None and value.dtype != dtype):
        raise CompressError(f"{where}: expected {want}, found {found(value)}")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise CompressError(f"{where}: holds NaN or infinite values")
    if value.numel() and low is not None and high is not None \
            and not (int(value.min()) >= low and int(value.max()) <= high):
        raise CompressError(f"{where}: values must be from {low} to {high}, found {int(value.min())} to "
                            f"{int(value.max())}")
    return value


def load_module_state(module: torch.nn.Module, state: Any, where: str) -> None:
    """``module.load_state_dict(state)`` once every tensor of ``state`` has the name, shape and dtype of
    the module's own and holds finite values (``load_state_dict`` casts dtypes and accepts NaN)."""
    fields = Fields(state, where)
    own = module.state_dict()
    missing = [k for k in own if k not in fields.state]
    unexpected = [k for k in fields.state if k not in own]
    if missing or unexpected:
        parts = ([f"missing {listed(missing)}"] if missing else []) + \
            ([f"unexpected {listed(unexpected)}"] if unexpected else [])
        raise CompressError(f"{where} holds another model's weights ({'; '.join(parts)})")
    for key, tensor in own.items():
        fields.tensor(key, tuple(tensor.shape), tensor.dtype)
    module.load_state_dict(fields.state)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Any, where: str, updates: int) -> None:
    """``optimizer.load_state_dict(state)`` after checking its structure against the optimizer's
    parameters; then every tensor of the loaded state must be a scalar or have its parameter's shape,
    and a run that has made ``updates`` > 0 updates must have something to continue from."""
    fields = Fields(state, where)
    groups = fields.sequence("param_groups", len(optimizer.param_groups))
    ids: list[int] = []
    for i, (group, mine) in enumerate(zip(groups, optimizer.param_groups, strict=True)):
        at = f"{where}.param_groups[{i}]"
        params = Fields(group, at).sequence("params", len(mine["params"]))
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in params):
            raise CompressError(f"{at}.params: expected parameter indices, found {found(params)}")
        ids += params
    if len(set(ids)) != len(ids):
        raise CompressError(f"{where}.param_groups: a parameter index appears twice")
    held = fields.fields("state")
    unknown = [k for k in held.state if k not in set(ids)]
    if unknown:
        raise CompressError(f"{held.where}: state for parameter {found(unknown[0])}, which no group holds")
    if updates > 0 and not held.state:
        raise CompressError(f"{held.where}: empty, but the run has made {updates} updates (momentum and "
                            "the like would start again: this state would not continue the run)")
    for key in held.state:
        Fields(held.state[key], held.at(key))
    try:
        optimizer.load_state_dict(fields.state)
    except CompressError:
        raise
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CompressError(f"{where}: {reason(e)}") from None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, p in zip(ids, params, strict=True):
        for name, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor):
                if value.dim() and tuple(value.shape) != tuple(p.shape):
                    raise CompressError(f"{where}.state.{index}.{name}: expected a tensor of shape "
                                        f"{list(p.shape)} (its parameter's), found {found(value)}")
                check_tensor(value, f"{where}.state.{index}.{name}")
            elif value is not None and not finite_number(value):
                raise CompressError(f"{where}.state.{index}.{name}: expected a tensor or a number, found "
                                    f"{found(value)}")
