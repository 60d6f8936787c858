"""Progress of a training run on stderr: a bar per epoch on a terminal, one line per epoch elsewhere.

On a terminal the bar shows the running loss and accuracy and is followed by the epoch's summary line;
off a terminal (CI, ``nohup``, a pipe) bars would only print their end state, so each epoch prints just
the summary line::

    epoch 3/60 admm: loss 0.0412 train 98.91% test 99.02% sparsity 0.859 lr 0.00854 14.2 s

Solver-driven runs also print Caffe's display lines (``Iteration N, loss = L`` ...) every ``display``
iterations (:meth:`Progress.caffe_display`).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, TextIO


def summary_line(label: str, entry: dict[str, Any], accuracy_key: str | None = "accuracy") -> str:
    """The one-line summary of an epoch's log entry (``accuracy_key``: the test output shown as ``test``)."""
    parts = [f"{label}: loss {entry['loss']:.4f}"]
    if entry.get("train_acc") is not None:
        parts.append(f"train {entry['train_acc']:.2%}")
    if entry.get("test_acc") is not None:
        parts.append(f"test {entry['test_acc']:.2%}")
    for name, value in (entry.get("test") or {}).items():
        if name != accuracy_key:
            parts.append(f"test {name} {value:.4g}")
    parts += [f"sparsity {entry['sparsity']:.3f}", f"lr {entry['lr']:.3g}", f"{entry['seconds']:.1f} s"]
    groups = render_groups_removed(entry)
    return " ".join(parts) + (f"; {groups}" if groups else "")


def render_groups_removed(entry: dict[str, Any]) -> str:
    """``groups removed: conv1 0/20, conv2 13/50 (13/70)`` from an epoch's log entry (RGSM's
    ``groups_removed``: {layer: [removed, total]}); "" when absent."""
    removed = entry.get("groups_removed")
    if not removed:
        return ""
    parts = ", ".join(f"{n} {r}/{t}" for n, (r, t) in removed.items())
    r_all, t_all = (sum(v[i] for v in removed.values()) for i in (0, 1))
    return f"groups removed: {parts} ({r_all}/{t_all})"


class Progress:
    """What the trainer tells the user. ``enabled`` False: silent (other ranks, ``--quiet``)."""

    def __init__(self, enabled: bool, stream: TextIO | None = None,
                 accuracy_key: str | None = "accuracy") -> None:
        self.enabled = enabled
        self.accuracy_key = accuracy_key
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def epoch(self, label: str, steps: int | None, sparsity: float):
        """A context whose value has ``update(n, text)``: a bar on a terminal, nothing otherwise."""
        if not (self.enabled and self.tty):
            return contextlib.nullcontext(_NoBar())
        import click

        return click.progressbar(length=steps or 0, label=label, file=self.stream,
                                 item_show_func=lambda s: f"{s} sparsity {sparsity:.3f}" if s else None)

    def epoch_done(self, label: str, entry: dict[str, Any]) -> None:
        if self.enabled:
            self.line(summary_line(label, entry, self.accuracy_key))

    def caffe_display(self, it: int, loss: float, lr: float, outputs: dict[str, float],
                      speed: float = 0.0) -> None:
        """Caffe's display block: ``Iteration N (x iter/s), loss = L``, each train net output,
        ``Iteration N, lr = R``."""
        rate = f" ({speed:.4g} iter/s)" if speed else ""
        self.line(f"Iteration {it}{rate}, loss = {loss:.6g}")
        for i, (name, value) in enumerate(outputs.items()):
            self.line(f"    Train net output #{i}: {name} = {value:.6g}")
        self.line(f"Iteration {it}, lr = {lr:.6g}")

    def caffe_test(self, it: int, outputs: dict[str, float]) -> None:
        self.line(f"Iteration {it}, Testing net (#0)")
        for i, (name, value) in enumerate(outputs.items()):
            self.line(f"    Test net output #{i}: {name} = {value:.6g}")

    def line(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)


class _NoBar:
    def update(self, n: int, item: Any = None) -> None:
        pass
