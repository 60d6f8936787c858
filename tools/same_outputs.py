"""Run the LeNet smoke runs of every method and ``compress train`` of the real-Caffe LeNet reference with
the code of one source tree, and compare two such runs bit for bit (issue 21: the engine's move keeps
outputs identical).

    python -m tools.same_outputs run OUT [--src DIR] [--only NAME ...]   # the code at DIR (default: here)
    python -m tools.same_outputs compare A B                             # exit 1 on any difference

``run`` writes ``OUT/<name>/`` for each run (model file, checkpoint where kept, JSON-lines log, stdout).
Every run is on the CPU with one thread and a fixed seed. ``compare`` loads each model file and
checkpoint with ``torch.load(weights_only=True)`` and compares every tensor bit for bit (dtype, shape,
bytes) and every other value exactly, except the keys that record wall time or the date (listed in
``VOLATILE``); logs line by line the same way; ``.caffemodel`` files byte for byte; and the printed output
with the durations masked. ``compress train`` needs the reference run (``$COMPRESS_SHARED/reference``,
default ``../shared``); without it that run is skipped and said.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNIST = ("--data", "mnist", "--limit", "2000", "--max-steps", "5", "--seed", "3", "--device", "cpu",
         "--threads", "1", "--checkpoint-every", "0")
PRUNE = ("prune", "lenet", *MNIST)
QUANT = ("quantize", "lenet", "--bits", "4", *MNIST)

#: name -> compress arguments (the model file is ``-o model.pt`` inside the run's folder)
RUNS: dict[str, tuple[str, ...]] = {
    "admm-elem": (*PRUNE, "--method", "admm", "--admm-iters", "2", "--retrain-epochs", "2",
                  "--keep-checkpoint"),
    "admm-channel": (*PRUNE, "--method", "admm", "--sparsity", "channel", "--admm-iters", "2",
                     "--retrain-epochs", "1"),
    "admm-progressive": (*PRUNE, "--method", "admm", "--progressive", "--stages", "2", "--admm-iters", "1",
                         "--stage-retrain", "1", "--retrain-epochs", "1", "--keep-checkpoint"),
    "admm-distill": (*PRUNE, "--method", "admm", "--admm-iters", "1", "--retrain-epochs", "1",
                     "--distill", "0.5", "--optimizer", "adam"),
    "rvsm": (*PRUNE, "--method", "rvsm", "--pcen", "80", "--epochs", "2", "--retrain-epochs", "1"),
    "rgsm": (*PRUNE, "--method", "rgsm", "--pcen", "80", "--epochs", "2", "--retrain-epochs", "1",
             "--keep-checkpoint"),
    "magnitude": (*PRUNE, "--method", "magnitude", "--pcen", "80", "--rounds", "2", "--round-epochs", "1",
                  "--retrain-epochs", "1"),
    "default": (*PRUNE, "--method", "default", "--pcen", "80", "--epochs", "1", "--retrain-epochs", "1"),
    "quant-qgt": (*QUANT, "--method", "qgt", "--epochs", "2", "--keep-checkpoint"),
    "quant-admm": (*QUANT, "--method", "admm", "--admm-iters", "2"),
    "quant-ptq": ("quantize", "lenet", "--bits", "4", "--method", "ptq", "--data", "mnist", "--limit", "2000",
                  "--device", "cpu", "--threads", "1"),
}
SOLVER_RUNS = ("train", "prune-solver")  # need the reference run and its LMDBs

#: keys whose values are wall time or dates (compared for presence only)
VOLATILE = {"created", "seconds", "images_per_s", "cwd"}
#: durations and speeds in the printed output
DURATION = re.compile(r"\d+(\.\d+)?\s*(iter/s|it/s|s/it|ms|min|s)\b")
#: the run's own inputs (written by ``run``, with its folder's path in them), not compared
INPUTS = ("solver.prototxt", "train_val.prototxt")


def _shared() -> Path:
    return Path(os.environ.get("COMPRESS_SHARED", ROOT.parent / "shared"))


def _compress(src: Path, args: tuple[str, ...], cwd: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", COMPRESS_DEBUG="1")
    main = "import sys; from compress.cli import main; sys.argv[0] = 'compress'; main()"
    cmd = [sys.executable, "-c", main, *args]
    with open(cwd / "stdout.txt", "w") as out:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"{cwd.name}: compress {' '.join(args)} exited {proc.returncode}; "
                         f"see {cwd / 'stdout.txt'}")


def _reference_setup(src: Path, out: Path) -> Path | None:
    """The reference solver and net with ``@L`` replaced by LMDBs written once under ``out/lmdb``."""
    ref = _shared() / "reference" / "caffe_train" / "lenet"
    if not ref.is_dir():
        print(f"no reference run at {ref}: the solver runs are skipped")
        return None
    lmdb = out / "lmdb"
    if not (lmdb / "mnist_train_lmdb").is_dir():
        env = dict(os.environ, PYTHONPATH=str(src))
        subprocess.run([sys.executable, "-m", "compress.data.caffe.mnist_lmdb", str(lmdb)], env=env,
                       check=True)
    return ref


def run(out: Path, src: Path, only: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = only or [*RUNS, *SOLVER_RUNS]
    ref = _reference_setup(src, out) if set(names) & set(SOLVER_RUNS) else None
    for name in names:
        d = out / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        if name in RUNS:
            args = (*RUNS[name], "-o", "model.pt")
        elif ref is None:
            continue
        else:
            for f in ("solver.prototxt", "train_val.prototxt"):
                (d / f).write_text((ref / f).read_text().replace("@L", str((out / "lmdb").resolve())))
            if name == "train":
                args = ("train", "solver.prototxt", "--weights", str(ref / "init.caffemodel"), "--max-iter",
                        "50", "-o", "lenet.caffemodel", "--log", "log.jsonl", "--device", "cpu", "--threads",
                        "1")
            else:
                args = ("prune", str(ref / "init.caffemodel"), "--prototxt",
                        str(src / "zoo" / "lenet.prototxt"), "--solver", "solver.prototxt", "--max-iter", "5",
                        "--method", "admm", "--admm-iters", "1", "--retrain-epochs", "1", "--device", "cpu",
                        "--threads", "1", "-o", "model.pt", "--checkpoint-every", "0")
        print(f"{name}: compress {' '.join(args)}", flush=True)
        _compress(src, args, d)


# -- compare ---------------------------------------------------------------------------------------------

def _diff(a, b, where: str, out: list[str]) -> None:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            other = b if isinstance(a, torch.Tensor) else a
            out.append(f"{where}: a tensor against {type(other).__name__}")
        elif a.dtype != b.dtype or a.shape != b.shape:
            out.append(f"{where}: {a.dtype} {tuple(a.shape)} against {b.dtype} {tuple(b.shape)}")
        elif _bytes(a) != _bytes(b):
            diff = (a.double() - b.double()).abs().max().item()
            out.append(f"{where}: values differ (max |diff| {diff:.3g})")
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{where}/{k}: only in {'A' if k in a else 'B'}")
            elif str(k) not in VOLATILE:
                _diff(a[k], b[k], f"{where}/{k}", out)
        return
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} items against {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{where}[{i}]", out)
        return
    if isinstance(a, str) and isinstance(b, str) and a[:1] in "{[" and a != b:
        try:
            _diff(json.loads(a), json.loads(b), f"{where}(json)", out)
            return
        except ValueError:
            pass
    if type(a) is not type(b) or a != b:
        if not (isinstance(a, float) and isinstance(b, float) and a != a and b != b):  # NaN == NaN here
            out.append(f"{where}: {a!r:.80} against {b!r:.80}")


def _bytes(t) -> bytes:
    """A tensor's bytes as stored (bit for bit: -0.0 and 0.0 differ, NaN payloads count)."""
    import torch

    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _printed(path: Path) -> list[str]:
    return [DURATION.sub("<t>", line) for line in path.read_text().splitlines()]


def compare(a: Path, b: Path) -> int:
    import torch

    bad = 0
    names = sorted({p.name for p in a.iterdir() if p.is_dir() and p.name != "lmdb"}
                   | {p.name for p in b.iterdir() if p.is_dir() and p.name != "lmdb"})
    for name in names:
        files = sorted({f.relative_to(a / name) for f in (a / name).rglob("*") if f.is_file()}
                       | {f.relative_to(b / name) for f in (b / name).rglob("*") if f.is_file()}, key=str)
        for rel in files:
            if rel.name in INPUTS:
                continue
            fa, fb = a / name / rel, b / name / rel
            out: list[str] = []
            if not fa.is_file() or not fb.is_file():
                out.append(f"only in {'A' if fa.is_file() else 'B'}")
            elif rel.suffix in (".pt", ".ckpt"):
                _diff(torch.load(fa, weights_only=True), torch.load(fb, weights_only=True), "", out)
            elif rel.suffix == ".jsonl":
                _diff(_lines(fa), _lines(fb), "", out)
            elif rel.name == "stdout.txt":
                _diff(_printed(fa), _printed(fb), "", out)
            elif fa.read_bytes() != fb.read_bytes():
                out.append("bytes differ")
            kind = "identical" if not out else "DIFFERENT"
            print(f"{name}/{rel}: {kind}")
            for line in out[:10]:
                print(f"    {line}")
            bad += bool(out)
    print(f"{'no difference' if not bad else f'{bad} file(s) differ'}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.same_outputs", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run every listed command with the code at --src into OUT")
    r.add_argument("out", type=Path)
    r.add_argument("--src", type=Path, default=ROOT)
    r.add_argument("--only", nargs="*", default=[], choices=[*RUNS, *SOLVER_RUNS])
    c = sub.add_parser("compare", help="compare two run folders; exit 1 on any difference")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "run":
        run(args.out, args.src.resolve(), args.only)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
