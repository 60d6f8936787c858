"""Exception types of the converters. Messages say what was expected, what was found, and where."""
from __future__ import annotations


class ConversionError(ValueError):
    """A model file or definition that cannot be converted faithfully."""


class UnsupportedLayerError(ConversionError):
    """One or more layer types have no converter; all of them are named at once."""


class OutputPathError(ValueError):
    """An output path that cannot be written (missing directory, a directory given as a file)."""


def reason(e: BaseException, limit: int = 200) -> str:
    """Another library's exception as the reason in one of ours: its message on one line, at most
    ``limit`` characters, or its type's name when it has none."""
    return " ".join(str(e).split())[:limit] or type(e).__name__
