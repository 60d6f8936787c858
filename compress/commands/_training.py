"""The training flags shared by every command that fine-tunes (``prune``, ``quantize``), declared once,
and the :class:`~compress.train.trainer.TrainConfig` they fill."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

_OPTIONS = [
    click.option("--data", metavar="SPEC",
                 help="Training/test data: mnist, synthetic, a directory of MNIST idx files or an image "
                      "folder [the dataset the model was pruned on; mnist for 1x28x28 nets]"),
    click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, metavar="N",
                 help="Training batch size"),
    click.option("--limit", type=click.IntRange(min=1), metavar="N",
                 help="Use the first N samples of each data split (smoke runs; accuracy is then on N "
                      "test images and says so)"),
    click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True,
                 metavar="X", help="Base learning rate"),
    click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default="cosine",
                 show_default=True, help="Rate within each cycle (an ADMM iteration, the retrain)"),
    click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True,
                 help="SGD with momentum as Caffe's solver; Adam as the ADMM authors' LeNet"),
    click.option("--momentum", type=click.FloatRange(min=0), default=0.9, show_default=True, metavar="X",
                 help="SGD momentum"),
    click.option("--weight-decay", type=click.FloatRange(min=0), default=5e-4, show_default=True,
                 metavar="X", help="L2 weight decay"),
    click.option("--retrain-epochs", type=click.IntRange(min=0), metavar="N",
                 help="Masked retrain epochs after the hard prune [admm: 45; other methods with targets: "
                      "10; without targets: 0]"),
    click.option("--retrain-lr", type=click.FloatRange(min=0, min_open=True), metavar="X",
                 help="Retrain learning rate [--lr]"),
    click.option("--retrain-weight-decay", type=click.FloatRange(min=0), metavar="X",
                 help="Retrain weight decay [admm: 1e-4; other methods: --weight-decay; "
                      "--solver: the solver's]"),
    click.option("--distill", type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="ALPHA",
                 help="Knowledge distillation from the model as loaded: loss = (1-ALPHA) CE + ALPHA T^2 KL"),
    click.option("--distill-temperature", type=click.FloatRange(min=0, min_open=True), default=4.0,
                 show_default=True, metavar="T", help="Softmax temperature of --distill"),
    click.option("--augment", multiple=True, type=click.Choice(["shift", "mirror", "none"]),
                 help="Augment training batches (repeatable): shift = random +-2 px translation, mirror = "
                      "random left-right flip (Caffe's mirror: true), none = off [mnist and idx data: "
                      "shift; others: none]"),
    click.option("--bn-recalibrate", type=click.IntRange(min=0), default=100, show_default=True, metavar="N",
                 help="Re-estimate BatchNorm statistics over N training batches before every test and at "
                      "the end (fine-tuning outruns the moving averages); 0: keep the moving averages. "
                      "Nets without BatchNorm: no effect"),
    click.option("--seed", type=int, default=0, show_default=True, metavar="N",
                 help="Seed of data order, augmentation and dropout"),
    click.option("--device", default="auto", show_default=True, metavar="DEVICE",
                 help="Device: auto, cpu, cuda or cuda:N"),
    click.option("--amp", is_flag=True, help="Mixed precision (fp16 + GradScaler on CUDA, bf16 on CPU)"),
    click.option("--max-steps", type=click.IntRange(min=1), metavar="N",
                 help="At most N steps per epoch, and N test batches per evaluation (smoke runs; the run "
                      "keeps all its epochs)"),
    click.option("--resume", type=click.Path(), metavar="CKPT",
                 help="Continue the run that wrote CKPT (<output>.ckpt); every setting must match"),
    click.option("--checkpoint-every", type=click.FloatRange(min=0), default=60.0, show_default=True,
                 metavar="SECONDS", help="Write <output>.ckpt after an epoch when this long has passed "
                                         "since the last one (0: every epoch); always after the last"),
    click.option("--keep-checkpoint", is_flag=True,
                 help="Keep <output>.ckpt after a successful run (otherwise it is removed)"),
    click.option("--no-checkpoint", is_flag=True, help="Write no checkpoint (the run cannot be resumed)"),
    click.option("--log", "log", type=click.Path(), metavar="FILE",
                 help="Metrics, one JSON line per epoch [<output>.log.jsonl]"),
    click.option("--quiet", is_flag=True, help="No progress output"),
]

NAMES = ("data", "batch_size", "limit", "lr", "lr_schedule", "optimizer", "momentum", "weight_decay",
         "retrain_epochs", "retrain_lr", "retrain_weight_decay", "distill", "distill_temperature", "augment",
         "bn_recalibrate", "seed", "device", "amp", "max_steps", "resume", "checkpoint_every",
         "keep_checkpoint", "no_checkpoint", "log", "quiet")


def training_options(fn: Callable | None = None, *, without: tuple[str, ...] = ()) -> Callable:
    """Add the training flags to a command (``@training_options``), or all but those named in
    ``without`` (``@training_options(without=("retrain_epochs",))``: flags a command has no use for)."""
    unknown = set(without) - set(NAMES)
    if unknown:
        raise ValueError(f"no training flag named {', '.join(sorted(unknown))}")

    def deco(f: Callable) -> Callable:
        for name, option in reversed(list(zip(NAMES, _OPTIONS, strict=True))):
            if name not in without:
                f = option(f)
        return f

    return deco(fn) if fn is not None else deco


def pop_training(options: dict[str, Any]) -> dict[str, Any]:
    """Remove the training flags from a command's keyword arguments and return them (None for a flag
    the command left out)."""
    return {name: options.pop(name, None) for name in NAMES}


def augment_names(names: tuple[str, ...]) -> tuple[str, ...] | None:
    """``--augment``: none given -> the data's default (None); ``none`` -> off."""
    if not names:
        return None
    if "none" in names:
        if len(names) > 1:
            raise click.BadParameter("'none' cannot be combined with other augmentations",
                                     param_hint="'--augment'")
        return ()
    return names


# Flags that do not define a run: a bare ``--resume`` never takes them from the checkpoint.
PER_INVOCATION = ("resume", "quiet")
# Flags that say one thing together: one of them given, none of the others comes from the checkpoint.
TOGETHER = (frozenset({"targets", "keep", "pcen"}),)


def resume_defaults(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """With ``--resume CKPT``: every flag not given on this command line takes the value the run was
    started with (recorded in the checkpoint), so ``compress prune --resume X.ckpt`` alone continues it;
    flags given here stay, and the checkpoint's own check then refuses the ones that change the run."""
    import os

    if not params.get("resume") or not os.path.isfile(params["resume"]):
        return params  # a missing checkpoint is refused where the run would read it
    from compress.train.checkpoint import read_command

    stored = read_command(params["resume"])
    if stored is None:
        return params
    given = {k for k in params if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    if stored.get("cwd") and os.path.realpath(stored["cwd"]) != os.path.realpath(os.getcwd()) \
            and not {"model", "solver"} & given:
        raise click.UsageError(f"{params['resume']} was written by a run started in {stored['cwd']}; resume "
                               "from that directory (its paths are relative to it), or give MODEL and its "
                               "flags")
    out = dict(params)
    held = {name for group in TOGETHER if group & given for name in group}
    for name, value in (stored.get("params") or {}).items():
        if name in out and name not in given | held and name not in PER_INVOCATION:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def command_record(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint keeps of the command that started the run (see :func:`resume_defaults`): its
    name, the working directory and every parameter as plain JSON data; and the command that resumes."""
    import json
    import os

    name = ctx.command.name
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if k not in PER_INVOCATION}
    return {"name": name, "cwd": os.getcwd(), "params": json.loads(json.dumps(plain, default=str)),
            "resume": f"compress {name} --resume {{checkpoint}}"}


def train_config(t: dict[str, Any], command: dict[str, Any] | None = None):
    """The TrainConfig of the training flags ``t`` (from :func:`pop_training`); ``command``: the
    :func:`command_record` a checkpoint keeps."""
    from compress.train.distill import Distill
    from compress.train.trainer import TrainConfig

    return TrainConfig(lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"],
                       retrain_epochs=t["retrain_epochs"], retrain_lr=t["retrain_lr"],
                       retrain_weight_decay=t["retrain_weight_decay"], lr_schedule=t["lr_schedule"],
                       optimizer=t["optimizer"], seed=t["seed"], max_steps=t["max_steps"], amp=t["amp"],
                       distill=Distill(t["distill"], t["distill_temperature"]),
                       augment=augment_names(t["augment"]), bn_recalibrate=t["bn_recalibrate"],
                       checkpoint_every=t["checkpoint_every"],
                       log=t["log"], progress=not t["quiet"], command=command or {})
