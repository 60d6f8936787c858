"""``compress convert MODEL.caffemodel [--prototxt NET.prototxt] -o OUT``: write a model file."""
from __future__ import annotations

import logging

import click

from compress.commands._common import echo_json, json_option, threads_option


def convert_model(model: str, output: str, *, prototxt: str | None = None,
                  input_shape: tuple[int, ...] | None = None):
    """Load ``model`` (anything :func:`compress.modelfile.load_model` accepts) and save it as a model
    file at ``output``. The output is checked before any loading (writable, not one of the files
    ``model`` is read from); returns the loaded Model."""
    from compress.modelfile import load_model, save_model
    from compress.outputs import check_outputs

    check_outputs([output], models=[(model, prototxt)])
    shapes = None
    if input_shape:
        from converters.caffe.prototxt import read_net_text

        shapes = {_first_input(read_net_text(prototxt) if prototxt else None, model): input_shape}
    loaded = load_model(model, prototxt, input_shapes=shapes)
    save_model(output, loaded.net, loaded.meta)
    return loaded


class _Stderr(logging.Handler):
    """Library warnings (dropped training layers, ignored weights) as plain lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def show_warnings() -> None:
    """Route the library's warnings to stderr once (click.echo finds the current stream each time)."""
    for name in ("converters", "compress"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _Stderr) for h in logger.handlers):
            handler = _Stderr(logging.WARNING)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)


def _first_input(net, model: str) -> str:
    """The blob an --input-shape applies to: the net's first input or data layer's first top."""
    from compress.errors import CompressError

    if net is not None:
        if net.input:
            return net.input[0]
        for layer in net.layer:
            if layer.type == "Input" or layer.type.endswith("Data"):
                return layer.top[0]
    raise CompressError(f"--input-shape needs --prototxt to know which blob is the input of {model}")


def parse_shape(ctx, param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        dims = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if not dims or min(dims) <= 0:
        raise click.BadParameter(f"expected positive integers like 1,3,227,227, found {value!r}")
    return dims


@click.command("convert")
@click.argument("model", metavar="MODEL")
@click.option("--prototxt", metavar="FILE", show_default="MODEL's .prototxt sibling, else a matching zoo net",
              help="Net definition (deploy or train_val)")
@click.option("-o", "--output", required=True, metavar="FILE", help="Model file to write (.pt)")
@click.option("--input-shape", callback=parse_shape, metavar="N,C,H,W",
              help="Input shape for a train_val definition whose data layer leaves it open")
@threads_option
@json_option
def command(model: str, prototxt: str | None, output: str, input_shape: tuple[int, ...] | None,
            as_json: bool) -> None:
    """Convert a Caffe model (.caffemodel + .prototxt) to a compress model file.

    MODEL is a .caffemodel (its definition from --prototxt); it may also be a model file, a .prototxt
    alone (initialized weights) or a zoo name.
    """
    from converters.caffe import summarize

    show_warnings()
    loaded = convert_model(model, output, prototxt=prototxt, input_shape=input_shape)
    rows = summarize(loaded.net)
    params = sum(r.params for r in rows)
    if as_json:
        echo_json({"schema": "compress.convert/1", "output": output, "net": loaded.net.name,
                   "layers": len(rows), "parameters": params})
        return
    click.echo(f"Wrote {output}: {loaded.net.name}, {len(rows)} layers, {params:,} parameters", err=True)
