"""Pruned + quantized ONNX: file size against the dense float32 export, onnxruntime against PyTorch, and
the time of PTQ over every layer. LeNet (71x) and AlexNet (21x) at full size with random weights
magnitude-pruned to the ADMM paper's per-layer ratios (as ``export_size.py``; sizes do not depend on
training), then PTQ at ``--bits`` (per-channel, max-abs and MSE scales timed side by side):

    .venv/bin/python bench/quant_size.py [--only lenet|alexnet] [--bits 4]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from export_size import pruned  # the sibling benchmark (bench/ is on sys.path when run)


def measure(name: str, bits: int, tmp: Path) -> dict:
    import onnx

    from compress.quant.config import GridConfig
    from compress.quant.export import export_any
    from compress.quant.ptq import fit_grids, ptq
    from compress.quant.record import KEY, make_record
    from converters.onnx.export import export_onnx
    from converters.onnx.quantized import decode_weights
    from converters.onnx.verify import verify_onnx

    net = pruned(name)
    dense = export_onnx(net, tmp / f"{name}_fp32.onnx", sparse=False)
    fp32 = verify_onnx(dense.path, net, batch_size=1, repeats=5)
    t0 = time.perf_counter()
    fit_grids(net, GridConfig(bits, scale="mse"))
    t_mse = time.perf_counter() - t0
    config = GridConfig(bits)
    t0 = time.perf_counter()
    layers = ptq(net, config)
    t_max = time.perf_counter() - t0
    meta = {KEY: make_record(config, "ptq", {n: q.grid for n, q in layers.items()})}
    t0 = time.perf_counter()
    r = export_any(net, meta, tmp / f"{name}_q{bits}.onnx")
    t_export = time.perf_counter() - t0
    check = verify_onnx(r.path, net, batch_size=1, repeats=5)
    decoded = decode_weights(onnx.load(r.path))
    identical = all(np.array_equal(v, net.layer(k.removesuffix(".weight")).weight.detach().numpy())
                    for k, v in decoded.items())
    kept = sum(q.nonzero_after for q in layers.values())
    return {"name": name, "bits": bits, "kept": kept, "weights": sum(q.weights for q in layers.values()),
            "fp32": dense.bytes, "q": r.bytes, "t_max": t_max, "t_mse": t_mse, "t_export": t_export,
            "err": check.max_abs_err, "passed": check.passed, "identical": identical,
            "lat_fp32": fp32.ort_latency_ms, "lat_q": check.ort_latency_ms,
            "layers": {n: e.describe() for n, e in r.layers.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("lenet", "alexnet"))
    ap.add_argument("--bits", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(2)
    names = [args.only] if args.only else ["lenet", "alexnet"]
    print(f"| model | kept weights | fp32 ONNX | pruned + {args.bits}-bit ONNX | smaller | PTQ max / mse (s) "
          "| export (s) | ORT max abs err | weights identical | ORT ms fp32 / quantized |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            m = measure(name, args.bits, Path(d))
            print(f"| {name} | {m['kept']:,} of {m['weights']:,} | {m['fp32'] / 1e6:.2f} MB | "
                  f"{m['q'] / 1e3:.1f} kB | {m['fp32'] / m['q']:.1f}x | "
                  f"{m['t_max']:.2f} / {m['t_mse']:.2f} | "
                  f"{m['t_export']:.1f} | {m['err']:.2g} ({'ok' if m['passed'] else 'FAILED'}) | "
                  f"{m['identical']} | {m['lat_fp32']:.1f} / {m['lat_q']:.1f} |")
            for layer, how in m["layers"].items():
                print(f"    {name} {layer}: {how}")


if __name__ == "__main__":
    main()
