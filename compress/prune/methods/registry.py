"""The registry of pruning methods by name (STYLE.md: registries keyed by explicit names): each method's
file registers its class with ``@register``; :mod:`compress.prune.methods` imports them all."""
from __future__ import annotations

from compress.errors import CompressError
from compress.prune.methods.base import Method

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name or cls.name in _REGISTRY:
        raise RuntimeError(f"method name {cls.name!r} missing or registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CompressError(f"unknown pruning method {name!r}; available: {', '.join(available())}") from None


def available() -> list[str]:
    return list(_REGISTRY)

