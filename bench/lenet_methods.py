"""Every pruning method on the same setup, side by side: the zoo LeNet on real MNIST, pruned to the ADMM
paper's per-layer ratios (``admm-71x``: conv1 20%, conv2 8%, ip1 0.9%, ip2 7%; the paper: 99.2% top-1
at 71.2x), then accuracy, weights kept and wall time of each full run.

    python bench/lenet_methods.py [--jobs 2] [--threads 1] [--only admm,magnitude] [--flags '--augment shift']
                                  [--out bench_out] [--smoke]

Each run is one ``compress prune lenet --data mnist ...`` process (the command is printed, so any row
can be rerun alone); ``--jobs N`` runs N at once with ``torch`` threads split between them (the
default, 1 job, gives every run all cores). Wall times are of this run on this machine: runs that
share the machine are slower than alone, so compare seconds per epoch within one table only.
``--smoke`` trains a few steps on 2,000 images to check the harness, not the methods.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PAPER = "ADMM paper (Zhang et al. 2018): 99.2% top-1 at 71.2x"

# name -> flags after `compress prune lenet --data mnist`. `admm` is the tool's defaults (15 ADMM
# iterations + 45 retrain epochs, MNIST's default --augment shift) and `magnitude-60` the baseline with
# the same budget and data; the other rows are the paper's set-up, Caffe's MNIST recipe without
# augmentation (`admm-plain`: the same ADMM, 25 retrain epochs).
RUNS = {
    "admm": ["--method", "admm", "--targets", "admm-71x"],
    "magnitude-60": ["--method", "magnitude", "--targets", "admm-71x", "--retrain-epochs", "60"],
    "admm-plain": ["--method", "admm", "--targets", "admm-71x", "--retrain-epochs", "25",
                   "--augment", "none"],
    "magnitude": ["--method", "magnitude", "--targets", "admm-71x", "--augment", "none"],
    "rvsm": ["--method", "rvsm", "--targets", "admm-71x", "--epochs", "5", "--retrain-epochs", "5",
             "--augment", "none"],
    "rgsm": ["--method", "rgsm", "--lamb1", "5e-2", "--lamb2", "1e-4", "--epochs", "4", "--augment", "none"],
}
SMOKE = ["--limit", "2000", "--max-steps", "3", "--admm-iters", "1", "--retrain-epochs", "1", "--epochs", "1"]


def run_one(name: str, flags: list[str], out: Path, threads: int, smoke: bool) -> dict:
    model = out / f"lenet_{name}.pt"
    argv = [sys.executable, "-m", "compress.cli", "prune", "lenet", "--data", "mnist", *flags,
            *(SMOKE if smoke else []), "--quiet", "-o", str(model)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"name": name, "flags": flags, "error": proc.stderr.strip().splitlines()[-1:]}
    return {"name": name, "flags": flags, "wall": wall, **summarize(model)}


def summarize(path: Path) -> dict:
    from compress.modelfile import load_model
    from compress.report.rows import layer_rows, total_row

    model = load_model(str(path))
    total = total_row(layer_rows(model.net))  # the report's counts: weights, nonzero, input channels
    history = model.meta.get("history") or []
    train_s = sum(h["seconds"] for h in history)
    return {"before": model.meta.get("accuracy_before"), "after": model.meta.get("accuracy_after"),
            "kept": total.nonzero, "total": total.weights, "groups": total.channels,
            "zero_groups": total.channels - total.channels_kept,
            "epochs": len(history), "s_per_epoch": train_s / len(history) if history else 0.0}


def render(rows: list[dict], jobs: int, threads: int) -> str:
    lines = [f"LeNet on MNIST from the zoo LeNet; {jobs} run(s) at a time, {threads} thread(s) each.",
             PAPER + ".", "",
             "| method | flags (after `compress prune lenet --data mnist`) | epochs | top-1 | weights kept "
             "| compression | input channels removed | wall | s/epoch |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        flags = " ".join(r["flags"])
        if "error" in r:
            lines.append(f"| {r['name']} | `{flags}` | failed: {' '.join(r['error'])} |")
            continue
        lines.append(f"| {r['name']} | `{flags}` | {r['epochs']} | {r['after']:.2%} "
                     f"| {r['kept']:,} of {r['total']:,} | {r['total'] / r['kept']:.1f}x "
                     f"| {r['zero_groups']} of {r['groups']} | {r['wall']:.0f} s | {r['s_per_epoch']:.1f} |")
    base = next((r["before"] for r in rows if r.get("before") is not None), None)
    if base is not None:
        lines.append(f"\nDense zoo LeNet: {base:.2%} top-1.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1, help="runs at once (threads are split between them)")
    p.add_argument("--threads", type=int, help="torch threads per run [cores / jobs]")
    p.add_argument("--only", help="comma-separated subset of: " + ", ".join(RUNS))
    p.add_argument("--out", default="bench_out", help="folder for the pruned models and their logs")
    p.add_argument("--flags", default="", help="extra prune flags for every run, e.g. '--augment shift'")
    p.add_argument("--smoke", action="store_true", help="a few steps per run: checks the harness only")
    a = p.parse_args()
    names = a.only.split(",") if a.only else list(RUNS)
    runs = {n: [*RUNS[n], *a.flags.split()] for n in RUNS}
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        sys.exit(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = max(1, min(a.jobs, len(names)))
    threads = a.threads or max(1, (os.cpu_count() or 1) // jobs)
    for n in names:
        print(f"{n}: compress prune lenet --data mnist {' '.join(runs[n])}", flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        rows = list(pool.map(lambda n: run_one(n, runs[n], out, threads, a.smoke), names))
    print(render(rows, jobs, threads))
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
