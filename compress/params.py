"""Hyperparameters declared next to the code that reads them, and the command-line flags made from them.

A pruning (or quantization) method lists its hyperparameters as :class:`Param` records::

    params = (Param("rho", float, 1e-3, "ADMM penalty per layer", low=0, low_open=True), ...)

and nothing else: the ``prune`` command builds one ``--rho`` option from that declaration, the method
validates values against it, and the model's meta records the values used. A flag shared by several
methods (``--epochs``) is one option whose help lists each method's default; a flag given to a method
that does not declare it is an error naming the methods that take it (never silently ignored).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from compress.errors import CompressError


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its name (``admm_iters`` -> ``--admm-iters``), type, default and help."""

    name: str
    type: type  # int, float or str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    low: float | None = None  # inclusive lower bound (exclusive with low_open)
    low_open: bool = False
    high: float | None = None  # inclusive upper bound

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, owner: str) -> Any:
        """``value`` converted to the declared type and checked against the bounds and choices."""
        where = f"{owner}: {self.flag}"
        if self.choices is not None:
            if value not in self.choices:
                raise CompressError(f"{where} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        try:
            if self.type is int and (isinstance(value, bool) or float(value) != int(value)):
                raise ValueError
            v = self.type(value)
        except (TypeError, ValueError):
            raise CompressError(f"{where} must be {'an integer' if self.type is int else 'a number'}, "
                                f"got {value!r}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise CompressError(f"{where} must be finite, got {value!r}")
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            op = ">" if self.low_open else ">="
            raise CompressError(f"{where} must be {op} {self.low:g}, got {value!r}")
        if self.high is not None and v > self.high:
            raise CompressError(f"{where} must be <= {self.high:g}, got {value!r}")
        return v


def resolve(params: Iterable[Param], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Every declared value: the given one (checked) where not None, else the default."""
    out = {}
    for p in params:
        value = given.get(p.name)
        out[p.name] = p.default if value is None else p.check(value, owner)
    return out


def merged(owners: Mapping[str, Iterable[Param]]) -> dict[str, tuple[Param, dict[str, Any]]]:
    """One entry per parameter name across ``owners`` ({owner: params}): the first declaration (for
    type, choices, help) and each owner's default, in declaration order."""
    out: dict[str, tuple[Param, dict[str, Any]]] = {}
    for owner, params in owners.items():
        for p in params:
            first, defaults = out.setdefault(p.name, (p, {}))
            if first.type is not p.type:
                raise RuntimeError(f"parameter {p.name!r} declared with two types")
            defaults[owner] = p.default
    return out


def click_options(owners: Mapping[str, Iterable[Param]]) -> Callable:
    """A decorator adding one click option per parameter name (default None: the owner's default)."""
    import click

    def deco(fn: Callable) -> Callable:
        for p, defaults in reversed(list(merged(owners).values())):
            if len(defaults) == len(owners) and len(set(map(repr, defaults.values()))) == 1:
                shown = f"{next(iter(defaults.values()))}"
            else:
                shown = "; ".join(f"{o}: {d}" for o, d in defaults.items())
            kind = click.Choice(list(p.choices)) if p.choices else p.type
            metavar = None if p.choices else ("N" if p.type is int else "X")
            fn = click.option(p.flag, p.name, type=kind, default=None, metavar=metavar,
                              help=f"{p.help} [{shown}]")(fn)
        return fn

    return deco


def refuse_foreign(owners: Mapping[str, Iterable[Param]], owner: str, given: Mapping[str, Any]) -> None:
    """A value given for a parameter that ``owner`` does not declare is an error naming who takes it."""
    own = {p.name for p in owners[owner]}
    for name, (p, defaults) in merged(owners).items():
        if name not in own and given.get(name) is not None:
            raise CompressError(f"{p.flag} does not apply to {owner} (it is a flag of "
                                f"{', '.join(defaults)})")
