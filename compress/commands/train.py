"""``compress train SOLVER.prototxt``: ``caffe train --solver S --weights W``, step for step."""
from __future__ import annotations

import click

from compress.commands._common import echo_json, json_option, threads_option


@click.command("train")
@click.argument("solver", metavar="SOLVER")
@click.option("--weights", metavar="FILE", multiple=True,
              help="Caffemodel(s) to start from, copied in by layer name (repeatable) [the solver's weights]")
@click.option("-o", "--output", metavar="FILE",
              help="Write the trained weights as FILE.caffemodel and its deploy FILE.prototxt")
@click.option("--max-iter", type=click.IntRange(min=1), metavar="N",
              help="Iterations to train, replacing the solver's max_iter (also the poly policy's horizon)")
@click.option("--log", metavar="FILE",
              help="JSON lines: {iter, loss, lr} for every iteration and {iter, test} for every test pass")
@click.option("--resume", metavar="STATE",
              help="Continue from a snapshot's <prefix>_iter_N.solverstate.pt (same solver and flags)")
@click.option("--device", default="auto", show_default=True, metavar="DEVICE",
              help="Device: auto, cpu, cuda or cuda:N")
@click.option("--quiet", is_flag=True, help="No display or test lines")
@threads_option
@json_option
def command(solver, weights, output, max_iter, log, resume, device, quiet, as_json):
    """Train a Caffe net from its solver.prototxt exactly as caffe train does.

    Paths inside the solver and the net (net, train_net, test_net, snapshot_prefix, data_param.source,
    mean_file, ImageData source) are relative to the current directory, as in Caffe.

    \b
    compress train lenet_solver.prototxt --weights init.caffemodel -o lenet.caffemodel --log lenet.jsonl
    """
    from compress.solver.train import SolverTrainConfig, train_solver

    cfg = SolverTrainConfig(solver, tuple(weights) if weights else None, output, max_iter, log, resume,
                            device, not quiet)
    result = train_solver(cfg)
    if not result.is_main:
        return
    if as_json:
        echo_json({"schema": "compress.train/1", "iterations": result.iterations, "test": result.test,
                   "files": result.files})
        return
    test = ", ".join(f"{k} = {v:.6g}" for k, v in (result.test or {}).items()) or "no test pass"
    click.echo(f"trained {result.iterations} iterations; {test}")
    for f in result.files:
        click.echo(f"wrote {f}")
