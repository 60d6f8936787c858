"""ONNX file size of pruned LeNet (71x) and AlexNet (the ADMM paper's 4.76% kept): dense vs sparse
initializers vs gzip of the dense file, and the distance from the COO bound (12 bytes per non-zero
weight + 4 per bias). Weights are random, magnitude-pruned to the paper's per-layer ratios; sizes do
not depend on training. One run, side by side:

    .venv/bin/python bench/export_size.py [--only lenet|alexnet]
"""
from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PAPER = {
    "lenet": {"conv1": 0.2, "conv2": 0.08, "ip1": 0.009, "ip2": 0.07},
    "alexnet": {"conv1": 0.81, "conv2": 0.20, "conv3": 0.19, "conv4": 0.20, "conv5": 0.20,
                "fc6": 0.028, "fc7": 0.059, "fc8": 0.093},
}


def pruned(name: str):
    from compress.modelfile import load_model

    net = load_model(name).net
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer, keep in PAPER[name].items():
            w = net.layer(layer).weight
            w.copy_(torch.randn(w.shape, generator=gen))
            k = max(1, round(keep * w.numel()))
            thr = w.abs().flatten().kthvalue(w.numel() - k + 1).values
            w.masked_fill_(w.abs() < thr, 0.0)
    return net


def measure(name: str, tmp: Path) -> dict:
    from converters.onnx.export import PRUNABLE, export_onnx

    net = pruned(name)
    t0 = time.perf_counter()
    dense = export_onnx(net, tmp / f"{name}_dense.onnx", sparse=False, meta={"method": "magnitude"})
    sparse = export_onnx(net, tmp / f"{name}_sparse.onnx", meta={"method": "magnitude"})
    t_export = time.perf_counter() - t0
    t0 = time.perf_counter()
    gz = len(gzip.compress(Path(dense.path).read_bytes(), compresslevel=6))
    gz_sparse = len(gzip.compress(Path(sparse.path).read_bytes(), compresslevel=6))
    t_gzip = time.perf_counter() - t0
    weights = nnz = biases = best = 0
    for m in net.modules():
        if isinstance(m, PRUNABLE):
            n = int(torch.count_nonzero(m.weight))
            weights, nnz = weights + m.weight.numel(), nnz + n
            best += min(12 * n, 4 * m.weight.numel())  # each layer in its smaller encoding
            biases += m.bias.numel() if m.bias is not None else 0
    coo = 12 * nnz + 4 * biases  # every weight tensor in COO
    bound = best + 4 * biases
    err = _ort_error(net, sparse.path, dense.path)
    return dict(model=name, weights=weights, nnz=nnz, dense=dense.bytes, sparse=sparse.bytes, gzip=gz,
                gzip_sparse=gz_sparse, coo=coo, bound=bound, err=err, t_export=t_export, t_gzip=t_gzip,
                sparse_tensors=sparse.sparse_tensors)


def _ort_error(net, sparse_path: str, dense_path: str) -> tuple[float, bool]:
    import onnxruntime as ort

    (name, shape), = net.inputs.items()
    x = np.random.default_rng(0).standard_normal((1, *shape[1:])).astype(np.float32)
    outs = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
            for p in (sparse_path, dense_path)]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    return float(np.abs(outs[0] - want).max()), bool(np.array_equal(outs[0], outs[1]))


def mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(PAPER))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in [args.only] if args.only else ["lenet", "alexnet"]:
            rows.append(measure(name, Path(d)))
    print("| model | kept | dense ONNX | sparse ONNX | gzip(dense) | gzip(sparse) | dense/sparse "
          "| dense/gzip | 12 B/nnz | bound | sparse/bound | ORT max err | sparse==dense |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        err, same = r["err"]
        kept = f"{r['nnz'] / r['weights']:.2%} ({r['weights'] / r['nnz']:.1f}x)"
        print(f"| {r['model']} | {kept} | {mb(r['dense'])} | {mb(r['sparse'])} | {mb(r['gzip'])} "
              f"| {mb(r['gzip_sparse'])} | {r['dense'] / r['sparse']:.2f}x | {r['dense'] / r['gzip']:.2f}x "
              f"| {mb(r['coo'])} | {mb(r['bound'])} | {r['sparse'] / r['bound']:.3f} | {err:.1e} | {same} |")
    print("12 B/nnz: every weight in COO (+4 B per bias); bound: each weight tensor in its smaller encoding "
          "(min(12 nnz, 4 n)) + biases, i.e. the least a file of dense or COO tensors can take.")
    for r in rows:
        print(f"{r['model']}: sparse initializers {', '.join(r['sparse_tensors'])}; "
              f"sparse file is {r['sparse'] - r['bound']:+,} bytes from the bound "
              f"({r['sparse'] - r['coo']:+,} from 12 B/nnz); "
              f"goal dense/sparse >= 6x: {'met' if r['dense'] / r['sparse'] >= 6 else 'NOT met'} "
              f"(export {r['t_export']:.1f} s, gzip {r['t_gzip']:.1f} s)")


if __name__ == "__main__":
    main()
