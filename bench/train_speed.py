"""``compress train`` on Caffe's LeNet solver against a plain PyTorch loop doing the same steps, and as whole
runs against real Caffe and under torchrun.

    python bench/train_speed.py [--iters 300] [--rounds 3] [--threads 1,2]
    python bench/train_speed.py --whole-only --rounds 2 --ranks 2 [--baseline OTHER_CHECKOUT] \
        --caffe "chroot /srv/caffe /usr/bin/caffe" --caffe-root /srv/caffe

Both train BVLC's LeNet (batch 64; SGD, momentum 0.9, weight decay 5e-4, ``inv`` policy) on MNIST:
``compress train`` reads the solver and the train_val over an LMDB (built once from the project's MNIST,
or from random digits when the MNIST file is missing) through the whole front door (data layer feeder,
TRAIN-phase net with its loss layer, Caffe's solver, per-iteration JSON log, display off); the plain
loop runs an ``nn.Sequential`` LeNet on in-memory tensors with ``F.cross_entropy`` and
``torch.optim.SGD``. They alternate ``--rounds`` times per thread count so that load from other
processes hits both alike; the median iterations per second and their ratio are printed.
Goal: ``compress train`` within 10% of the plain loop (real Caffe 1.0 on this CPU: 32-35 it/s with one
BLAS thread, 23-26 with two; a plain PyTorch loop 32-35 / 48-51).

Whole runs (``--caffe``, ``--ranks``, ``--baseline``): BVLC's LeNet solver with its TEST net (a test pass
of 100 batches of 100 every 500 iterations) as whole processes at one thread each, 200 and 1,400
iterations (``--whole``), alternating; it/s = 1,200 / (t_1400 - t_200), start-up = t_200 - 200 / rate (it
holds the test pass at iteration 0 and the process's exit). A torchrun row counts images: each rank reads
its own batch of 64. Real Caffe: a Debian bullseye chroot (``debootstrap bullseye DIR``, then ``apt-get
install caffe libopenblas0-pthread`` inside; mount /proc in it), run with ``OPENBLAS_NUM_THREADS=1``.
Measured 2026-12-07 on the 2-core machine while three other training runs used it (load average 5.0-7.3,
so only the ratios mean anything), ``--rounds 2``:

    run                           it/s  images/s  start-up s  x first
    caffe 1.0                     31.7      2027        4.44     1.00
    compress train                36.6      2340        9.27     1.15
    compress train (2bb94dc)      30.7      1967       10.44     0.97
    compress train, 2 ranks       17.4      2229        8.30     1.10

After conv2 (20 input channels) went channels-last (converters/caffe/layers/conv.py), 2026-12-08, same
machine and loads, ``--baseline`` a checkout of 53afbf4 (before it); ``--rounds 3`` at load average 4.1-5.0,
then ``--rounds 2`` at 5.0-5.7 (the ratio to Caffe moves with the load; the one to 53afbf4 is 1.14-1.22x):

    run                           it/s  images/s  start-up s  x first  | it/s  x first
    caffe 1.0                     31.4      2009        1.27     1.00  | 32.1     1.00
    compress train                42.4      2712        4.70     1.35  | 37.8     1.18
    compress train (53afbf4)      37.2      2379        4.68     1.18  | 31.0     0.97

Its sums run in another order, so the weights differ from 53afbf4's in the last bits; the checks against
real Caffe's run (tests/test_train_solver.py, tests/test_solver_lenet_reference.py) hold at their tolerances.

After the extra TEST pass after training went (the trainer's final evaluation, which Caffe does not do) and
the layers stopped importing ``torch.onnx`` (2026-12-08, ``--rounds 2``, load average 3.7-4.6; the 1-iteration
run is the start-up the issue asks for, import to first iteration, plus one step and the exit):

    run                           it/s  images/s  start-up s  x first  1-iter wall  1-iter CPU
    caffe 1.0                     18.2      1168        4.06     1.00         0.24        0.13
    compress train                23.3      1490        8.22     1.28         3.65        1.98

With the other runs paused (the machine otherwise idle; load average 1.0-2.1, ``--rounds 3``), same code:
caffe 1.0 37.0 it/s, compress train 46.6 (**1.26x**), 1-iteration run 0.17 s against **1.84 s** wall (1.82 s
CPU; ``python -c "import torch"`` alone: 1.36-1.48 s wall). Then channels-last blobs were passed between
the layers that keep them (converters/caffe/net.py; same weights to the bit), idle again, ``--rounds 3``,
``--baseline`` the commit before it (load average 1.0-2.9):

    run                           it/s  images/s  start-up s  x first  1-iter wall  1-iter CPU
    caffe 1.0                     33.3      2130        1.22     1.00         0.21        0.15
    compress train                48.0      3071        2.86     1.44         1.83        1.81
    compress train (base)         45.9      2938        2.74     1.38         2.36        2.36

Real Caffe's own rate moved between the two idle runs (37.0 and 33.3 it/s); compress train against its
previous commit, in the same run, is 1.05x. Then a one-channel convolution read only by such layers (LeNet's
conv1) ran channels-last too, and the 1-iteration run was timed to its first display line (process start to
the first iteration's loss, the start-up the issue asks for); idle again, ``--rounds 3``, ``--baseline`` a
checkout before both channels-last changes (load average 1.0-2.3):

    run                           it/s  images/s  start-up s  x first  to iter 0  1-iter wall  1-iter CPU
    caffe 1.0                     37.7      2412        1.30     1.00       0.19         0.22        0.15
    compress train                56.1      3593        2.12     1.49       1.35         1.71        1.68
    compress train (base)         50.7      3243        2.18     1.34       1.26         1.65        1.65

So **1.49x** real Caffe's iterations per second and **1.35 s** from process start to the first iteration
(``import torch`` alone: 1.17-1.48 s on this machine, idle).

Of the 1.98 CPU seconds, ``import torch`` alone takes 1.5-1.8 on this loaded machine (``python -c "import
torch"``: 1.6-1.8 s user + system); the rest is protobuf (0.2 s), reading the LMDBs into memory (0.26 s) and
building the nets. The interpreter must be allowed to write bytecode (``PYTHONDONTWRITEBYTECODE`` unset):
compiling the package's sources costs another 0.2 s at every start otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys; from compress.cli import main; sys.argv[0] = 'compress'; main()"  # the `compress` script

TRAIN_VAL = """name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 }
  data_param { source: "train_lmdb" batch_size: 64 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVER = """net: "train_val.prototxt"
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 0
max_iter: {iters}
snapshot: 0
snapshot_after_train: false
random_seed: 1
"""


def _images() -> tuple[np.ndarray, np.ndarray]:
    try:
        from compress.data.caffe.mnist_lmdb import mnist_uint8

        return mnist_uint8()["train"]
    except Exception as e:  # noqa: BLE001  (no MNIST file: random digits, said so)
        print(f"(MNIST unavailable: {e}; using random digits)")
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8), rng.integers(0, 10, 60000)


def _test_images() -> tuple[np.ndarray, np.ndarray]:
    try:
        from compress.data.caffe.mnist_lmdb import mnist_uint8

        return mnist_uint8()["test"]
    except Exception:  # noqa: BLE001  (as _images)
        rng = np.random.default_rng(1)
        return rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8), rng.integers(0, 10, 10000)


def _plain_lenet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True), nn.Conv2d(20, 50, 5),
                         nn.MaxPool2d(2, 2, ceil_mode=True), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                         nn.Linear(500, 10))


def plain_loop(x: torch.Tensor, y: torch.Tensor, iters: int) -> float:
    """Iterations per second of the same steps on in-memory tensors (already scaled)."""
    net = _plain_lenet()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    start = time.perf_counter()
    for i in range(iters):
        j = (i * 64) % (len(x) - 64)
        for g in opt.param_groups:
            g["lr"] = 0.01 * (1 + 1e-4 * i) ** -0.75
        loss = F.cross_entropy(net(x[j:j + 64]), y[j:j + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return iters / (time.perf_counter() - start)


def compress_train(workdir: Path, iters: int) -> float:
    """Iterations per second of ``train_solver`` (set-up excluded: timed from its first logged step)."""
    from compress.solver.train import SolverTrainConfig, train_solver

    (workdir / "solver.prototxt").write_text(SOLVER.format(iters=iters))
    log = workdir / "log.jsonl"
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        marks = {}

        import compress.solver.observer as observer

        original = observer.CaffeObserver.step

        def step(self, trainer, it, loss, rate, info):
            if it in (0, iters - 1):
                marks[it] = time.perf_counter()
            original(self, trainer, it, loss, rate, info)

        observer.CaffeObserver.step = step
        try:
            train_solver(SolverTrainConfig("solver.prototxt", log=str(log), progress=False))
        finally:
            observer.CaffeObserver.step = original
        assert len([json.loads(line) for line in log.read_text().splitlines()]) == iters
        return (iters - 1) / (marks[iters - 1] - marks[0])
    finally:
        os.chdir(cwd)


# -- whole runs: real Caffe, compress train, compress train under torchrun -----------------------------

# BVLC's lenet_train_test.prototxt (a TEST net over the test LMDB, batch 100, with Accuracy)
TEST_DATA = """layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 }
  data_param { source: "{root}/test_lmdb" batch_size: 100 backend: LMDB } }
"""
ACCURACY = """layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include { phase: TEST } }
"""

# BVLC's lenet_solver.prototxt with a fixed seed and no snapshots
FULL_SOLVER = """net: "{root}/full_train_val.prototxt"
test_iter: 100
test_interval: 500
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 100
max_iter: {iters}
snapshot: 0
snapshot_after_train: false
solver_mode: CPU
random_seed: 1
"""


def write_full_solver(work: Path, root: str, short: int, long: int) -> None:
    """``solver_{short,long}.prototxt`` and their train_val, every path absolute under ``root`` (the folder
    as the Caffe command sees ``work``: the same, or its path inside a chroot)."""
    net = TRAIN_VAL.replace('source: "train_lmdb"', f'source: "{root}/train_lmdb"')
    head, rest = net.split("\n", 1)
    (work / "full_train_val.prototxt").write_text(head + "\n" + TEST_DATA.replace("{root}", root) + rest
                                                  + ACCURACY)
    for n in (short, long):
        text = FULL_SOLVER.replace("{root}", root).replace("{iters}", str(n))
        (work / f"solver_{n}.prototxt").write_text(text)
    text = FULL_SOLVER.replace("{root}", root).replace("{iters}", "1").replace("display: 100", "display: 1") \
        + "test_initialization: false\n"
    (work / f"solver_{STARTUP}.prototxt").write_text(text)  # start-up: import to the first iteration


STARTUP = "startup"  # the solver of one iteration, no test, display 1: its run times the start-up


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float | None]:
    """Wall and CPU (user + system, the child's and its children's) seconds of one whole run of ``argv``,
    and the wall seconds until it printed its first iteration's loss (Caffe's display line, ``Iteration 0,
    loss = ...``, or Caffe 1.0's ``Iteration 0 (...), loss = ...``; None when it printed none). Its output
    is kept in ``cwd/last.log``; a failure is fatal. On a busy machine the CPU time is what the wall time
    would be on an idle one, for a run that uses one core."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    first = None
    with open(cwd / "last.log", "w") as log:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:
            if first is None and re.search(r"Iteration 0\b.*loss", line):
                first = time.perf_counter() - start
            log.write(line)
        proc.wait()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        tail = (cwd / "last.log").read_text()[-2000:]
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{tail}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), first


def whole_runs(work: Path, caffe: str | None, caffe_root: Path | None, ranks: int, short: int, long: int,
               rounds: int, baseline: Path | None = None) -> None:
    """Real Caffe, ``compress train`` and (``ranks`` > 1) ``compress train`` under torchrun on BVLC's LeNet
    solver (tests every 500 iterations over 100 batches of 100), each as a whole process at one thread, run
    for ``short`` and ``long`` iterations, alternating; the rate is ``(long - short) / (t_long - t_short)``
    (start-up and the test at iteration 0 cancel) and the start-up ``t_short - short / rate``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "GLOG_minloglevel": "1"}
    write_full_solver(work, str(work), short, long)
    cli = [sys.executable, "-c", CLI]
    runners: dict[str, tuple[int, object]] = {}  # name -> (images per iteration, argv for n iterations)
    if caffe:
        inside = work
        if caffe_root is not None:  # the command sees caffe_root as /: give it a copy under there
            inside = Path(tempfile.mkdtemp(dir=caffe_root / "tmp"))
            shutil.copytree(work / "train_lmdb", inside / "train_lmdb")
            shutil.copytree(work / "test_lmdb", inside / "test_lmdb")
            root = "/" + str(inside.relative_to(caffe_root))
            write_full_solver(inside, root, short, long)
        else:
            root = str(work)
        runners["caffe 1.0"] = (64, lambda n: [*shlex.split(caffe), "train",
                                               f"--solver={root}/solver_{n}.prototxt"])
    def quiet(n) -> list[str]:  # the start-up run prints its display line, which times the first iteration
        return [] if n == STARTUP else ["--quiet"]

    runners["compress train"] = (64, lambda n: [*cli, "train", f"solver_{n}.prototxt", *quiet(n),
                                                "--threads", "1"])
    if baseline is not None:  # another source tree's compress train (before/after in one run)
        base_env = {**env, "PYTHONPATH": str(baseline)}
        runners[f"compress train ({baseline.name})"] = (64, lambda n: [
            "env", f"PYTHONPATH={base_env['PYTHONPATH']}", *cli, "train", f"solver_{n}.prototxt", *quiet(n),
            "--threads", "1"])
    if ranks > 1:
        runners[f"compress train, {ranks} ranks"] = (64 * ranks, lambda n: [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m",
            "compress.cli", "train", f"solver_{n}.prototxt", *quiet(n), "--threads", "1"])
    loud = {**env, "GLOG_minloglevel": "0", "GLOG_logtostderr": "1"}  # Caffe's display line on stderr
    times: dict[str, dict[object, list[tuple[float, float, float | None]]]] = {
        name: {short: [], long: [], STARTUP: []} for name in runners}
    load = [os.getloadavg()[0]]
    try:
        for _ in range(rounds):
            for n in (short, long, STARTUP):
                for name, (_, argv) in runners.items():
                    times[name][n].append(timed(argv(n), loud if n == STARTUP else env, work))
            load.append(os.getloadavg()[0])
    finally:
        if caffe and caffe_root is not None:
            shutil.rmtree(inside, ignore_errors=True)
    print(f"\nwhole runs of BVLC's LeNet solver, {short} and {long} iterations, {rounds} rounds alternating "
          f"(medians); load average {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} CPUs")
    print("1 iteration: a run of 1 iteration without the test at iteration 0: to its first display line "
          "(process start to the first iteration's loss), and the whole process, wall and CPU seconds (CPU: "
          "the wall time it would take on an idle core)")
    print(f"{'run':<26} {'it/s':>7} {'images/s':>9} {'start-up s':>11} {'x first':>8} {'to iter 0':>10} "
          f"{'1-iter wall':>12} {'1-iter CPU':>11}")
    first = None
    for name, (batch, _) in runners.items():
        t_short, t_long = (statistics.median(t[0] for t in times[name][n]) for n in (short, long))
        wall, cpu = (statistics.median(x[i] for x in times[name][STARTUP]) for i in (0, 1))
        firsts = [x[2] for x in times[name][STARTUP] if x[2] is not None]
        to_first = f"{statistics.median(firsts):>10.2f}" if firsts else f"{'-':>10}"
        rate = (long - short) / (t_long - t_short)
        first = first or rate * batch
        print(f"{name:<26} {rate:>7.1f} {rate * batch:>9.0f} {t_short - short / rate:>11.2f} "
              f"{rate * batch / first:>8.2f} {to_first} {wall:>12.2f} {cpu:>11.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--caffe", metavar="CMD",
                    help="a real Caffe binary (a command line: 'chroot DIR /usr/bin/caffe'): adds whole runs")
    ap.add_argument("--caffe-root", metavar="DIR", type=Path,
                    help="the folder that CMD sees as / (a chroot): its inputs are copied under DIR/tmp")
    ap.add_argument("--ranks", type=int, default=1, help="> 1: adds whole runs under torchrun with this many")
    ap.add_argument("--whole", default="200,1400", metavar="SHORT,LONG",
                    help="iterations of the two whole-run lengths [200,1400]")
    ap.add_argument("--whole-only", action="store_true", help="skip the in-process comparison")
    ap.add_argument("--baseline", metavar="DIR", type=Path,
                    help="another checkout: its compress train as one more whole-run row (before/after)")
    args = ap.parse_args()
    from compress.data.caffe import write_datum_lmdb

    images, labels = _images()
    x = torch.from_numpy(images[:, None].astype(np.float32) * np.float32(0.00390625))
    y = torch.from_numpy(np.asarray(labels, np.int64))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_datum_lmdb(work / "train_lmdb", images, labels)
        (work / "train_val.prototxt").write_text(TRAIN_VAL)
        if args.caffe or args.ranks > 1 or args.baseline:
            test_images, test_labels = _test_images()
            write_datum_lmdb(work / "test_lmdb", test_images, test_labels)
            short, long = (int(v) for v in args.whole.split(","))
            whole_runs(work, args.caffe, args.caffe_root, args.ranks, short, long, args.rounds, args.baseline)
        if args.whole_only:
            return
        print(f"LeNet batch 64, {args.iters} iterations, {args.rounds} rounds (median it/s)")
        print(f"{'threads':>7} {'plain loop':>11} {'compress train':>15} {'ratio':>7}")
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            plain, ours = [], []
            for _ in range(args.rounds):
                plain.append(plain_loop(x, y, args.iters))
                ours.append(compress_train(work, args.iters))
            p, o = statistics.median(plain), statistics.median(ours)
            print(f"{threads:>7} {p:>11.1f} {o:>15.1f} {o / p:>7.3f}")


if __name__ == "__main__":
    main()
