"""``compress prune MODEL --method admm|rvsm|rgsm|default|magnitude``: parse, call
:func:`compress.prune.api.prune`, print a per-layer summary."""
from __future__ import annotations

import click

METHODS = ("admm", "rvsm", "rgsm", "default", "magnitude")


@click.command("prune")
@click.argument("model")
@click.option("--method", type=click.Choice(METHODS), default="admm", show_default=True)
@click.option("--prototxt", help="Net definition for a .caffemodel that matches no zoo net.")
@click.option("--data", default="mnist", show_default=True, help="mnist, synthetic, or a directory.")
@click.option("-o", "--output", help="Pruned model file (default: <model>_<method>.pt).")
# targets
@click.option("--targets", help="Keep ratios: FILE.yaml, FILE.json or a preset (admm-71x, admm-21x...).")
@click.option("--keep", multiple=True, metavar="LAYER=RATIO", help="Keep ratio of one layer (repeatable).")
@click.option("--pcen", type=float, help="Percent of weights to prune in every layer (admm/magnitude: 80).")
@click.option("--sparsity", type=click.Choice(["elem", "channel"]),
              help="Prune elements or channel groups (default: elem; rgsm: channel).")
@click.option("--group", type=click.Choice(["in", "out"]), default="in", show_default=True,
              help="Channel group: input channel W[:, c] or output filter W[o].")
# admm
@click.option("--rho", type=float, help="ADMM penalty per layer [1e-3].")
@click.option("--rho-growth", type=float, help="rho multiplier per ADMM iteration [1.3].")
@click.option("--admm-iters", type=int, help="ADMM iterations [15].")
@click.option("--epochs-per-iter", type=int, help="Epochs per ADMM iteration [1].")
# rvsm / rgsm / default
@click.option("--epochs", type=int, help="Method-phase epochs for default/rvsm/rgsm [1/10/10].")
@click.option("--beta", type=float, help="RVSM relaxation [1e-2].")
@click.option("--lamb", type=float, help="RVSM penalty weight [1e-6].")
@click.option("--penalty", type=click.Choice(["l0", "l1", "tl1"]), help="RVSM/RGSM penalty [l0].")
@click.option("--tl1-a", type=float, help="Transformed-l1 parameter a [1].")
@click.option("--beta1", type=float, help="RGSM relaxation [1].")
@click.option("--lamb1", type=float, help="RGSM group-l0 weight [1e-2].")
@click.option("--lamb2", type=float, help="RGSM group-lasso weight [1e-5].")
# training
@click.option("--retrain-epochs", type=click.IntRange(min=0),
              help="Masked retrain epochs [admm: 45; with targets: 10; without: 0].")
@click.option("--retrain-lr", type=float, help="Retrain learning rate [--lr].")
@click.option("--retrain-weight-decay", type=click.FloatRange(min=0),
              help="Retrain weight decay [--weight-decay].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True)
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True,
              help="W-step optimizer (SGD with momentum as Caffe's solver; Adam as the ADMM authors' LeNet).")
@click.option("--distill", type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="ALPHA",
              help="Knowledge distillation from the model as loaded: loss = (1-ALPHA) CE + ALPHA T^2 KL.")
@click.option("--distill-temperature", type=click.FloatRange(min=0, min_open=True), default=4.0,
              show_default=True, metavar="T", help="Softmax temperature of --distill.")
@click.option("--augment", multiple=True, type=click.Choice(["shift", "mirror", "none"]),
              help="Augment training batches (repeatable): shift = random +-2 px translation, "
                   "mirror = random left-right flip (Caffe's mirror: true), none = off "
                   "[mnist and idx data: shift; others: none].")
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=5e-4, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", is_flag=True, help="Mixed precision (fp16 + GradScaler on CUDA, bf16 on CPU).")
@click.option("--max-steps", type=click.IntRange(min=1),
              help="Steps per epoch (smoke runs; caps evaluation too).")
@click.option("--limit", type=click.IntRange(min=1), help="Use the first N samples of each data split.")
@click.option("--resume", type=click.Path(), help="Checkpoint to continue from (<output>.ckpt).")
@click.option("--log", "log", type=click.Path(), help="Metrics, JSON lines [<output>.log.jsonl].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(model, method, prototxt, data, output, targets, keep, pcen, sparsity, group, rho, rho_growth,
            admm_iters, epochs_per_iter, epochs, beta, lamb, penalty, tl1_a, beta1, lamb1, lamb2,
            retrain_epochs, retrain_lr, retrain_weight_decay, lr, lr_schedule, optimizer, distill,
            distill_temperature, augment, momentum, weight_decay, batch_size, seed, device, amp, max_steps,
            limit, resume, log, quiet):
    """Fine-tune MODEL under a pruning METHOD, hard-prune it to its targets, retrain with masks.

    MODEL is a zoo name (lenet, alexnet), a model file, or a .caffemodel.

    \b
    compress prune lenet --method admm --targets admm-71x --data mnist -o lenet_admm.pt
    compress prune lenet --method rgsm --lamb1 5e-3 --lamb2 2e-5 -o lenet_rgsm.pt
    compress prune alexnet --targets admm-21x --data synthetic --max-steps 2 --admm-iters 1 --retrain-epochs 1
    """
    from pathlib import Path

    from compress.prune.api import prune

    hyper = {"rho": rho, "rho_growth": rho_growth, "admm_iters": admm_iters,
             "epochs_per_iter": epochs_per_iter, "epochs": epochs, "beta": beta, "lamb": lamb,
             "penalty": penalty, "tl1_a": tl1_a, "beta1": beta1, "lamb1": lamb1, "lamb2": lamb2}
    output = output or f"{Path(model).stem}_{method}.pt"
    result = prune(model, method=method, data=data, output=output, prototxt=prototxt, targets=targets,
                   keep=keep, pcen=pcen, sparsity=sparsity, group=group, hyper=hyper, lr=lr,
                   momentum=momentum,
                   weight_decay=weight_decay, batch_size=batch_size, retrain_epochs=retrain_epochs,
                   retrain_lr=retrain_lr, retrain_weight_decay=retrain_weight_decay, lr_schedule=lr_schedule,
                   optimizer=optimizer, distill=distill, augment=_augment(augment),
                   distill_temperature=distill_temperature, seed=seed,
                   device=device, amp=amp,
                   max_steps=max_steps, resume=resume, log=log, progress=not quiet, data_limit=limit)
    if result.is_main:
        click.echo(render(result))


def _augment(names: tuple[str, ...]) -> tuple[str, ...] | None:
    """``--augment``: none given -> the data's default (None); ``none`` -> off."""
    if not names:
        return None
    if "none" in names:
        if len(names) > 1:
            raise click.BadParameter("'none' cannot be combined with other augmentations",
                                     param_hint="'--augment'")
        return ()
    return names


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
    rows.append(f"accuracy {pct(result.accuracy_before)} -> {pct(result.accuracy_after)}"
                + (f"; saved {result.output}" if result.output else ""))
    return "\n".join(rows)
