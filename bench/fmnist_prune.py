"""The pruning methods beyond LeNet: ADMM, RVSM and magnitude pruning of the zoo's Fashion-MNIST MobileNet-v1
(width 0.5) to 5x fewer weights and ResNet-20 to 10x, at the same budget of epochs, then each model's
top-1 on the 10,000 Fashion-MNIST test images against its baseline and the per-layer table.

    python bench/fmnist_prune.py [--models mobilenet_v1_0.5 resnet20] [--epochs 15] [--jobs 2] [--out DIR]

A row whose model file exists is kept; one whose checkpoint (``OUT.pt.ckpt``) exists continues from it
(``compress prune --resume``), so a budget longer than a working session spans several.

Targets are the zoo presets (``admm-5x``, ``admm-10x``: zoo/make_nets.py says which layers stay dense and
why). With a budget of E epochs: ADMM runs E/3 ADMM iterations and 2E/3 epochs of masked retraining, RVSM
E/3 epochs and the same retrain, magnitude pruning one shot and E epochs of retraining. Every run is one
printed ``compress prune`` command (rerun any row alone); ``--smoke`` runs one step per epoch on 2,000
images to check the harness, not the methods.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PRESETS = {"mobilenet_v1_0.5": "admm-5x", "mobilenet_v1_0.25": "admm-5x", "resnet20": "admm-10x"}


def methods(epochs: int) -> dict[str, list[str]]:
    third = max(1, epochs // 3)
    return {"admm": ["--method", "admm", "--admm-iters", str(third), "--retrain-epochs", str(epochs - third)],
            "rvsm": ["--method", "rvsm", "--epochs", str(third), "--retrain-epochs", str(epochs - third)],
            "magnitude": ["--method", "magnitude", "--retrain-epochs", str(epochs)]}


def run(args: list[str], threads: int) -> float:
    print("$ compress " + " ".join(shlex.quote(a) for a in args), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    rc = subprocess.call([sys.executable, "-m", "compress.cli", *args], env=env)
    if rc != 0:
        sys.exit(f"command failed ({rc}): compress {' '.join(args)}")
    return time.perf_counter() - start


def _pct(a: float | None) -> str:
    return "-" if a is None else f"{a:.2%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mobilenet_v1_0.5", "resnet20"])
    ap.add_argument("--only", default="admm,rvsm,magnitude", help="Methods to run (comma-separated)")
    ap.add_argument("--epochs", type=int, default=15, help="The budget of every run")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="Threads per run")
    ap.add_argument("--out", type=Path, default=Path("runs/fmnist_prune"))
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extra = ["--max-steps", "1", "--limit", "2000"] if args.smoke else []
    jobs = []
    for model in args.models:
        name = Path(model).stem if Path(model).suffix in (".pt", ".caffemodel") else model  # a zoo name
        for method, flags in methods(args.epochs).items():
            if method not in args.only.split(","):
                continue
            out = args.out / f"{name}_{method}_{args.epochs}.pt"
            cmd = ["prune", model, "--data", "fashion-mnist", "--targets", PRESETS[name], *flags,
                   "-o", str(out), "--quiet", *extra]
            jobs.append((model, method, out, cmd))
    def go(job) -> float | None:
        """Run a row (None: its model file is there already); a row whose checkpoint is there continues."""
        out, cmd = job[2], job[3]
        if out.exists():
            return None
        ckpt = Path(f"{out}.ckpt")
        return run(["prune", "--resume", str(ckpt)] if ckpt.exists() else cmd, args.threads)

    with ThreadPoolExecutor(args.jobs) as pool:
        walls = list(pool.map(go, jobs))
    print("\n| model | method | epochs | weights kept | top-1 | baseline | change | wall (s) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (model, method, out, _), wall in zip(jobs, walls, strict=True):
        report = subprocess.run([sys.executable, "-m", "compress.cli", "report", str(out), "--json"],
                                capture_output=True, text=True, check=True)
        d = json.loads(report.stdout)
        before, after = d["accuracy_before"], d["accuracy_after"]
        change = "-" if before is None or after is None else f"{(after - before) * 100:+.2f}"
        print(f"| {model} | {method} | {args.epochs} | {d['compression']:.2f}x | {_pct(after)} "
              f"| {_pct(before)} | {change} | {'kept' if wall is None else f'{wall:.0f}'} |")
    for _, _, out, _ in jobs:
        print(f"\n$ compress report {out} --per-layer", flush=True)
        subprocess.call([sys.executable, "-m", "compress.cli", "report", str(out), "--per-layer"])


if __name__ == "__main__":
    main()
