"""Moved: the training loop is :mod:`compress.train.trainer` (issue 21: the engine under pruning,
quantization and the Caffe solver). This name stays for scripts written against the README's Python API
before the move (``from compress.prune.trainer import TrainConfig``); nothing in the package imports it."""
from __future__ import annotations

from compress.train.trainer import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
