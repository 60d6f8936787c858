"""``compress prune MODEL --method admm|rvsm|rgsm|default|magnitude``: parse, call
:func:`compress.prune.api.prune`, print a per-layer summary.

The method flags (``--rho``, ``--beta``, ``--lamb1``...) are made from each method's ``params``
declaration (:mod:`compress.params`); a flag that the chosen method does not read is an error."""
from __future__ import annotations

import click

from compress.commands._training import pop_training, train_config, training_options
from compress.params import click_options, refuse_foreign
from compress.prune.methods import available, method_class

METHOD_PARAMS = {name: method_class(name).params for name in available()}


@click.command("prune")
@click.argument("model")
@click.option("--method", type=click.Choice(available()), default="admm", show_default=True,
              help="Pruning method (each reads only its own flags below)")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel that matches no zoo net")
@click.option("-o", "--output", metavar="FILE", help="Pruned model file [<model>_<method>.pt]")
# targets
@click.option("--targets", metavar="SPEC",
              help="Keep ratios: FILE.yaml, FILE.json or a preset (admm-71x, admm-21x, han-12x, han-9x)")
@click.option("--keep", multiple=True, metavar="LAYER=RATIO", help="Keep ratio of one layer (repeatable)")
@click.option("--pcen", type=float, metavar="PERCENT",
              help="Percent of weights to prune in every layer [admm, magnitude: 80]")
@click.option("--sparsity", type=click.Choice(["elem", "channel"]),
              help="Prune elements or channel groups [elem; rgsm: channel]")
@click.option("--group", type=click.Choice(["in", "out"]), default="in", show_default=True,
              help="Channel group: input channel W[:, c] or output filter W[o]")
@click_options(METHOD_PARAMS)
@training_options
def command(model, method, prototxt, output, targets, keep, pcen, sparsity, group, **options):
    """Fine-tune under ADMM/RVSM/RGSM/SGD, hard-prune to targets, retrain with masks.

    MODEL is a zoo name (lenet, alexnet), a model file, or a .caffemodel. Each method reads only its
    own flags (listed with its default in brackets); giving another method's flag is an error.

    \b
    compress prune lenet --method admm --targets admm-71x --data mnist -o lenet_admm.pt
    compress prune lenet --method rgsm --lamb1 5e-3 --lamb2 2e-5 -o lenet_rgsm.pt
    compress prune alexnet --targets admm-21x --data synthetic --max-steps 2 --admm-iters 1 --retrain-epochs 1
    """
    from pathlib import Path

    from compress.prune.api import DataSpec, PruneConfig, TargetSpec, prune

    t = pop_training(options)
    refuse_foreign(METHOD_PARAMS, method, options)
    cfg = PruneConfig(method=method, hyper=options,
                      targets=TargetSpec(targets, tuple(keep), pcen, sparsity, group),
                      data=DataSpec(t["data"], t["batch_size"], t["limit"]), train=train_config(t),
                      device=t["device"], prototxt=prototxt,
                      output=output or f"{Path(model).stem}_{method}.pt", resume=t["resume"],
                      keep_checkpoint=t["keep_checkpoint"], checkpoints=not t["no_checkpoint"])
    result = prune(model, cfg)
    if result.is_main:
        click.echo(render(result))


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
    meaningless = any("means nothing" in n for n in result.notes)
    acc = ("accuracy n/a" if meaningless
           else f"accuracy {pct(result.accuracy_before)} -> {pct(result.accuracy_after)}")
    notes = f" ({'; '.join(result.notes)})" if result.notes else ""
    rows.append(acc + notes + (f"; saved {result.output}" if result.output else ""))
    return "\n".join(rows)
