"""Project exception types. The CLI turns any of these into one line and a non-zero exit."""
from __future__ import annotations


class CompressError(ValueError):
    """A user-facing error: bad option values, bad model files, a diverging run."""


class DivergenceError(CompressError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(CompressError):
    """Ctrl-C during training; the message names the checkpoint to resume from."""


# What the CLI reports as one line: library code raises ValueError subclasses (CompressError,
# converters.errors.ConversionError, ...) for bad input, and OSError for files. Set COMPRESS_DEBUG=1
# to see the traceback instead.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
