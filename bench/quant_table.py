"""The seed's quantization table on our own models: LeNet/MNIST from the zoo model and from the 71.2x ADMM
model, rows baseline, PTQ 8/4/2, QGT 4/2, ADMM 4/2; Size (KB) of the exported ONNX file and top-1 of that
file through onnxruntime over the full MNIST test set.

Every row is made by the command line, and each command is printed before it runs (``$ compress ...``),
so the table can be reproduced by hand; the table itself is ``compress report --quant-table`` over the
rows' model files (it exports each one as ``compress export`` does and evaluates the file with
onnxruntime, as ``compress eval`` does):

    .venv/bin/python bench/quant_table.py --out runs/quant [--pruned lenet_admm71.pt] [--threads 1]

Without ``--pruned`` the 71.2x model is made first with the README's main job
(``compress prune lenet --method admm --targets admm-71x --data mnist``, about an hour on one core).
Model files that already exist in ``--out`` are kept (delete them to redo a row); ``--smoke`` passes
``--max-steps 5`` to the training rows (a quick check of the pipeline, not the table).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

METHODS = [("ptq", 8), ("ptq", 4), ("ptq", 2), ("qgt", 4), ("qgt", 2), ("admm", 4), ("admm", 2)]


def compress(args: list[str], threads: int) -> None:
    """Print ``$ compress ARGS`` and run it (the installed entry point of this interpreter's venv)."""
    print("$ compress " + " ".join(shlex.quote(a) for a in args), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    rc = subprocess.call([sys.executable, "-m", "compress.cli", *args], env=env)
    if rc != 0:
        sys.exit(f"command failed ({rc}): compress {' '.join(args)}")


def rows(source: str, tag: str, out: Path, threads: int, smoke: bool) -> list[str]:
    """The model files of one source's rows (baseline first), quantizing where missing."""
    models = [source]
    for method, bits in METHODS:
        target = out / f"{tag}_{method}{bits}.pt"
        models.append(str(target))
        if target.exists():
            print(f"# kept {target}", flush=True)
            continue
        args = ["quantize", source, "--bits", str(bits), "--method", method, "--data", "mnist",
                "-o", str(target)]
        if method != "ptq":
            args += ["--quiet"] + (["--max-steps", "5"] if smoke else [])
        compress(args, threads)
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="Directory for the model files and the table")
    ap.add_argument("--pruned", help="The 71.2x ADMM LeNet (default: made with compress prune)")
    ap.add_argument("--threads", type=int, default=1, help="Threads per command (OMP_NUM_THREADS)")
    ap.add_argument("--smoke", action="store_true", help="--max-steps 5 for the training rows")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pruned = args.pruned
    if pruned is None:
        pruned = str(args.out / "lenet_admm71.pt")
        if not Path(pruned).exists():
            compress(["prune", "lenet", "--method", "admm", "--targets", "admm-71x", "--data", "mnist",
                      "-o", pruned, "--quiet"], args.threads)
    models = rows("lenet", "zoo", args.out, args.threads, args.smoke)
    models += rows(pruned, "admm71", args.out, args.threads, args.smoke)
    table = args.out / "quant_table.md"
    if table.exists():
        table.unlink()
    compress(["report", "--quant-table", *models, "--data", "mnist", "-o", str(table)], args.threads)
    print(table.read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    main()
