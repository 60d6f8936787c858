"""Every compressed form of LeNet and AlexNet against the dense float32 ONNX, side by side in onnxruntime:
file size, latency ratio at batch 1 and 32 (one intra-op thread, default SessionOptions, files interleaved
in one run: ``compress bench --json``), top-1 through onnxruntime on the MNIST test set (``compress eval``)
and, for the weight-only forms, ``compress verify`` against the PyTorch model. Every file is made by the
commands printed first (the exact command lines; a user gets the same files).

LeNet: the zoo model, and the 71.2x ADMM model (``--lenet71``, the README's main job; else it is made by it:
``compress prune lenet --method admm --targets admm-71x --data mnist --seed 1``). AlexNet: no weights ship,
so the zoo net's random weights, magnitude-pruned to the ADMM paper's 21x (``--targets admm-21x`` on
synthetic data; speed and size do not depend on training). AlexNet's int8-activation row is calibrated on
synthetic images (no ImageNet here) by the library, for its speed only: ``compress quantize --activations``
refuses synthetic data, and its accuracy cannot be measured here.

    .venv/bin/python bench/deploy_speed.py --out DIR [--lenet71 lenet_admm71.pt] [--only lenet|alexnet]
        [--alexnet21 alex21.pt] [--rounds 10]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's sources, not an installed copy
CLI = [sys.executable, "-m", "compress.cli"]


def run(args: list[str], *, check: bool = True) -> str:
    print("$ compress " + shlex.join(args), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, cwd=ROOT)
    if check and r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): compress {shlex.join(args)}\n{r.stderr.strip()}")
    return r.stdout


def export(model: str, out: Path, *extra: str) -> str:
    run(["export", model, "-o", str(out), "--no-speed-check", *extra])
    return str(out)


def quantize(model: str, out: Path, bits: int, *extra: str) -> str:
    run(["quantize", model, "--bits", str(bits), "--method", "ptq", *extra, "-o", str(out)])
    return str(out)


def lenet_forms(d: Path, lenet71: str | None) -> list[tuple[str, str, str | None]]:
    """``[(label, onnx file, the model file it verifies against or None)]``."""
    if lenet71 is None:
        lenet71 = str(d / "lenet_admm71.pt")
        run(["prune", "lenet", "--method", "admm", "--targets", "admm-71x", "--data", "mnist", "--seed", "1",
             "-o", lenet71])
    forms = [("dense fp32", export("lenet", d / "lenet_fp32.onnx"), None)]
    sparse = export(lenet71, d / "l71_sparse.onnx", "--no-thin")
    forms.append(("71.2x sparse fp32 (--no-thin)", sparse, lenet71))
    forms.append(("71.2x thinned fp32", export(lenet71, d / "l71_thin.onnx"), lenet71))
    for bits in (8, 4, 2):
        q = quantize("lenet", d / f"ptq{bits}.pt", bits, "--data", "mnist")
        forms.append((f"PTQ {bits}-bit", export(q, d / f"ptq{bits}.onnx"), q))
    forms.append(("PTQ 4-bit --pack", export(str(d / "ptq4.pt"), d / "ptq4_pack.onnx", "--pack"),
                  str(d / "ptq4.pt")))
    q = quantize(lenet71, d / "l71_q4.pt", 4, "--data", "mnist")
    forms.append(("71.2x + PTQ 4-bit", export(q, d / "l71_q4.onnx"), q))
    q = quantize("lenet", d / "int8.pt", 8, "--activations", "8", "--data", "mnist")
    forms.append(("PTQ 8-bit + int8 activations", export(q, d / "int8.onnx"), None))
    for bits in (8, 4):
        q = quantize(lenet71, d / f"l71_w{bits}a8.pt", bits, "--activations", "8", "--data", "mnist")
        forms.append((f"71.2x + {bits}-bit + int8 activations", export(q, d / f"l71_w{bits}a8.onnx"), None))
    return forms


def alexnet_forms(d: Path, a21: str | None) -> list[tuple[str, str, str | None]]:
    if a21 is None:
        a21 = str(d / "alex21.pt")
        run(["prune", "alexnet", "--method", "admm", "--targets", "admm-21x", "--data", "synthetic",
             "--admm-iters", "1", "--retrain-epochs", "1", "--max-steps", "2", "-o", a21])
    native = export("alexnet", d / "alex_fp32_native.onnx", "--native-lrn")
    forms = [("dense fp32 (native LRN)", native, None),
             ("dense fp32 (LRN as window conv)", export("alexnet", d / "alex_fp32.onnx"), None),
             ("21x sparse fp32 (--no-thin)", export(a21, d / "a21_sparse.onnx", "--no-thin"), a21)]
    q = quantize(a21, d / "a21_q4.pt", 4)
    forms.append(("21x + PTQ 4-bit", export(q, d / "a21_q4.onnx"), q))
    forms.append(("21x + PTQ 4-bit --pack --native-lrn",
                  export(q, d / "a21_q4_pack.onnx", "--pack", "--native-lrn"), q))
    for bits in (8, 4):
        forms.append((f"21x + {bits}-bit + int8 activations (synthetic calibration, speed only)",
                      _alexnet_int8(a21, d / f"a21_w{bits}a8.onnx", bits), None))
    return forms


def _alexnet_int8(model: str, out: Path, bits: int) -> str:
    print(f"# library: PTQ {bits}-bit of {model}, activations calibrated on 64 synthetic images, full QDQ "
          "export")
    import torch

    from compress.modelfile import load_model
    from compress.quant.activations import activation_record, calibrate
    from compress.quant.config import GridConfig
    from compress.quant.export import export_any
    from compress.quant.ptq import ptq
    from compress.quant.record import KEY, make_record

    torch.set_num_threads(1)
    net = load_model(model).net
    config = GridConfig(bits)
    layers = ptq(net, config)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn((8, 3, 227, 227), generator=gen) * 50, None) for _ in range(8)]
    ranges, images = calibrate(net, batches, 64)
    meta = {KEY: {**make_record(config, "ptq", {n: q.grid for n, q in layers.items()}),
                  "activations": activation_record(8, ranges, images, "synthetic")}}
    return export_any(net, meta, out).path


def measure(forms, rounds: int, accuracy: bool) -> list[dict]:
    paths = [p for _, p, _ in forms]
    report = json.loads(run(["bench", *paths, "--batch", "1,32", "--threads", "1", "--rounds", str(rounds),
                             "--no-profile", "--no-memory", "--json"]))
    rows = []
    for (label, path, against), f in zip(forms, report["files"], strict=True):
        row = {"label": label, "path": path, "bytes": f["bytes"],
               "speedup": {lat["batch"]: lat["speedup"] for lat in f["latencies"]},
               "p50_ms": {lat["batch"]: lat["p50_ms"] for lat in f["latencies"]}}
        if accuracy:
            r = json.loads(run(["eval", path, "--data", "mnist", "--json"]))
            row["top1"] = r["top1"]
        if against:
            v = json.loads(run(["verify", path, "--against", against, "--json", "--threads", "1"],
                               check=False))
            row["verify"] = "ok" if v.get("passed") else "FAILED"
            row["max_abs_err"] = v.get("max_abs_err")
        rows.append(row)
    print(f"onnxruntime {report['onnxruntime']}, {report['threads']} thread, {report['rounds']} rounds, "
          f"load average {report['load_average']}")
    return rows


def table(name: str, rows: list[dict]) -> str:
    base = rows[0]["bytes"]
    lines = [f"| {name} | size | smaller | bs 1 vs dense | bs 32 vs dense | top-1 | verify |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        s1, s32 = r["speedup"][1], r["speedup"][32]
        top1 = f"{r['top1']:.2%}" if "top1" in r else "-"
        verify = f"{r['verify']} ({r['max_abs_err']:.1e})" if "verify" in r else "-"
        lines.append(f"| {r['label']} | {r['bytes'] / 1e3:,.1f} kB | {base / r['bytes']:.1f}x | {s1:.2f}x | "
                     f"{s32:.2f}x | {top1} | {verify} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="Folder for the model files and exports")
    ap.add_argument("--lenet71", help="The 71.2x ADMM LeNet (made by the main job when omitted)")
    ap.add_argument("--alexnet21", help="AlexNet pruned to 21x (made from random weights when omitted)")
    ap.add_argument("--only", choices=("lenet", "alexnet"))
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    d = Path(args.out)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    if args.only in (None, "lenet"):
        out.append(table("LeNet", measure(lenet_forms(d, args.lenet71), args.rounds, accuracy=True)))
    if args.only in (None, "alexnet"):
        forms = alexnet_forms(d, args.alexnet21)
        out.append(table("AlexNet", measure(forms, max(3, args.rounds // 3), accuracy=False)))
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
