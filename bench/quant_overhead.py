"""Per-step cost of the quantization training terms against plain SGD, side by side in one run.

LeNet (zoo) on random MNIST-shaped batches: a plain step (forward, cross-entropy, backward, SGD), the same
step plus the QGT regulariser's gradient (``QGTRegularizer.add_grad_``: one grid projection of every
weight), and plus the ADMM-quantization term ``rho (W - Z + U)`` (its Z-step, a projection with a
re-fitted MSE scale, runs once per ADMM iteration; its time is printed separately). Rounds alternate
between the variants so machine load hits all of them alike; the median per step is reported:

    .venv/bin/python bench/quant_overhead.py [--steps 30] [--batch 64] [--bits 4]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--bits", type=int, default=4)
    args = ap.parse_args()

    from compress.modelfile import load_model
    from compress.prune.targets import prunable_layers
    from compress.prune.trainer import Logits
    from compress.quant.admm import admm_quant_step
    from compress.quant.config import QuantConfig
    from compress.quant.ptq import fit_grids
    from compress.quant.regularizer import QGTRegularizer, Ramp

    torch.manual_seed(0)
    torch.set_num_threads(2)
    net = load_model("lenet").net.train()
    model = Logits(net)
    weights = {n: layer.weight for n, layer in prunable_layers(net).items()}
    grids = fit_grids(net, QuantConfig(args.bits, scale="mse"))
    qgt = QGTRegularizer(weights, grids, Ramp(1.0, 0))
    t0 = time.perf_counter()
    zu = {n: admm_quant_step(w, torch.zeros_like(w), args.bits)[:2] for n, w in weights.items()}
    z_step = time.perf_counter() - t0
    rho = 1e-3
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.rand(args.batch, 1, 28, 28) / 256 * 255
    y = torch.randint(0, 10, (args.batch,))

    def step(extra) -> float:
        t = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        extra()
        opt.step()
        return time.perf_counter() - t

    def admm_term() -> None:
        with torch.no_grad():
            for n, w in weights.items():
                z, u = zu[n]
                w.grad.add_(w.detach() - z + u, alpha=rho)

    variants = {"plain": lambda: None, "qgt": lambda: qgt.add_grad_(1), "admm": admm_term}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(3):  # warm-up
        for fn in variants.values():
            step(fn)
    for _ in range(args.steps):
        for name, fn in variants.items():
            times[name].append(step(fn))
    plain = statistics.median(times["plain"])
    print(f"| variant | ms per step (batch {args.batch}) | vs plain |")
    print("| --- | ---: | ---: |")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1e3:.2f} | {med / plain:.3f}x |")
    print(f"ADMM Z-step (projection with re-fitted MSE scales, all layers, once per ADMM iteration): "
          f"{z_step * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
