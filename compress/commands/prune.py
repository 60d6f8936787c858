"""``compress prune MODEL --method admm|rvsm|rgsm|default|magnitude``: parse, call
:func:`compress.prune.api.prune`, print a per-layer summary.

The method flags (``--rho``, ``--beta``, ``--lamb1``...) are made from each method's ``params``
declaration (:mod:`compress.params`), read from :mod:`compress.prune.method_params` without importing
torch (usage errors and ``--help`` answer at once); a flag that the chosen method does not read is an
error."""
from __future__ import annotations

import click

from compress.commands._common import echo_json, json_option, threads_option
from compress.commands._training import (
    command_record,
    pop_training,
    resume_defaults,
    train_config,
    training_options,
)
from compress.params import click_options, refuse_foreign
from compress.prune.method_params import PARAMS as METHOD_PARAMS

# training flags a solver.prototxt decides instead (refused beside --solver)
SOLVER_DECIDES = ("data", "batch_size", "limit", "lr", "lr_schedule", "optimizer", "momentum", "weight_decay",
                  "retrain_lr", "retrain_weight_decay", "augment", "max_steps", "amp", "bn_recalibrate")


def _presets() -> str:
    """The zoo's presets by model, for the --targets help: ``lenet: admm-150x, admm-71x, han-12x; ...``."""
    import zoo

    return "; ".join(f"{e.name}: {', '.join(e.presets())}" for e in zoo.ZOO.values() if e.presets())


@click.command("prune")
@click.argument("model", required=False)
@click.option("--method", type=click.Choice(list(METHOD_PARAMS)), default="admm", show_default=True,
              help="Pruning method (each reads only its own flags below)")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel that matches no zoo net")
@click.option("-o", "--output", metavar="FILE", help="Pruned model file [<model>_<method>.pt]")
# targets
@click.option("--targets", metavar="SPEC",
              help="Keep ratios: FILE.yaml, FILE.json or a zoo preset (" + _presets() + ")")
@click.option("--keep", multiple=True, metavar="LAYER=RATIO", help="Keep ratio of one layer (repeatable)")
@click.option("--pcen", type=float, metavar="PERCENT",
              help="Percent of weights to prune in every layer [admm, magnitude: 80]")
@click.option("--sparsity", type=click.Choice(["elem", "channel"]),
              help="Prune elements or channel groups [elem; rgsm: channel]")
@click.option("--group", type=click.Choice(["in", "out"]), default="in", show_default=True,
              help="Channel group: input channel W[:, c] or output filter W[o]")
@click.option("--solver", metavar="FILE",
              help="A Caffe solver.prototxt: its train_val net, data layers, optimizer and lr policy drive "
                   "the run, MODEL gives the weights by layer name; one epoch = one run of its schedule")
@click.option("--max-iter", type=click.IntRange(min=1), metavar="N",
              help="With --solver: iterations per epoch instead of the solver's max_iter")
@click_options(METHOD_PARAMS)
@training_options
@threads_option
@json_option
@click.pass_context
def command(ctx, model, method, prototxt, output, targets, keep, pcen, sparsity, group, solver, max_iter,
            as_json, **options):
    """Fine-tune under ADMM/RVSM/RGSM/SGD, hard-prune to targets, retrain with masks.

    MODEL is a zoo name (lenet, alexnet), a model file, or a .caffemodel. Each method reads only its
    own flags (listed with its default in brackets); giving another method's flag is an error.
    `compress prune --resume OUT.pt.ckpt` alone continues an interrupted run with its own settings.

    \b
    compress prune lenet --method admm --targets admm-71x --data mnist -o lenet_admm.pt
    compress prune lenet --method rgsm --lamb1 5e-3 --lamb2 2e-5 -o lenet_rgsm.pt
    compress prune alexnet --targets admm-21x --data synthetic --max-steps 2 --admm-iters 1 --retrain-epochs 1
    compress prune lenet_iter_10000.caffemodel --solver lenet_solver.prototxt --targets admm-71x -o lenet.pt

    With --solver, each ADMM iteration (--admm-iters), each method-phase epoch and each masked-retrain
    epoch (--retrain-epochs, 1 by default) is one run of the solver's schedule: max_iter iterations
    (--max-iter) with its lr policy restarting at base_lr; tests every test_interval; the pruned weights
    are also written as <output>.caffemodel with the deploy <output>.prototxt.
    """
    from pathlib import Path

    params = resume_defaults(ctx, {k: v for k, v in ctx.params.items() if k != "as_json"})
    (model, method, prototxt, output, targets, keep, pcen, sparsity, group, solver, max_iter) = (
        params[k] for k in ("model", "method", "prototxt", "output", "targets", "keep", "pcen", "sparsity",
                            "group", "solver", "max_iter"))
    if model is None:
        raise click.UsageError("Missing argument 'MODEL' (it may be left out with --resume only)")
    options = {k: params[k] for k in options}
    t = pop_training(options)
    refuse_foreign(METHOD_PARAMS, method, options)
    if solver is not None:
        given = [f"--{n.replace('_', '-')}" for n in SOLVER_DECIDES
                 if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{', '.join(given)} cannot be combined with --solver: the solver and "
                                   "its net decide the data, batch size and optimization")
    elif max_iter is not None:
        raise click.UsageError("--max-iter applies with --solver only")
    from compress.prune.api import PruneConfig, TargetSpec, prune  # torch: after the usage checks
    from compress.train.loaders import DataSpec  # torch: after the usage checks

    cfg = PruneConfig(method=method, hyper=options,
                      targets=TargetSpec(targets, tuple(keep), pcen, sparsity, group),
                      data=DataSpec(t["data"], t["batch_size"], t["limit"]),
                      train=train_config(t, command_record(ctx, params)),
                      device=t["device"], prototxt=prototxt,
                      output=output or f"{Path(model).stem}_{method}.pt", resume=t["resume"],
                      keep_checkpoint=t["keep_checkpoint"], checkpoints=not t["no_checkpoint"],
                      solver=solver, max_iter=max_iter)
    result = prune(model, cfg)
    if result.is_main:
        if as_json:
            echo_json(result_dict(result))
        else:
            click.echo(render(result))


def result_dict(result) -> dict:
    """``compress prune --json``: the output, accuracy before/after (None on random labels), every layer."""
    from compress.data.synthetic import meaningless

    ok = not meaningless(result.notes)
    return {"schema": "compress.prune/1", "output": result.output, "method": result.meta.get("method"),
            "accuracy_before": result.accuracy_before if ok else None,
            "accuracy_after": result.accuracy_after if ok else None, "notes": list(result.notes),
            "layers": result.layers, "adjustments": result.meta.get("adjustments", [])}


def render(result) -> str:
    rows = [f"{'layer':<12} {'weights':>10} {'nonzero':>10} {'kept':>8} {'target':>8}"]
    total = nonzero = 0
    for name, s in result.layers.items():
        kept = s["nonzero"] / s["numel"] if s["numel"] else 0.0
        target = "-" if s["target"] is None else f"{s['target']:.2%}"
        rows.append(f"{name:<12} {s['numel']:>10} {s['nonzero']:>10} {kept:>8.2%} {target:>8}")
        total, nonzero = total + s["numel"], nonzero + s["nonzero"]
    ratio = f"{total / nonzero:.1f}x" if nonzero else "inf"
    rows.append(f"{'total':<12} {total:>10} {nonzero:>10} {nonzero / max(total, 1):>8.2%}  ({ratio})")

    def pct(a):
        return "n/a" if a is None else f"{a:.2%}"
    from compress.data.synthetic import meaningless

    acc = ("accuracy n/a" if meaningless(result.notes)
           else f"accuracy {pct(result.accuracy_before)} -> {pct(result.accuracy_after)}")
    notes = f" ({'; '.join(result.notes)})" if result.notes else ""
    rows.append(acc + notes + (f"; saved {result.output}" if result.output else ""))
    return "\n".join(rows)
