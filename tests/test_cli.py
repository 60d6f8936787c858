"""The CLI shell: exit codes, one-line errors, and an instant --help (no torch import)."""
from __future__ import annotations

import subprocess
import sys

import click

from compress import cli


def test_help_lists_every_command_without_importing_torch():
    code = ("import sys; from compress.cli import main; rc = main(['--help']); "
            "print('torch' in sys.modules, rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in cli.COMMANDS:
        assert name in out
    assert out.strip().splitlines()[-1] == "False 0"


def test_unknown_command_is_a_usage_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "No such command 'frobnicate'" in capsys.readouterr().err


def test_ctx_exit_code_is_propagated(monkeypatch):
    @click.command()
    @click.pass_context
    def failing(ctx):
        ctx.exit(3)

    monkeypatch.setitem(cli.COMMANDS, "failing", ("failing", "test"))
    monkeypatch.setattr(cli.LazyGroup, "get_command", lambda self, ctx, name: failing)
    assert cli.main(["failing"]) == 3


def test_user_error_is_one_line_and_exit_1(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "missing.caffemodel")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: ") and "missing.caffemodel" in err
    assert "Traceback" not in err
