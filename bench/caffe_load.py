"""Loading an AlexNet-sized caffemodel, side by side: time and peak memory of each route.

Writes bvlc_alexnet's blob shapes (61M floats, ~244 MB) with random weights into a temporary
directory with ``converters.caffe.writer`` (timed), then loads the file in a fresh subprocess per
method and repeat, so each peak RSS (the child's ``VmHWM``) belongs to one method:

  raw     ``np.fromfile`` of the whole file: the I/O floor
  reader  ``converters.caffe.reader.read_caffemodel`` (wire scan, blobs read into their arrays)
  naive   ``NetParameter.ParseFromString`` + ``np.array(blob.data)`` per blob
  opencv  ``cv2.dnn.readNetFromCaffe(prototxt, caffemodel)``
  load    ``converters.caffe.load(prototxt, caffemodel)``: the full path to a PyTorch module

Each method runs ``--repeat`` times (interleaved, the file already in the page cache) and the
minimum is reported: the machine is shared, only ratios measured in one run mean anything.
"Δ RSS" is the child's peak minus its RSS after imports, i.e. the memory the load itself needed.

    python bench/caffe_load.py [--repeat 3] [--methods raw,reader,naive,opencv,load]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ALEXNET_DEPLOY = """name: "AlexNet"
layer { name: "data" type: "Input" top: "data" input_param { shape: { dim: 1 dim: 3 dim: 227 dim: 227 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 96 kernel_size: 11 stride: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
        lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "norm2" type: "LRN" bottom: "conv2" top: "norm2"
        lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool2" type: "Pooling" bottom: "norm2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3"
        convolution_param { num_output: 384 pad: 1 kernel_size: 3 } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4"
        convolution_param { num_output: 384 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5"
        convolution_param { num_output: 256 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }
layer { name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6" inner_product_param { num_output: 4096 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param { num_output: 4096 } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8" inner_product_param { num_output: 1000 } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }
"""

# bvlc_alexnet's blob shapes (Caffe layout).
ALEXNET_BLOBS = {
    "conv1": [(96, 3, 11, 11), (96,)],
    "conv2": [(256, 48, 5, 5), (256,)],
    "conv3": [(384, 256, 3, 3), (384,)],
    "conv4": [(384, 192, 3, 3), (384,)],
    "conv5": [(256, 192, 3, 3), (256,)],
    "fc6": [(4096, 9216), (4096,)],
    "fc7": [(4096, 4096), (4096,)],
    "fc8": [(1000, 4096), (1000,)],
}

METHODS = ("raw", "reader", "naive", "opencv", "load")


# -- the child: one load, then report time and peak RSS ----------------------------------------

def _child(method: str, prototxt: str, model: str) -> dict:
    load = _prepare(method)
    base = _maxrss()
    t0 = time.perf_counter()
    result = load(prototxt, model)
    seconds = time.perf_counter() - t0
    peak = _maxrss()
    del result
    return {"seconds": seconds, "peak": peak, "base": base}


def _prepare(method: str):
    """Import what ``method`` needs (not timed) and return its load function."""
    if method == "raw":
        return lambda _, model: np.fromfile(model, dtype=np.uint8)
    if method == "reader":
        from converters.caffe.reader import read_caffemodel

        return lambda _, model: read_caffemodel(model)
    if method == "naive":
        from converters.caffe.proto import caffe_pb2

        def naive(_, model):
            net = caffe_pb2.NetParameter()
            with open(model, "rb") as f:
                net.ParseFromString(f.read())
            return {layer.name: [np.array(b.data, dtype=np.float32).reshape(tuple(b.shape.dim))
                                 for b in layer.blobs] for layer in net.layer}

        return naive
    if method == "opencv":
        import cv2

        return lambda prototxt, model: cv2.dnn.readNetFromCaffe(prototxt, model)
    if method == "load":
        import torch  # noqa: F401  (imported before timing, like the other routes' modules)

        from converters.caffe import load

        return lambda prototxt, model: load(prototxt, model)
    raise SystemExit(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def _maxrss() -> int:
    """Peak resident set of this process in bytes.

    Linux's ``ru_maxrss`` survives ``exec``: a child spawned by a parent that once held the
    weights starts with the parent's peak. ``VmHWM`` belongs to the child's own address space.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


# -- the parent: write the model, run the children, print the table ----------------------------

def _write_model(directory: str, repeat: int) -> tuple[str, str, float]:
    from converters.caffe.prototxt import parse_net_text
    from converters.caffe.writer import write_caffemodel

    prototxt = os.path.join(directory, "alexnet.prototxt")
    with open(prototxt, "w") as f:
        f.write(ALEXNET_DEPLOY)
    rng = np.random.default_rng(0)
    blobs = {name: [rng.standard_normal(shape, dtype=np.float32) * 0.01 for shape in shapes]
             for name, shapes in ALEXNET_BLOBS.items()}
    net = parse_net_text(ALEXNET_DEPLOY)
    model = os.path.join(directory, "alexnet.caffemodel")
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        write_caffemodel(model, net, blobs)
        times.append(time.perf_counter() - t0)
    return prototxt, model, min(times)


def _run_child(method: str, prototxt: str, model: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", method, prototxt, model]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": last}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "PROTOTXT", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return
    methods = [m for m in args.methods.split(",") if m]
    with tempfile.TemporaryDirectory(prefix="caffe_load_") as tmp:
        prototxt, model, write_s = _write_model(tmp, args.repeat)
        size = os.path.getsize(model)
        floats = sum(int(np.prod(s)) for shapes in ALEXNET_BLOBS.values() for s in shapes)
        with open(model, "rb") as f:  # into the page cache, so every method reads the same way
            while f.read(1 << 24):
                pass
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        for _ in range(args.repeat):
            for m in methods:
                runs[m].append(_run_child(m, prototxt, model))
    _print_table(runs, size, floats, write_s)


def _print_table(runs: dict[str, list[dict]], size: int, floats: int, write_s: float) -> None:
    mb = 1e6
    print(f"AlexNet-sized caffemodel: {floats / 1e6:.1f}M floats, {size / mb:.1f} MB; "
          f"min of {max(len(r) for r in runs.values())} runs each, one subprocess per run")
    print(f"write_caffemodel: {write_s:.3f} s\n")
    ok = {m: [r for r in rs if "error" not in r] for m, rs in runs.items()}
    raw = min((r["seconds"] for r in ok.get("raw", [])), default=None)
    print(f"| {'method':<7} | {'time s':>7} | {'x raw':>6} | {'peak RSS MB':>11} | {'Δ RSS MB':>8} "
          f"| {'Δ RSS / file':>12} |")
    print(f"|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 13}|{'-' * 10}|{'-' * 14}|")
    for m, rs in ok.items():
        if not rs:
            print(f"| {m:<7} | failed: {runs[m][0]['error'][:90]}")
            continue
        t = min(r["seconds"] for r in rs)
        peak = min(r["peak"] for r in rs)
        delta = min(r["peak"] - r["base"] for r in rs)
        ratio = f"{t / raw:.2f}" if raw else "-"
        print(f"| {m:<7} | {t:>7.3f} | {ratio:>6} | {peak / mb:>11.0f} | {delta / mb:>8.0f} "
              f"| {delta / size:>12.2f} |")


if __name__ == "__main__":
    main()
