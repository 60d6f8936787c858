"""The seed's quantization table in its own columns, on the zoo's Fashion-MNIST MobileNets: for MobileNet-v1
at width 0.5 and 0.25, rows baseline, PTQ 8/4/2, QGT 4/2 and ADMM 4/2, with ``Method | alpha | num_bits |
Size (KB) | Accuracy | AUC | AP | f1`` (the seed's table; AUC/AP/f1 macro one-vs-rest over the 10 classes).

Every row is one printed command (``$ compress quantize MODEL --bits B --method M --data fashion-mnist -o
...``, each at its default schedule), and the table is ``compress report --quant-table`` over the rows'
model files (each exported as ``compress export`` writes it and evaluated through onnxruntime on the 10,000
Fashion-MNIST test images):

    .venv/bin/python bench/fmnist_table.py --out runs/fmnist_table [--models mobilenet_v1_0.5 ...]

Model files already in ``--out`` are kept (delete one to redo its row), a row whose checkpoint
(``OUT.pt.ckpt``) is there continues from it (``compress quantize --resume``); ``--smoke`` gives the
training rows ``--max-steps 5`` and evaluates on the first 500 test images (a check of the pipeline,
not the table).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

METHODS = [("ptq", 8), ("ptq", 4), ("qgt", 4), ("ptq", 2), ("qgt", 2), ("admm", 4), ("admm", 2)]
DATA = "fashion-mnist"


def compress(args: list[str], threads: int) -> None:
    """Print ``$ compress ARGS`` and run it."""
    print("$ compress " + " ".join(shlex.quote(a) for a in args), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    rc = subprocess.call([sys.executable, "-m", "compress.cli", *args], env=env)
    if rc != 0:
        sys.exit(f"command failed ({rc}): compress {' '.join(args)}")


def rows(source: str, out: Path, threads: int, smoke: bool, methods: list[tuple[str, int]]) -> list[str]:
    path = Path(source)
    tag = (path.stem if path.suffix in (".pt", ".caffemodel", ".onnx") else path.name).replace(".", "_")
    models = [source]
    for method, bits in methods:
        target = out / f"{tag}_{method}{bits}.pt"
        models.append(str(target))
        if target.exists():
            print(f"# kept {target}", flush=True)
            continue
        ckpt = Path(f"{target}.ckpt")
        if ckpt.exists():  # a row a previous session started: continue it
            compress(["quantize", "--resume", str(ckpt)], threads)
            continue
        args = ["quantize", source, "--bits", str(bits), "--method", method, "--data", DATA,
                "-o", str(target)]
        if method != "ptq":
            args += ["--quiet"] + (["--max-steps", "5"] if smoke else [])
        elif smoke:
            args += ["--limit", "500"]
        compress(args, threads)
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="Directory for the model files and the table")
    ap.add_argument("--models", nargs="+", default=["mobilenet_v1_0.5", "mobilenet_v1_0.25"],
                    help="Baselines (zoo names or model files)")
    ap.add_argument("--threads", type=int, default=1, help="Threads per command (OMP_NUM_THREADS)")
    ap.add_argument("--smoke", action="store_true", help="--max-steps 5 and 500 test images")
    ap.add_argument("--rows", nargs="+", metavar="METHOD:BITS", default=[f"{m}:{b}" for m, b in METHODS],
                    help="Rows besides the baseline, in order (default: all)")
    args = ap.parse_args()
    methods = [(r.split(":")[0], int(r.split(":")[1])) for r in args.rows]
    args.out.mkdir(parents=True, exist_ok=True)
    models = [m for source in args.models for m in rows(source, args.out, args.threads, args.smoke, methods)]
    table = args.out / "fmnist_table.md"
    if table.exists():
        table.unlink()
    compress(["report", "--quant-table", *models, "--data", DATA, "-o", str(table)]
             + (["--limit", "500"] if args.smoke else []), args.threads)
    print(table.read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    main()
