"""One Caffe solver update (``compress.solver.CaffeSolver``) against ``torch.optim.SGD``'s foreach step on
the same tensors, side by side in one run.

    python bench/solver_step.py [--rounds 5] [--steps 10] [--threads 1]

LeNet's 8 blobs (431k weights) in two groups (weights lr_mult 1, biases 2; SGD, momentum 0.9, weight decay
5e-4, ``inv`` policy): both updates are memory-bound, so Caffe's rules should cost about what torch's
step costs. The two alternate ``--rounds`` times so that load from other processes hits both alike; the
best time per step of each and their ratio are printed. Goal: ratio <= 1.5. (This was a timed test until
it failed under load; a ratio belongs in a bench.)
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from compress.solver import CaffeSolver, Learnable, SolverConfig

SHAPES = [(20, 1, 5, 5), (20,), (50, 20, 5, 5), (50,), (500, 800), (500,), (10, 500), (10,)]


def optimizers() -> tuple[CaffeSolver, torch.optim.SGD]:
    params = [torch.randn(s, requires_grad=True) for s in SHAPES]
    for p in params:
        p.grad = torch.randn_like(p)
    cfg = SolverConfig(base_lr=0.01, lr_policy="inv", gamma=1e-4, power=0.75, momentum=0.9,
                       weight_decay=5e-4, max_iter=10**9)
    ours = CaffeSolver([Learnable(p, 1 + (i % 2), 1) for i, p in enumerate(params)], cfg)
    theirs = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4, foreach=True)
    return ours, theirs


def per_step(opt, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ours, theirs = optimizers()
    best = {"caffe": math.inf, "torch": math.inf}
    for opt in (ours, theirs):  # warm-up
        per_step(opt, 3)
    for _ in range(a.rounds):
        best["caffe"] = min(best["caffe"], per_step(ours, a.steps))
        best["torch"] = min(best["torch"], per_step(theirs, a.steps))
    print(f"LeNet blobs, {a.threads} thread(s), best of {a.rounds} rounds of {a.steps} steps")
    print(f"CaffeSolver {best['caffe'] * 1e3:.3f} ms/step, "
          f"torch SGD foreach {best['torch'] * 1e3:.3f} ms/step, "
          f"ratio {best['caffe'] / best['torch']:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
