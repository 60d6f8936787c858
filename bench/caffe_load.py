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
from pathlib import Path

import numpy as np

# bvlc_alexnet's deploy definition, as the zoo ships it.
ALEXNET_PROTOTXT = Path(__file__).resolve().parents[1] / "zoo" / "alexnet.prototxt"


def _blob_shapes(net) -> dict[str, list[tuple[int, ...]]]:
    """Every layer's Caffe blob shapes, from the builder's meta-device plan (nothing allocated)."""
    from converters.caffe.builder import plan_net
    from converters.caffe.layers.base import CaffeBlobs

    plan = plan_net(net)
    return {name: m.caffe_blob_shapes() for name, m in plan.modules.items() if isinstance(m, CaffeBlobs)}


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

def _write_model(directory: str, repeat: int) -> tuple[str, str, float, int]:
    from converters.caffe.prototxt import read_net_text
    from converters.caffe.writer import write_caffemodel

    prototxt = str(ALEXNET_PROTOTXT)
    net = read_net_text(prototxt)
    rng = np.random.default_rng(0)
    blobs = {name: [rng.standard_normal(shape, dtype=np.float32) * 0.01 for shape in shapes]
             for name, shapes in _blob_shapes(net).items()}
    floats = sum(b.size for layer in blobs.values() for b in layer)
    model = os.path.join(directory, "alexnet.caffemodel")
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        write_caffemodel(model, net, blobs)
        times.append(time.perf_counter() - t0)
    return prototxt, model, min(times), floats


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
        prototxt, model, write_s, floats = _write_model(tmp, args.repeat)
        size = os.path.getsize(model)
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
