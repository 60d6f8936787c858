"""Options every command spells the same way: ``--threads N`` and ``--json``."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click


def _set_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    """Before anything computes: ``OMP_NUM_THREADS`` (read by torch when it starts, and by this tool's
    onnxruntime sessions), or torch's own setting when torch is already loaded."""
    if value is None:
        return
    os.environ["OMP_NUM_THREADS"] = str(value)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(value)


def threads_option(f: Callable) -> Callable:
    return click.option("--threads", type=click.IntRange(min=1), metavar="N", expose_value=False,
                        is_eager=True, callback=_set_threads, show_default="OMP_NUM_THREADS, else every core",
                        help="CPU threads for PyTorch and onnxruntime")(f)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object")(f)


def echo_json(data: dict) -> None:
    import json

    click.echo(json.dumps(data, indent=2, default=str))


def human_size(n: int) -> str:
    """Bytes as ``compress`` prints them: ``3.29 MB``, ``471.12 kB``, ``812 B`` (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
