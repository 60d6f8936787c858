"""The ``compress`` command line: a thin layer over the library.

Each command lives in ``compress/commands/<name>.py`` and is imported only when it runs, so
``compress --help`` stays instant (torch is never imported for it). Library errors become one
line on stderr and exit status 1; a traceback is a bug.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

# name -> (module under compress.commands, one-line help shown by `compress --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("convert", "Convert a Caffe model (.caffemodel + .prototxt) to a compress model file."),
    "info": ("info", "Show layers, output shapes and parameter counts in Caffe's names."),
    "zoo": ("zoo", "Models shipped with the tool (LeNet, MobileNets, ResNet-20, AlexNet) and their presets."),
    "train": ("train", "Train a Caffe net from its solver.prototxt exactly as caffe train does."),
    "prune": ("prune", "Fine-tune under ADMM/RVSM/RGSM/SGD, hard-prune to targets, retrain with masks."),
    "quantize": ("quantize", "Quantize weights to 8/4/3/2-bit grids by PTQ, QGT or ADMM training."),
    "eval": ("eval", "Top-1/top-5 accuracy and loss of a model on a test set (PyTorch or onnxruntime)."),
    "report": ("report", "Per-layer sparsity table (Markdown, CSV, JSON) of a pruned model."),
    "export": ("export", "Export to ONNX (sparse initializers where smaller), thinned, or .caffemodel."),
    "verify": ("verify", "Check an ONNX file against its PyTorch model with onnxruntime."),
    "bench": ("bench", "Time ONNX files side by side in onnxruntime, as ratios to the first."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"compress.commands.{COMMANDS[name][0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="compress")
def cli() -> None:
    """compress: make Caffe and PyTorch CNNs smaller, and prove it.

    \b
    Typical use:
      compress prune lenet --method admm --targets admm-71x --data mnist -o lenet_admm.pt
      compress report lenet_admm.pt --per-layer
      compress export lenet_admm.pt -o lenet_admm.onnx
      compress verify lenet_admm.onnx --against lenet_admm.pt
    """


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line and exit status 1."""
    from compress.errors import USER_ERRORS, TrainingInterrupted

    try:
        # With standalone_mode=False click returns ctx.exit()'s code (or the command's return value).
        rv = cli.main(args=argv, prog_name="compress", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except TrainingInterrupted as e:
        click.echo(f"Interrupted: {_one_line(e)}", err=True)
        return 130
    except USER_ERRORS as e:
        if os.environ.get("COMPRESS_DEBUG"):
            raise
        click.echo(f"Error: {_one_line(e)}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def _one_line(e: BaseException) -> str:
    from converters.caffe.names import bare, cut

    if isinstance(e, FileNotFoundError) and e.filename:
        return f"no such file: {bare(e.filename)}"
    if isinstance(e, OSError) and e.filename and e.strerror:
        return f"{e.strerror}: {bare(e.filename)}"
    return cut(" ".join(str(e).split()), 2000) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
