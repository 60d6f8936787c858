"""The command a case runs in its child: ``compress <argv>`` through the CLI's own click group, in the
case directory (the inputs are relative to it, as a Caffe user's solver paths are to the working
directory), its output captured.

Exceptions are not caught here: the runner classifies them (``runner.py``), so a CompressError is
``clean`` and anything else is reported. A command that returns must also have said something true:
a figure it prints (accuracy, loss, max abs error) is never NaN or infinite (``mismatch``), except in
``compress train``'s own log of the test outputs, where Caffe prints them as they come.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

from tools.fuzz.case import Case
from tools.fuzz.runner import Mismatch

NONFINITE = re.compile(r"(?<![\w.])-?(nan|inf)(?![\w.])", re.IGNORECASE)
TRAINING = ("train",)  # commands whose test outputs may be NaN, as Caffe's are


def run_command(case: Case, directory: Path) -> dict:
    """Run ``compress <case.argv>`` in ``directory``; the captured output is checked."""
    from compress.cli import cli

    os.chdir(directory)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(args=list(case.argv), prog_name="compress", standalone_mode=False)
    if code not in (None, 0):
        raise Mismatch(f"compress {case.argv[0]} returned exit status {code} without an error")
    text = out.getvalue()
    if case.argv[0] not in TRAINING:
        bad = next((line for line in text.splitlines() if NONFINITE.search(line)), None)
        if bad is not None:
            raise Mismatch(f"compress {case.argv[0]} printed a figure that is not finite: "
                           f"{bad.strip()[:200]}")
    return {"lines": len(text.splitlines())}


def prepare() -> None:
    """Import every command module and what it imports before the children fork."""
    import compress.commands.eval  # noqa: F401
    import compress.commands.export  # noqa: F401
    import compress.commands.info  # noqa: F401
    import compress.commands.train  # noqa: F401
    import compress.commands.verify  # noqa: F401
    import compress.evaluate  # noqa: F401
    import compress.solver.train  # noqa: F401
    import converters.onnx.verify  # noqa: F401
