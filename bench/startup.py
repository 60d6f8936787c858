"""Start-up of the commands that should answer at once, side by side with ``python -c pass``.

Each command runs in a fresh interpreter, ``--repeat`` times, interleaved with the others (so a change in
the machine's load hits every command alike); CPU time is the child's user + system time (``wait4``),
wall time is measured around it. Printed: the median of each and its ratio to ``python -c pass``, the
load average before and after (the machine is shared: only ratios measured in one run mean anything).
``import torch`` is timed too, as the cost these commands no longer pay.

    python bench/startup.py [--repeat 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys; from compress.cli import main; sys.exit(main())"  # what the `compress` script runs


def commands(model_file: str) -> list[tuple[str, list[str]]]:
    cli = [sys.executable, "-c", CLI]
    return [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("compress --help", [*cli, "--help"]),
        ("compress zoo list", [*cli, "zoo", "list"]),
        ("compress info lenet", [*cli, "info", "lenet"]),
        ("compress info lenet.pt", [*cli, "info", model_file]),
        ("compress prune --bogus", [*cli, "prune", "--bogus"]),
        ("compress quantize lenet (no --bits)", [*cli, "quantize", "lenet"]),
        ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
    ]


def run_once(argv: list[str]) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, exit status) of one run of ``argv``, its output discarded."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return usage.ru_utime + usage.ru_stime, wall, child.returncode


def make_model_file(directory: str) -> str:
    """A small model file (the zoo LeNet, 1.7 MB) written by ``compress convert``."""
    path = str(Path(directory) / "lenet.pt")
    subprocess.run([sys.executable, "-c", CLI, "convert", "zoo/lenet.caffemodel", "-o", path], cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(make_model_file(tmp))
        load_before = os.getloadavg()
        times: dict[str, list[tuple[float, float, int]]] = {name: [] for name, _ in cmds}
        for _ in range(args.repeat):
            for name, argv in cmds:
                times[name].append(run_once(argv))
        load_after = os.getloadavg()
    print(f"start-up, {args.repeat} runs of each, interleaved; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after, on {os.cpu_count()} CPUs")
    base_cpu = statistics.median(t[0] for t in times["python -c pass"])
    base_wall = statistics.median(t[1] for t in times["python -c pass"])
    header = ("command", "exit", "CPU s", "x pass", "wall s", "x pass")
    rows = []
    for name, runs in times.items():
        cpu, wall = statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs)
        codes = sorted({t[2] for t in runs})
        rows.append((name, ",".join(map(str, codes)), f"{cpu:.3f}", f"{cpu / base_cpu:.1f}", f"{wall:.3f}",
                     f"{wall / base_wall:.1f}"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        cells = (v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
        print("  ".join(cells))
    print("(medians; CPU = user + system time of the child)")


if __name__ == "__main__":
    main()
