"""Every command's --help follows the convention written down in ARCHITECTURE.md ("Help texts")."""
from __future__ import annotations

import importlib
import re

import click
import pytest

from compress.cli import COMMANDS
from compress.commands.prune import METHOD_PARAMS

EXCEPT: set[str] = set()
METHOD_FLAGS = {p.name for params in METHOD_PARAMS.values() for p in params}
METAVAR = re.compile(r"^[A-Z][A-Z0-9_]*([.,=][A-Z0-9_]+)*$")  # FILE, N, LAYER=RATIO, N,C,H,W


def _commands():
    for name, (module, summary) in COMMANDS.items():
        if name in EXCEPT:
            continue
        cmd = importlib.import_module(f"compress.commands.{module}").command
        yield name, summary, cmd
        for sub_name, sub in getattr(cmd, "commands", {}).items():
            yield f"{name} {sub_name}", None, sub


@pytest.mark.parametrize("name, summary, cmd", list(_commands()), ids=[c[0] for c in _commands()])
def test_help_convention(name, summary, cmd):
    first = (cmd.help or "").strip().splitlines()[0]
    assert first.endswith("."), f"{name}: the summary line is a sentence: {first!r}"
    if summary is not None:
        assert first == summary, f"{name}: the docstring's first line is its COMMANDS line"
    for p in cmd.params:
        if isinstance(p, click.Argument):
            assert METAVAR.match(p.make_metavar(click.Context(cmd)).strip("[].")), f"{name} {p.name}"
            continue
        opt = p.opts[-1]
        if p.name == "help":
            continue
        assert p.help, f"{name} {opt}: every option says what it does"
        assert p.help[0].isupper() and not p.help.endswith("."), f"{name} {opt}: {p.help!r}"
        # prune's method flags list each method's value, and one method is named "default"
        text = p.help.lower().replace("default: ", "") if p.name in METHOD_FLAGS else p.help.lower()
        assert "default" not in text, f"{name} {opt}: defaults go in show_default"
        if p.is_flag:
            continue
        if not isinstance(p.type, click.Choice):
            assert p.metavar and METAVAR.match(p.metavar), f"{name} {opt}: metavar {p.metavar!r}"
        default = p.to_info_dict()["default"]
        if default is not None:
            assert p.show_default, f"{name} {opt}: default {default!r} not shown"
