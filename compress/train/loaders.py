"""The training flags' front door: the net and its data for a run that a method fine-tunes.

:class:`LoaderFront` loads a model (zoo name, model file, ``.caffemodel`` or an ``nn.Module``), and the data
(:func:`compress.data.get_data`: the ``--data`` spec, else the dataset the model records, else MNIST for a
1x28x28 net) preprocessed as the model records; it measures top-1 before training and says what the numbers
mean (synthetic labels, a limited test set). ``compress prune`` (without ``--solver``) and ``compress
quantize`` train through it; the loop (:mod:`compress.train.trainer`) then runs with the tool's epochs,
cosine/constant rates and SGD/Adam. A Caffe solver is the other front door (``compress.prune.fronts.
SolverFront``, ``compress.solver``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compress.data.synthetic import MEANINGLESS
from compress.errors import CompressError
from compress.logits import Logits
from compress.train.task import evaluate


@dataclass(frozen=True)
class DataSpec:
    """Where the training and test batches come from (``compress.data.get_data``)."""

    spec: str | None = None  # None: the model's recorded dataset, else mnist where the net fits it
    batch_size: int = 64
    limit: int | None = None  # the first N samples of each split (smoke runs)


def load_net(model: str | nn.Module, prototxt: str | None) -> tuple[nn.Module, dict, str]:
    if isinstance(model, nn.Module):
        return model, {}, getattr(model, "name", type(model).__name__)
    from compress.modelfile import load_model

    loaded = load_model(model, prototxt)
    return loaded.net, dict(loaded.meta or {}), str(model)


def default_data(net: nn.Module, meta: dict, name: str) -> str:
    """No ``--data``: the dataset the model was pruned on, else MNIST where the net takes 1x28x28."""
    if isinstance(meta.get("dataset"), str) and meta["dataset"]:
        return meta["dataset"]
    inputs = getattr(net, "inputs", None) or {}
    shape = tuple(next(iter(inputs.values())))[1:] if inputs else None
    if shape == (1, 28, 28):
        return "mnist"
    classes = _classes(net)
    need = "x".join(map(str, shape)) if shape else "unknown-shape"
    raise CompressError(f"{name} takes {need} inputs{f' and has {classes} classes' if classes else ''}: "
                        "pass its data with --data DIR (an image folder with one subfolder per class, "
                        "or MNIST idx files), --data synthetic for a smoke run, or --solver SOLVER.prototxt")


def _classes(net: nn.Module) -> int | None:
    last = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None


def load_splits(spec: str, net: nn.Module, data: DataSpec, seed: int, distributed: bool,
                preprocess: dict | None = None):
    """The data's loaders for ``net``, preprocessed as the model records (``meta["preprocess"]``: what its
    weights expect), else as the source does by default."""
    from compress.data import get_data

    inputs = getattr(net, "inputs", None)
    if not inputs:
        raise CompressError("the model declares no input shape; cannot build its data loaders")
    shape = tuple(next(iter(inputs.values())))
    return get_data(spec, shape, batch_size=data.batch_size, seed=seed, num_classes=_classes(net),
                    limit=data.limit, distributed=distributed, preprocess=preprocess)


class LoaderFront:
    def __init__(self, model, cfg, dev: torch.device, dist) -> None:
        self.net, self.meta, self.name = load_net(model, cfg.prototxt)
        self.dataset = cfg.data.spec or default_data(self.net, self.meta, self.name)
        self.splits = load_splits(self.dataset, self.net, cfg.data, cfg.train.seed, dist.enabled,
                                  preprocess=self.meta.get("preprocess"))
        self.cfg, self.dev = cfg, dev

    def augment(self, given: tuple[str, ...] | None) -> tuple[str, ...]:
        return tuple(self.splits.meta.get("augment", ())) if given is None else tuple(given)

    def retrain_default(self, cls, targets) -> int:
        return cls.default_retrain_epochs if targets is not None else 0

    def retrain_weight_decay(self, cls, given: float | None) -> float | None:
        return cls.default_retrain_weight_decay if given is None else given

    def hyperparameters(self, tc) -> dict[str, Any]:
        return {"lr": tc.lr, "momentum": tc.momentum, "weight_decay": tc.weight_decay,
                "batch_size": self.cfg.data.batch_size, "retrain_lr": tc.retrain_lr,
                "retrain_weight_decay": tc.retrain_weight_decay, "lr_schedule": tc.lr_schedule,
                "optimizer": tc.optimizer, "bn_recalibrate": tc.bn_recalibrate}

    def before(self, tc) -> float | None:
        self.net.to(self.dev)
        return evaluate(Logits(self.net), self.splits.test, self.dev, tc.amp, tc.max_steps)

    def recalibrate(self, net: nn.Module, tc) -> int:
        """Re-estimate ``net``'s BatchNorm statistics on the training data (:mod:`compress.train.
        batchnorm`) as the trainer does before every test; the batches used (0: no BatchNorm, or
        ``--bn-recalibrate 0``)."""
        from compress.train.batchnorm import recalibrate

        net.to(self.dev)
        return recalibrate(Logits(net), self.train_split(), self.dev, tc.calibration_batches)

    def train_split(self):
        """The training loader; a source that holds only a test split (a Caffe LMDB folder) is refused."""
        if self.splits.meta.get("single_split") == "test":
            raise CompressError(f"{self.dataset} holds one split, read as the test set; to train, give the "
                                "solver whose data layers read the training LMDB (--solver SOLVER.prototxt), "
                                "or a folder with train and test splits")
        return self.splits.train

    def train_kwargs(self, method, tc) -> dict[str, Any]:
        return {"train_data": self.train_split(), "test_data": self.splits.test}

    def describe(self) -> str:
        sizes = self.splits.meta.get("sizes", {})
        return f"{self.dataset} ({sizes.get('train', '?')} train / {sizes.get('test', '?')} test images)"

    def notes(self) -> tuple[str, ...]:
        notes = []
        if self.splits.meta.get("source") == "synthetic":
            notes.append(MEANINGLESS)
        test, steps = self.splits.meta["sizes"]["test"], self.cfg.train.max_steps
        whole = self.splits.meta.get("sizes_whole", {}).get("test", test)
        capped = steps is not None and steps * self.cfg.data.batch_size < test
        flags = [f for f, on in (("--limit", test < whole), ("--max-steps", capped)) if on]
        if flags:
            seen = min(test, steps * self.cfg.data.batch_size) if capped else test
            notes.append(f"accuracy on the first {seen} test images only ({', '.join(flags)})")
        return tuple(notes)

    def meta_extra(self) -> dict[str, Any]:
        pre = self.splits.meta.get("preprocess")
        return {"preprocess": pre} if pre and "preprocess" not in self.meta else {}

    def save_extra(self, output: str, net: nn.Module) -> list[str]:
        return []
