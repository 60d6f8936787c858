"""``compress zoo list``: the models shipped with the tool, their input, size, weights and presets.

Sizes come from the torch-free shape inference (``converters/caffe/shapes/``): listing the zoo imports no
torch and answers in a fraction of a second."""
from __future__ import annotations

from dataclasses import dataclass

import click

from compress.commands._common import echo_json, json_option


@dataclass(frozen=True)
class ZooRow:
    name: str
    description: str
    input_shape: tuple[int, ...]
    params: int
    trained_weights: bool
    presets: tuple[str, ...]
    dataset: str | None = None  # what the shipped weights were trained on (None: no weights, or not said)
    accuracy: float | None = None  # their measured top-1 on that data's test split (None: not measured)


def zoo_rows() -> list[ZooRow]:
    """One row per zoo model; sizes come from the definitions by the torch-free shape inference (no
    weights read)."""
    import zoo
    from converters.caffe.prototxt import read_net_text
    from converters.caffe.shapes.plan import plan_shapes

    rows = []
    for entry in zoo.ZOO.values():
        plan = plan_shapes(read_net_text(entry.prototxt))
        rows.append(ZooRow(entry.name, entry.description, next(iter(plan.inputs.values())),
                           plan.param_count(), entry.has_weights, tuple(entry.presets()), entry.dataset,
                           entry.accuracy))
    return rows


def render_rows(rows: list[ZooRow]) -> str:
    header = ("name", "input", "params", "weights", "dataset", "top-1", "presets", "description")
    body = [(r.name, "x".join(map(str, r.input_shape)), f"{r.params:,}",
             "trained" if r.trained_weights else "none", r.dataset or "-",
             "-" if r.accuracy is None else f"{r.accuracy:.2%}", ", ".join(r.presets) or "-", r.description)
            for r in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in [header, *body])


@click.group("zoo")
def command() -> None:
    """Models shipped with the tool (LeNet, MobileNets, ResNet-20, AlexNet) and their presets.

    Their names work wherever a MODEL is taken.
    """


@command.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List the zoo: name, input, parameters, trained weights, their data and top-1, presets.

    The dataset and top-1 are those of the weights that ship ("-": none ship, or none was measured).
    """
    if as_json:
        from dataclasses import asdict

        echo_json({"schema": "compress.zoo/1", "models": [asdict(r) for r in zoo_rows()]})
        return
    click.echo(render_rows(zoo_rows()), nl=False)
