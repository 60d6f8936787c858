"""``compress info MODEL``: layers, top shapes and parameter counts, in Caffe's layer names (read without
torch wherever the model allows: :mod:`compress.netinfo`)."""
from __future__ import annotations

import click

from compress.commands._common import echo_json, json_option


def info_rows(model: str, prototxt: str | None = None) -> tuple[object, list[tuple[str, str, str, int]]]:
    """(NetInfo, rows of (layer, type, top shape(s), params)); the net's inputs come first."""
    from compress.netinfo import net_info

    info = net_info(model, prototxt)
    rows = [(name, "Input", _shape(shape), 0) for name, shape in info.inputs.items()]
    for r in info.layers:
        rows.append((r.name, r.type, " ".join(_shape(s) for s in r.top_shapes), r.params))
    return info, rows


def render_table(rows: list[tuple[str, str, str, int]]) -> str:
    header = ("layer", "type", "top shape", "params")
    body = [(a, b, c, f"{d:,}") for a, b, c, d in rows]
    body.append(("total", "", "", f"{sum(r[3] for r in rows):,}"))
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(4)]
    lines = []
    for i, r in enumerate([header, *body]):
        if i == len(body):  # a rule above the total
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(str(v).rjust(w) if j == 3 else str(v).ljust(w)
                               for j, (v, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    return "\n".join(lines) + "\n"


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


@click.command("info")
@click.argument("model", metavar="MODEL")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel MODEL")
@json_option
def command(model: str, prototxt: str | None, as_json: bool) -> None:
    """Show layers, output shapes and parameter counts in Caffe's names.

    MODEL is a zoo name, a model file, a .caffemodel or a .prototxt; each layer's type, top shape(s) at
    the declared input shape, and parameter count (weights + biases).
    """
    from compress.commands.convert import show_warnings

    show_warnings()
    info, rows = info_rows(model, prototxt)
    if as_json:
        echo_json({"schema": "compress.info/1", "name": info.name, "inputs": info.inputs,
                   "outputs": list(info.outputs),
                   "layers": [{"name": n, "type": t, "top_shape": s, "params": p} for n, t, s, p in rows],
                   "params": sum(r[3] for r in rows)})
        return
    inputs = ", ".join(f"{k} {_shape(v)}" for k, v in info.inputs.items())
    click.echo(f"{info.name}: inputs {inputs} -> outputs {', '.join(info.outputs)}")
    click.echo(render_table(rows), nl=False)
