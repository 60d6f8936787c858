"""Structured (channel) pruning, thinned for real speed: the issue-19 checks side by side, with commands.

For each model: ``compress prune MODEL --method magnitude --sparsity channel --pcen P --data synthetic
--max-steps 1 --retrain-epochs 1 --batch-size 2`` (the check's flags; synthetic data is enough, the check
is structural), then ``compress export --thin --fold-bn`` and the baseline ``compress export --dense
--fold-bn`` (BatchNorm folded: folding alone earns nothing). Reported: the MACs of both ONNX files (Conv
and Gemm, from the files' own shapes), onnxruntime latency at each batch (one thread, the sessions
interleaved and medians compared, so load from other processes hits all alike), the speed-up, the
efficiency (speed-up / MAC reduction), and the largest relative error of the thinned ONNX against the
zeroed model's own dense export (unfolded), on the outputs and on the logits under an output Softmax.

Rows: ``--pcen 50`` (the check), and with ``--half`` (nets with coupled channel sets) the ``--pcen`` found
by bisection that brings the thinned net to about half of its MACs (Torch-Pruning's anchor on
ResNet-50-1by2 was measured there: 1.52x at odd widths, 2.0x with widths rounded to multiples of 8 at
46.6% of the MACs; not re-measured here).
Models: ``resnet50_1by2`` (nsfw package, zoo/external.py), ``alexnet`` (zoo, untrained), and the
Fashion-MNIST ``mobilenet_v1_0.5`` / ``mobilenet_v1_0.25`` / ``resnet20`` from zoo/*.prototxt with random
weights unless ``--weights NAME=MODEL`` gives trained ones. ``--accuracy NAME=MODEL`` (trained, Fashion-MNIST)
also runs ADMM channel and RGSM at the same channel budget (the half-MACs ``--pcen``) with
``--admm-flags`` / ``--rgsm-flags`` and prints top-1 before/after and the thinned speed-up.

    python bench/structured.py [--models resnet50_1by2,alexnet,mobilenet_v1_0.5,resnet20] [--half]
                               [--batches 1,8] [--repeats 15] [--weights NAME=MODEL] [--accuracy NAME=MODEL]
"""
from __future__ import annotations

import argparse
import copy
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHECK = ["--method", "magnitude", "--sparsity", "channel", "--data", "synthetic", "--max-steps", "1",
         "--retrain-epochs", "1", "--batch-size", "2"]
FASHION = ("mobilenet_v1_0.5", "mobilenet_v1_0.25", "resnet20")


def model_spec(name: str, tmp: Path, weights: dict[str, str]) -> list[str] | None:
    """The MODEL [--prototxt FILE] arguments of ``compress prune`` for ``name``; None if not here."""
    if name in weights:
        w = weights[name]
        return with_prototxt(name, w)
    if name == "resnet50_1by2":
        from zoo.external import nsfw_resnet50

        found = nsfw_resnet50()
        return None if found is None else [str(found[0]), "--prototxt", str(found[1])]
    if name == "alexnet":
        return ["alexnet"]
    if name in FASHION:
        return random_caffemodel(name, tmp)
    raise SystemExit(f"unknown model {name!r}")


def with_prototxt(name: str, model: str) -> list[str]:
    """A .caffemodel of a zoo net takes the zoo's deploy prototxt."""
    proto = ["--prototxt", str(ROOT / "zoo" / f"{name}.prototxt")]
    return [model] + (proto if model.endswith(".caffemodel") else [])


def random_caffemodel(name: str, tmp: Path) -> list[str]:
    """The zoo net with its fillers' random weights and unit BatchNorm statistics (structure only)."""
    from converters import caffe

    proto = ROOT / "zoo" / f"{name}.prototxt"
    net = caffe.load(proto)
    with torch.no_grad():
        for node in net.nodes:
            if node.type == "BatchNorm":
                m = net.layer(node.name)
                m.mean_sum.zero_(), m.var_sum.fill_(1.0), m.scale_factor.fill_(1.0)
    path = tmp / f"{name}.caffemodel"
    caffe.save(net, path)
    return [str(path), "--prototxt", str(proto)]


def run(args: list[str]) -> str:
    """``compress ARGS`` in this process (the CLI itself); its standard output."""
    import contextlib
    import io

    from compress.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    if code != 0:
        raise SystemExit(f"compress {shlex.join(args)} failed ({code}):\n{out.getvalue()}")
    return out.getvalue()


def onnx_macs(path: str) -> int:
    """Multiply-accumulates per sample of the Conv and Gemm/MatMul nodes (shapes inferred at batch 1)."""
    import onnx

    model = onnx.load(path)
    for inp in model.graph.input:
        inp.type.tensor_type.shape.dim[0].dim_value = 1
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    inits.update({i.values.name: list(i.dims) for i in model.graph.sparse_initializer})
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            total += int(np.prod(shapes[node.output[0]][1:])) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            total += int(np.prod(inits[node.input[1]]))
    return total


def with_logits(path: str, tmp: Path) -> str:
    """A copy of the ONNX file that also outputs the input of every output Softmax (the logits)."""
    import onnx

    model = onnx.load(path)
    outs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type == "Softmax" and set(node.output) & outs:
            logits = onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None)
            model.graph.output.append(logits)
    out = tmp / (Path(path).stem + "_logits.onnx")
    onnx.save(model, out)
    return str(out)


def sessions(paths: list[str], threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return [ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"]) for p in paths]


def latency(paths: list[str], x: np.ndarray, repeats: int, threads: int) -> list[float]:
    """Median seconds per run of each file, the runs interleaved."""
    ss = sessions(paths, threads)
    feed = {ss[0].get_inputs()[0].name: x}
    for s in ss:
        s.run(None, feed)
    times: list[list[float]] = [[] for _ in ss]
    for _ in range(repeats):
        for s, t in zip(ss, times, strict=True):
            t0 = time.perf_counter()
            s.run(None, feed)
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def max_error(ref: str, got: str, x: np.ndarray, tmp: Path) -> float:
    a, b = sessions([with_logits(ref, tmp), with_logits(got, tmp)], 1)
    feed = {a.get_inputs()[0].name: x}
    ya, yb = a.run(None, feed), b.run(None, feed)
    return max(float(np.abs(p - q).max() / max(np.abs(p).max(), 1e-30)) for p, q in zip(ya, yb, strict=True))


def thinned_macs_at(spec: list[str], pcen: float) -> float:
    """Fraction of the MACs left after coupled pruning at ``pcen`` and thinning (in process, no training)."""
    from compress.commands.export import ALIGN
    from compress.layers import prunable_layers
    from compress.prune.coupling import coupling_for
    from compress.prune.methods.base import hard_prune
    from compress.prune.targets import resolve_targets
    from compress.report.rows import layer_rows, total_row
    from compress.thin import thin

    base = _loaded(spec)
    net = copy.deepcopy(base)
    layers = prunable_layers(net)
    targets = resolve_targets(layers, pcen=pcen, sparsity="channel")
    hard_prune(layers, targets, coupling_for(net, layers, "in"))
    t = thin(net, check=False, align=ALIGN).net  # as `compress export` thins
    return total_row(layer_rows(t)).macs / total_row(layer_rows(base)).macs


_LOADED: dict[tuple, object] = {}


def _loaded(spec: list[str]):
    from compress.modelfile import load_model

    key = tuple(spec)
    if key not in _LOADED:
        _LOADED[key] = load_model(spec[0], spec[2] if len(spec) > 2 else None).net
    return _LOADED[key]


def coupled(spec: list[str]) -> bool:
    """Whether the net has coupled channel sets (a plain chain is pruned layer by layer: --half is moot)."""
    from compress.layers import prunable_layers
    from compress.prune.coupling import coupling_for

    net = _loaded(spec)
    return bool(coupling_for(net, prunable_layers(net), "in").spaces)


def half_macs_pcen(spec: list[str], goal: float = 0.5) -> float:
    """The smallest whole ``--pcen`` whose thinned net has at most ``goal`` of the MACs (bisection)."""
    lo, hi = 0, 90
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if thinned_macs_at(spec, mid) <= goal:
            hi = mid
        else:
            lo = mid
    return float(hi)


def measure(name: str, spec: list[str], pcen: float, batches: list[int], repeats: int, threads: int,
            tmp: Path) -> dict:
    tag = f"{name}_p{pcen:g}"
    pruned, thin, dense, zeroed = (str(tmp / f"{tag}{s}") for s in (".pt", "_thin.onnx", "_dense.onnx",
                                                                      "_zeroed.onnx"))
    cmds = [["prune", *spec, *CHECK[:4], "--pcen", f"{pcen:g}", *CHECK[4:], "-o", pruned, "--quiet"],
            ["export", pruned, "-o", thin, "--thin", "--fold-bn"],
            ["export", pruned, "-o", dense, "--dense", "--fold-bn"],
            ["export", pruned, "-o", zeroed, "--dense"]]
    outputs = [run(c) for c in cmds]
    whole = [line for line in outputs[1].splitlines() if line.startswith("kept ")]
    macs = (onnx_macs(dense), onnx_macs(thin))
    shape = tuple(_loaded(spec).inputs.values())[0]
    rows = []
    for b in batches:
        x = np.random.default_rng(0).standard_normal((b, *shape[1:])).astype(np.float32)
        t_dense, t_thin, t_zeroed = latency([dense, thin, zeroed], x, repeats, threads)
        rows.append(dict(batch=b, t=(t_dense, t_thin, t_zeroed)))
    x = np.random.default_rng(1).standard_normal((2, *shape[1:])).astype(np.float32)
    err = max(max_error(zeroed, thin, x, tmp), max_error(zeroed, dense, x, tmp))
    return dict(model=name, pcen=pcen, cmds=cmds, macs=macs, rows=rows, err=err, whole=whole)


def accuracy(name: str, model: str, pcen: float, flags: dict[str, list[str]], tmp: Path, out_dir: Path,
             threads: int) -> list[str]:
    """ADMM channel and RGSM at one channel budget on Fashion-MNIST: top-1 before/after, thinned speed-up.
    The pruned models go to ``out_dir`` and are kept; a run whose checkpoint is there continues from it."""
    from compress.modelfile import load_model

    lines = []
    spec = with_prototxt(name, model)
    out_dir.mkdir(parents=True, exist_ok=True)
    for method in ("admm", "rgsm"):
        out = str(out_dir / f"{name}_{method}_channel.pt")
        cmd = ["prune", *spec, "--method", method, "--sparsity", "channel", "--pcen", f"{pcen:g}",
               "--data", "fashion-mnist", *flags[method], "-o", out, "--quiet"]
        if Path(out + ".ckpt").exists():
            run(["prune", "--resume", out + ".ckpt"])
        elif not Path(out).exists():
            run(cmd)
        meta = load_model(out).meta
        thin, dense = str(tmp / f"{name}_{method}_thin.onnx"), str(tmp / f"{name}_{method}_dense.onnx")
        run(["export", out, "-o", thin, "--thin", "--fold-bn"])
        run(["export", out, "-o", dense, "--dense", "--fold-bn"])
        shape = tuple(load_model(out).net.inputs.values())[0]
        x = np.random.default_rng(0).standard_normal((1, *shape[1:])).astype(np.float32)
        t_dense, t_thin = latency([dense, thin], x, 30, threads)
        before, after = meta.get("accuracy_before"), meta.get("accuracy_after")
        drop = (before - after) * 100 if before is not None and after is not None else float("nan")
        lines.append(f"| {name} | {method} | {pcen:g} | {before:.2%} | {after:.2%} | {drop:.2f} | "
                     f"{onnx_macs(thin) / onnx_macs(dense):.1%} | {t_dense / t_thin:.2f}x |")
        lines.append(f"|  | `compress {shlex.join(cmd)}` |||||||")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50_1by2,alexnet,mobilenet_v1_0.5,resnet20")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--pcen", type=float, default=50.0, help="the check's --pcen")
    ap.add_argument("--half", action="store_true", help="also the --pcen that leaves about half the MACs")
    ap.add_argument("--weights", action="append", default=[], metavar="NAME=MODEL")
    ap.add_argument("--accuracy", action="append", default=[], metavar="NAME=MODEL")
    ap.add_argument("--out", type=Path, default=Path("runs/structured"),
                    help="where the --accuracy runs keep their models and checkpoints (reruns continue them)")
    ap.add_argument("--admm-flags", default="--admm-iters 5 --retrain-epochs 10",
                    help="training flags of the --accuracy ADMM runs")
    ap.add_argument("--rgsm-flags", default="--epochs 5 --retrain-epochs 10",
                    help="training flags of the --accuracy RGSM runs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    weights = dict(w.split("=", 1) for w in args.weights)
    batches = [int(b) for b in args.batches.split(",")]
    results, notes = [], []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.models.split(","):
            spec = model_spec(name, tmp, weights)
            if spec is None:
                notes.append(f"{name}: not found (see zoo/external.py)")
                continue
            pcens = [args.pcen]
            if args.half and coupled(spec):
                pcens.append(half_macs_pcen(spec))
            for p in pcens:
                results.append(measure(name, spec, p, batches, args.repeats, args.threads, tmp))
                print(f"measured {name} at --pcen {p:g}", file=sys.stderr, flush=True)
        acc_lines = []
        for item in args.accuracy:
            name, model = item.split("=", 1)
            spec = with_prototxt(name, model)
            p = half_macs_pcen(spec)
            flags = {"admm": shlex.split(args.admm_flags), "rgsm": shlex.split(args.rgsm_flags)}
            acc_lines += accuracy(name, model, p, flags, tmp, args.out, args.threads)
    print(f"onnxruntime CPU, {args.threads} thread(s), median of {args.repeats} interleaved runs; baseline: "
          "the dense export with BatchNorm folded (--dense --fold-bn); error: thinned+folded vs the zeroed "
          "model's dense export, outputs and logits")
    print("| model | --pcen | MACs dense | MACs thinned | MAC % | batch | dense+fold ms | thinned ms "
          "| speed-up | efficiency | unfolded dense / folded | max rel. err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m0, m1 = r["macs"]
        for row in r["rows"]:
            t0, t1, tz = row["t"]
            print(f"| {r['model']} | {r['pcen']:g} | {m0 / 1e6:.1f}M | {m1 / 1e6:.1f}M | {m1 / m0:.1%} "
                  f"| {row['batch']} | {t0 * 1e3:.2f} | {t1 * 1e3:.2f} | {t0 / t1:.2f}x "
                  f"| {(t0 / t1) / (m0 / m1):.2f} | {tz / t0:.2f}x | {r['err']:.1e} |")
    print()
    for r in results:
        print(f"{r['model']} --pcen {r['pcen']:g}:")
        for c in r["cmds"]:
            print(f"    compress {shlex.join(c)}")
        for line in r["whole"]:
            print(f"    {line}")
    if acc_lines:
        print("\n| model | method | --pcen | top-1 before | top-1 after | drop (points) | MAC % "
              "| speed-up b1 |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(acc_lines))
    for n in notes:
        print(n)


if __name__ == "__main__":
    main()
