"""Every pruning method on the same setup, side by side: the zoo LeNet on real MNIST, pruned to the ADMM
paper's per-layer ratios (``admm-71x``: conv1 20%, conv2 8%, ip1 0.9%, ip2 7%; the paper: 99.2% top-1
at 71.2x), then accuracy, weights kept and wall time of each full run. Further groups of rows: past 150x
(``admm-150x``: progressive ADMM, and one-shot ADMM and iterative magnitude with its 120-epoch budget;
``150x-100``: the earlier 3- and 2-stage schedules and their 100-epoch budget),
Han's iterative rounds against one-shot at 71x, RGSM against ADMM channel pruning at equal channel
counts (``--pcen 60 --sparsity channel``), the seed's four example commands as typed, and the RVSM/RGSM
seed variants (``--pull``, ``--reset``) at both learning-rate schedules. Runs with stages (progressive
ADMM, magnitude rounds) also print the test accuracy and training seconds at the end of each stage.

    python bench/lenet_methods.py [--group 71x|150x|150x-100|rounds|channel|seed|variants]
                                  [--only admm,magnitude] [--seeds 1,2,3] [--jobs 2] [--threads 1]
                                  [--flags '--augment shift'] [--out bench_out] [--smoke]
    python bench/lenet_methods.py --models A.pt B.pt ...   # the same table from models already pruned

``--seeds`` runs every row once per ``--seed`` value and adds, per row, the mean, min and max top-1 over
the seeds (the 71x default must hold on every run, not on a lucky one). ``--models`` renders rows for
pruned model files made elsewhere (their meta holds the hyperparameters, the seed and the per-epoch
history; the wall column is then the training seconds the history records).

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
# iterations + 45 retrain epochs at weight decay 1e-4, MNIST's default --augment shift) and
# `magnitude-60` the baseline with the same budget and data; the other rows are the paper's set-up,
# Caffe's MNIST recipe without augmentation (`admm-plain`: the same ADMM, 25 retrain epochs at 5e-4, as
# the README measured it).
RUNS = {
    "admm": ["--method", "admm", "--targets", "admm-71x"],
    "magnitude-60": ["--method", "magnitude", "--targets", "admm-71x", "--retrain-epochs", "60"],
    "admm-plain": ["--method", "admm", "--targets", "admm-71x", "--retrain-epochs", "25",
                   "--retrain-weight-decay", "5e-4", "--augment", "none"],
    "magnitude": ["--method", "magnitude", "--targets", "admm-71x", "--augment", "none"],
    "rvsm": ["--method", "rvsm", "--targets", "admm-71x", "--epochs", "5", "--retrain-epochs", "5",
             "--augment", "none"],
    "rgsm": ["--method", "rgsm", "--lamb1", "5e-2", "--lamb2", "1e-4", "--epochs", "4", "--augment", "none"],
    # past 150x: progressive ADMM with its defaults (4 stages of 15 ADMM iterations, 3 x 5 stage-retrain and
    # 45 retrain epochs: 120), and the same 120 epochs spent on one-shot ADMM and on iterative magnitude
    "admm-progressive-150x": ["--method", "admm", "--progressive", "--targets", "admm-150x"],
    "admm-150x-120": ["--method", "admm", "--targets", "admm-150x", "--retrain-epochs", "105"],
    "magnitude-rounds-150x-120": ["--method", "magnitude", "--targets", "admm-150x", "--rounds", "4",
                                  "--round-epochs", "30", "--retrain-epochs", "30"],
    # the earlier 100-epoch comparison: 3 stages (the default before 4), 2 stages, and their budget
    "admm-progressive-150x-3stages": ["--method", "admm", "--progressive", "--targets", "admm-150x",
                                      "--stages", "3"],
    "admm-progressive-150x-2stages": ["--method", "admm", "--progressive", "--targets", "admm-150x",
                                      "--stages", "2", "--stage-retrain", "10"],
    "admm-150x-100": ["--method", "admm", "--targets", "admm-150x", "--retrain-epochs", "85"],
    "magnitude-rounds-150x-100": ["--method", "magnitude", "--targets", "admm-150x", "--rounds", "3",
                                  "--round-epochs", "33", "--retrain-epochs", "34"],
    # Han's iterative schedule against one-shot, 30 epochs each
    "magnitude-30": ["--method", "magnitude", "--targets", "admm-71x", "--retrain-epochs", "30"],
    "magnitude-rounds-30": ["--method", "magnitude", "--targets", "admm-71x", "--rounds", "3",
                            "--round-epochs", "10", "--retrain-epochs", "10"],
    # channel pruning at equal channel counts (input channels: conv1 1 of 1, conv2 8 of 20, ip1 320 of 800,
    # ip2 200 of 500), 10 epochs each, every retrain at the method phase's weight decay (5e-4)
    "admm-channel-60": ["--method", "admm", "--pcen", "60", "--sparsity", "channel", "--admm-iters", "5",
                        "--retrain-epochs", "5", "--retrain-weight-decay", "5e-4"],
    "rgsm-channel-60": ["--method", "rgsm", "--pcen", "60", "--beta1", "1", "--lamb1", "5e-3", "--lamb2",
                        "2e-5", "--epochs", "5", "--retrain-epochs", "5"],
    "rgsm-strong-channel-60": ["--method", "rgsm", "--pcen", "60", "--lamb1", "5e-2", "--lamb2", "1e-4",
                               "--epochs", "5", "--retrain-epochs", "5"],
    "magnitude-channel-60": ["--method", "magnitude", "--pcen", "60", "--sparsity", "channel"],
    # the seed's four example commands, as typed (no other flag)
    "seed-default": ["--method", "default"],
    "seed-rvsm": ["--method", "rvsm", "--beta", "5e-2", "--lamb", "1e-5"],
    "seed-rgsm": ["--method", "rgsm", "--beta1", "1", "--lamb1", "5e-3", "--lamb2", "2e-5"],
    "seed-admm": ["--method", "admm", "--pcen", "60", "--sparsity", "channel"],
}
GROUPS = {"71x": ["admm", "magnitude-60", "admm-plain", "magnitude", "rvsm", "rgsm"],
          "150x": ["admm-progressive-150x", "admm-150x-120", "magnitude-rounds-150x-120"],
          "150x-100": ["admm-progressive-150x-3stages", "admm-progressive-150x-2stages", "admm-150x-100",
                       "magnitude-rounds-150x-100"],
          "rounds": ["magnitude-30", "magnitude-rounds-30"],
          "channel": ["admm-channel-60", "rgsm-channel-60", "rgsm-strong-channel-60", "magnitude-channel-60"],
          "seed": ["seed-default", "seed-rvsm", "seed-rgsm", "seed-admm"], "variants": []}
# the RVSM/RGSM seed variants side by side: 5 epochs, the seed README's flags, both schedules
SEED_FLAGS = {"rvsm": ["--beta", "5e-2", "--lamb", "1e-5"], "rgsm": ["--beta1", "1", "--lamb1", "5e-3",
                                                                      "--lamb2", "2e-5"]}
for _m, _flags in SEED_FLAGS.items():
    for _sched in ("cosine", "constant"):
        for _pull in ("optimizer", "seed"):
            for _reset in ("never", "epoch"):
                GROUPS["variants"].append(f"{_m}-{_sched}-{_pull}-{_reset}")
                RUNS[f"{_m}-{_sched}-{_pull}-{_reset}"] = [
                    "--method", _m, *_flags, "--epochs", "5", "--lr-schedule", _sched, "--pull", _pull,
                    "--reset", _reset]
SMOKE = ["--limit", "2000", "--max-steps", "3"]


def smoke_flags(flags: list[str]) -> list[str]:
    """A row's flags with every epoch count set to 1 (the row's own values of those flags dropped)."""
    method = flags[flags.index("--method") + 1]
    ones = ["--retrain-epochs"] + {"admm": ["--admm-iters"], "magnitude": []}.get(method, ["--epochs"])
    ones += ["--stage-retrain"] * ("--progressive" in flags) + ["--round-epochs"] * ("--rounds" in flags)
    out = [f for i, f in enumerate(flags) if f not in ones and (i == 0 or flags[i - 1] not in ones)]
    return [*out, *SMOKE, *(x for flag in ones for x in (flag, "1"))]


def run_one(name: str, flags: list[str], out: Path, threads: int, smoke: bool) -> dict:
    model = out / f"lenet_{name}.pt"
    argv = [sys.executable, "-m", "compress.cli", "prune", "lenet", "--data", "mnist",
            *(smoke_flags(flags) if smoke else flags), "--quiet", "-o", str(model)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"name": name, "flags": flags, "error": proc.stderr.strip().splitlines()[-1:]}
    return {"name": name, "flags": flags, "wall": wall, **summarize(model)}


def from_model(path: Path) -> dict:
    """A row for a model pruned elsewhere: its flags told by its meta (method, seed, epochs)."""
    from compress.modelfile import load_model

    meta = load_model(str(path)).meta
    hp = meta.get("hyperparameters", {})
    flags = [f"--method {meta.get('method')}", f"--seed {hp.get('seed')}"]
    if hp.get("progressive"):
        flags.append(f"--progressive --stages {hp.get('stages')} --stage-retrain {hp.get('stage_retrain')}")
    if (hp.get("rounds") or 1) > 1:
        flags.append(f"--rounds {hp['rounds']} --round-epochs {hp.get('round_epochs')}")
    flags.append(f"--retrain-epochs {hp.get('retrain_epochs')}")
    if hp.get("retrain_weight_decay") is not None:
        flags.append(f"--retrain-weight-decay {hp['retrain_weight_decay']:g}")
    row = summarize(path)
    same = " ".join(f for f in flags if not f.startswith("--seed"))  # runs that differ only in the seed
    return {"name": path.stem, "flags": [*flags, f"({path.name})"], "seed": hp.get("seed"), "row": same,
            "wall": row["s_per_epoch"] * row["epochs"], **row}


def spread(rows: list[dict]) -> list[str]:
    """Per row run under several seeds: mean, min and max top-1 over them."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        if "error" not in r and r.get("seed") is not None:
            by.setdefault(r["row"], []).append(r)
    out = []
    for name, rs in by.items():
        if len(rs) > 1:
            acc = [r["after"] for r in rs]
            out.append(f"{name} over seeds {', '.join(str(r['seed']) for r in rs)}: top-1 mean "
                       f"{sum(acc) / len(acc):.2%}, min {min(acc):.2%}, max {max(acc):.2%}")
    return out


def summarize(path: Path) -> dict:
    from compress.modelfile import load_model
    from compress.report.rows import layer_rows, total_row

    model = load_model(str(path))
    total = total_row(layer_rows(model.net))  # the report's counts: weights, nonzero, input channels
    history = model.meta.get("history") or []
    train_s = sum(h["seconds"] for h in history)
    return {"before": model.meta.get("accuracy_before"), "after": model.meta.get("accuracy_after"),
            "kept": total.nonzero, "total": total.weights, "groups": total.channels,
            "zero_groups": total.channels - total.channels_kept, "stages": stages(history),
            "epochs": len(history), "s_per_epoch": train_s / len(history) if history else 0.0}


def stages(history: list[dict]) -> list[tuple[str, float | None, float]]:
    """(stage, test top-1 at its last epoch, training seconds) for runs with stages (progressive ADMM's
    ``stage``, magnitude's ``round``); the final retrain is the last stage's end."""
    key = "stage" if any("stage" in h for h in history) else "round" if any("round" in h for h in history) \
        else None
    if key is None:
        return []
    out: dict[str, list] = {}
    for h in history:
        name = f"{key} {h[key]}" if key in h else "retrain"
        acc, secs = out.get(name, [None, 0.0])
        out[name] = [h.get("test_acc"), secs + h["seconds"]]
    return [(name, acc, secs) for name, (acc, secs) in out.items()]


def render(rows: list[dict], jobs: int, threads: int | None) -> str:
    how = (f"{jobs} run(s) at a time, {threads} thread(s) each" if threads else
           "models pruned elsewhere, wall = the training seconds in their history")
    lines = [f"LeNet on MNIST from the zoo LeNet; {how}.",
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
    for r in rows:
        if r.get("stages"):
            parts = "; ".join(f"{name}: {'n/a' if acc is None else f'{acc:.2%}'} after {secs:.0f} s"
                              for name, acc, secs in r["stages"])
            lines.append(f"\n{r['name']} by stage (top-1 at its end, training seconds): {parts}")
    for line in spread(rows):
        lines.append(f"\n{line}")
    base = next((r["before"] for r in rows if r.get("before") is not None), None)
    if base is not None:
        lines.append(f"\nDense zoo LeNet: {base:.2%} top-1.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1, help="runs at once (threads are split between them)")
    p.add_argument("--threads", type=int, help="torch threads per run [cores / jobs]")
    p.add_argument("--group", default="71x", choices=list(GROUPS), help="a group of rows [71x]")
    p.add_argument("--only", help="comma-separated runs instead of a group: " + ", ".join(RUNS))
    p.add_argument("--out", default="bench_out", help="folder for the pruned models and their logs")
    p.add_argument("--flags", default="", help="extra prune flags for every run, e.g. '--augment shift'")
    p.add_argument("--seeds", help="comma-separated --seed values: every row once per seed, with the "
                                   "mean/min/max top-1 over them")
    p.add_argument("--models", nargs="+", type=Path, help="render rows for these pruned models (no runs)")
    p.add_argument("--smoke", action="store_true", help="a few steps per run: checks the harness only")
    a = p.parse_args()
    if a.models:
        print(render([from_model(m) for m in a.models], 1, None))
        return
    names = a.only.split(",") if a.only else GROUPS[a.group]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        sys.exit(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    runs = {n: [*RUNS[n], *a.flags.split()] for n in names}
    if a.seeds:
        runs = {f"{n}-s{s}": [*runs[n], "--seed", s] for n in names for s in a.seeds.split(",")}
        names = list(runs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = max(1, min(a.jobs, len(names)))
    threads = a.threads or max(1, (os.cpu_count() or 1) // jobs)
    for n in names:
        print(f"{n}: compress prune lenet --data mnist {' '.join(runs[n])}", flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        rows = list(pool.map(lambda n: run_one(n, runs[n], out, threads, a.smoke), names))
    for r in rows:  # the row a seeded run belongs to, for the spread over seeds
        if a.seeds:
            r["row"], r["seed"] = r["name"].rsplit("-s", 1)
    print(render(rows, jobs, threads))
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
