"""PTQ time over every layer, and the per-step cost of QGT and ADMM quantization against plain training,
side by side in one run (goal: at most 1.25x a plain step).

The net is AlexNet (or LeNet) at full size, pruned to the ADMM paper's ratios (random weights,
magnitude-pruned: ``export_size.pruned``; timing does not depend on training). PTQ is timed as the
``ptq`` method runs it (fit every layer's grid, round every weight onto it), with MSE and max-abs
scales. A training step is what the trainer does: forward, cross-entropy, backward, the method's
``before_step`` (the QGT pull ``lambda (W - Q(W))`` on every quantized weight at full lambda, or ADMM's
``rho (W - Z + U)``; then the masks that keep the pruned zeros zero on the gradients), the SGD step with
momentum and weight decay, ``after_step`` (the masks on the weights). "plain" is the same step without
the method hooks (and without masks). ADMM's Z-step (a projection with re-fitted scales, once per
epoch-long iteration) is timed on its own. Rounds alternate between the variants so machine load hits
all of them alike; the median per step is reported:

    .venv/bin/python bench/quant_overhead.py [--net alexnet|lenet] [--steps 5] [--batch 32] [--bits 4]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from export_size import pruned  # the sibling benchmark (bench/ is on sys.path when run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", choices=("alexnet", "lenet"), default="alexnet")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from compress.layers import prunable_layers
    from compress.logits import Logits
    from compress.quant.config import GridConfig
    from compress.quant.methods import method_class

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    net = pruned(args.net).train()
    layers = prunable_layers(net)
    weights = sum(layer.weight.numel() for layer in layers.values())
    kept = sum(int(layer.weight.count_nonzero()) for layer in layers.values())
    print(f"{args.net}: {weights:,} weights in {len(layers)} layers, {kept:,} kept; {args.bits}-bit "
          f"per-channel grids; {args.threads} threads")

    ptq = {}
    for scale in ("mse", "max"):
        work = pruned(args.net)
        m = method_class("ptq")(prunable_layers(work), GridConfig(args.bits, scale=scale))
        t0 = time.perf_counter()
        m.init(work)
        t_fit = time.perf_counter() - t0
        m.finalize(work)
        ptq[scale] = (t_fit, time.perf_counter() - t0)
    print("| PTQ, all layers | fit grids (s) | fit + round (s) |")
    print("| --- | ---: | ---: |")
    for scale, (fit, total) in ptq.items():
        print(f"| {scale} scales | {fit:.2f} | {total:.2f} |")

    grid = GridConfig(args.bits)
    qgt = method_class("qgt")(layers, grid, qgt_ramp=0.0)  # lambda at its maximum from the first step
    admm = method_class("admm")(layers, grid)
    qgt.init(net)
    t0 = time.perf_counter()
    admm.init(net)
    admm.end_iteration(net, 0)
    z_step = (time.perf_counter() - t0) / 2  # init projects once, the iteration end once more

    model = Logits(net)
    shape = tuple(next(iter(net.inputs.values())))[1:]
    x = torch.rand(args.batch, *shape) * 255
    y = torch.randint(0, 10, (args.batch,))
    opt = torch.optim.SGD(net.parameters(), lr=1e-6, momentum=0.9, weight_decay=5e-4)

    def step(method) -> float:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        if method is not None:
            method.before_step(net)
        opt.step()
        if method is not None:
            method.after_step(net)
        return time.perf_counter() - t

    variants = {"plain": None, "qgt": qgt, "admm": admm}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for m in variants.values():  # warm-up
        step(m)
    for _ in range(args.steps):
        for name, m in variants.items():
            times[name].append(step(m))
    plain = statistics.median(times["plain"])
    print(f"\n| step (batch {args.batch}) | s per step (median of {args.steps}) | vs plain |")
    print("| --- | ---: | ---: |")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {med / plain:.3f}x |")
    print(f"\nADMM Z-step (projection with re-fitted MSE scales, all layers, once per ADMM iteration): "
          f"{z_step:.2f} s")


if __name__ == "__main__":
    main()
