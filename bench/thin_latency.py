"""Channel thinning speed: LeNet and AlexNet with 50% of the filters of every conv layer zeroed,
thinned vs dense (zeros kept), both as dense ONNX in onnxruntime. Reports the measured speed-up
against the MAC reduction (goal: speed-up >= 0.7x of the MAC ratio). Runs are interleaved (dense,
thinned, dense, ...) and medians compared, so load from other processes hits both alike.

Which filters are zeroed follows what thinning can remove exactly (see compress/thin.py): in AlexNet,
conv1 and conv2 feed across-channel LRNs, so their zero filters are the two end quarters (a kept block
in the middle keeps every LRN window); conv3-conv5 lose random filters, the same number per group of
the grouped convolutions that follow or contain them. Zeroed filters of conv1-conv4 get zero biases
too: a constant (bias) channel feeding an LRN or a zero-padded convolution cannot be removed exactly.
conv5's (-> pool5 -> fc6) and LeNet's (-> unpadded conv / fc) keep their biases: folded downstream.

    .venv/bin/python bench/thin_latency.py [--repeats 15] [--threads 1] [--alexnet-batch 8]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def zero_filters(net, name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    layers = [n.name for n in net.nodes if isinstance(net.layer(n.name), nn.Conv2d)]
    with torch.no_grad():
        for p in net.parameters():  # random weights and biases (sizes/latency do not depend on training)
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        for layer in layers:
            m = net.layer(layer)
            n = m.out_channels
            if name == "alexnet" and layer in ("conv1", "conv2"):
                gone = list(range(n // 4)) + list(range(n - n // 4, n))
            else:
                halves = 2 if name == "alexnet" else 1
                per = n // halves
                gone = [h * per + int(i) for h in range(halves)
                        for i in torch.randperm(per, generator=gen)[:per // 2]]
            m.weight[gone] = 0
            if name == "alexnet" and layer != "conv5":
                m.bias[gone] = 0


def macs(net) -> int:
    total = 0

    def hook(m, _args, y):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += y[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += m.in_features * m.out_features

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net(*[torch.zeros((1, *tuple(s)[1:])) for s in net.inputs.values()])
    for h in hooks:
        h.remove()
    return total


def latency(paths: list[str], x: np.ndarray, name: str, repeats: int, threads: int) -> list[float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sessions = [ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"]) for p in paths]
    outs = [s.run(None, {name: x})[0] for s in sessions]  # warm-up, and the outputs to compare
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(repeats):
        for s, t in zip(sessions, times, strict=True):
            t0 = time.perf_counter()
            s.run(None, {name: x})
            t.append(time.perf_counter() - t0)
    err = float(np.abs(outs[1] - outs[0]).max() / np.abs(outs[0]).max())
    return [statistics.median(t) for t in times] + [err]


def measure(name: str, batch: int, tmp: Path, repeats: int, threads: int) -> dict:
    from compress.modelfile import load_model
    from compress.thin import thin
    from converters.onnx.export import export_onnx

    net = load_model(name).net
    zero_filters(net, name)
    t0 = time.perf_counter()
    result = thin(net)
    t_thin = time.perf_counter() - t0
    paths = []
    for tag, model in (("dense", net), ("thin", result.net)):
        paths.append(export_onnx(model, tmp / f"{name}_{tag}.onnx", sparse=False).path)
    (inp, shape), = net.inputs.items()
    x = np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)
    t_dense, t_thin_run, err = latency(paths, x, inp, repeats, threads)
    return dict(model=name, batch=batch, macs=(macs(net), macs(result.net)), t=(t_dense, t_thin_run),
                err=err, removed=result.removed, skipped=result.skipped, t_thin=t_thin,
                size=tuple(Path(p).stat().st_size for p in paths))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--alexnet-batch", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, batch in (("lenet", 64), ("alexnet", args.alexnet_batch)):
            rows.append(measure(name, batch, Path(d), args.repeats, args.threads))
    print(f"onnxruntime CPU, {args.threads} thread(s), median of {args.repeats} interleaved runs")
    print("| model | batch | MACs dense | MACs thinned | MAC ratio | dense ms | thinned ms | speed-up "
          "| speed-up / MAC ratio | ONNX MB dense -> thin | rel. err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        (m0, m1), (t0, t1) = r["macs"], r["t"]
        eff = (t0 / t1) / (m0 / m1)
        print(f"| {r['model']} | {r['batch']} | {m0 / 1e6:.1f}M | {m1 / 1e6:.1f}M | {m0 / m1:.2f}x "
              f"| {t0 * 1e3:.2f} | {t1 * 1e3:.2f} | {t0 / t1:.2f}x | {eff:.2f} "
              f"| {r['size'][0] / 1e6:.1f} -> {r['size'][1] / 1e6:.1f} | {r['err']:.1e} |")
    for r in rows:
        eff = (r["t"][0] / r["t"][1]) / (r["macs"][0] / r["macs"][1])
        layers = ", ".join(f"{k} {a}->{b}" for k, (a, b) in r["removed"].items())
        print(f"{r['model']}: thinned {layers} in {r['t_thin']:.1f} s; refused: {r['skipped'] or 'none'}; "
              f"goal speed-up >= 0.7x MAC ratio: {'met' if eff >= 0.7 else 'NOT met'}")


if __name__ == "__main__":
    main()
