"""``compress train`` under torchrun: Caffe's multi-GPU semantics on two gloo ranks.

Each rank reads its share of the TRAIN records (rank r of W keeps positions r, r + W, ..., as Caffe's
``DataLayer::Skip``), the gradients are averaged, the learning rate is not scaled, and rank 0 tests,
snapshots and writes. So two ranks of ``batch_size`` B train like one process with ``iter_size`` doubled
over the same records: checked on weights after 10 iterations within 1e-5.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.data.caffe import write_datum_lmdb
from tests.test_train_solver import NET, NO_DROPOUT, SOLVER, tiny_data

ROOT = Path(__file__).resolve().parents[1]
TEN = SOLVER.replace("max_iter: 12", "max_iter: 10")


@pytest.fixture
def folder(tmp_path):
    images, labels = tiny_data()
    write_datum_lmdb(tmp_path / "train_lmdb", images[:40], labels[:40])  # 40 records: wraps mid-run
    write_datum_lmdb(tmp_path / "test_lmdb", images[40:], labels[40:])
    (tmp_path / "net.prototxt").write_text(NO_DROPOUT)  # dropout masks differ between the two layouts
    (tmp_path / "snap").mkdir()
    return tmp_path


def compress(folder: Path, *argv: str, ranks: int = 1) -> subprocess.CompletedProcess:
    """``compress ARGV`` in ``folder``, as one process or under ``torchrun --nproc_per_node RANKS``."""
    launch = [sys.executable, "-m", "compress.cli"] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
         "-m", "--", "compress.cli"]  # "--": torchrun would take --log for its --log-dir
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*launch, *argv], cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def blobs(path: Path) -> dict:
    from converters.caffe.reader import read_caffemodel

    return read_caffemodel(str(path)).blobs


def test_two_ranks_train_like_one_process_with_iter_size_doubled(folder):
    (folder / "solver.prototxt").write_text(TEN)
    two = compress(folder, "train", "solver.prototxt", "-o", "two.caffemodel", "--log", "two.jsonl", ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("trained 10 iterations") == 1  # rank 0 reports, the other rank is silent
    (folder / "solver.prototxt").write_text(TEN + "iter_size: 2\n")
    one = compress(folder, "train", "solver.prototxt", "-o", "one.caffemodel")
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = blobs(folder / "two.caffemodel"), blobs(folder / "one.caffemodel")
    for name in ("conv1", "ip1"):
        for x, y in zip(a[name], b[name], strict=True):
            assert np.abs(x - y).max() <= 1e-5, name
    moved = np.abs(a["ip1"][0] - blobs(folder / "snap/tiny_iter_5.caffemodel")["ip1"][0]).max()
    assert moved > 1e-3  # it trained
    tests = [line for line in (folder / "two.jsonl").read_text().splitlines() if '"test"' in line]
    assert len(tests) == 3  # iterations 0, 5 and 10, on rank 0 only


def test_a_two_rank_run_resumes_exactly_and_only_with_two_ranks(folder):
    (folder / "net.prototxt").write_text(NET)  # with dropout: each rank's generator is saved and restored
    (folder / "solver.prototxt").write_text(TEN)
    whole = compress(folder, "train", "solver.prototxt", "-o", "whole.caffemodel", ranks=2)
    assert whole.returncode == 0, whole.stderr[-3000:]
    state = "snap/tiny_iter_5.solverstate.pt"
    saved = torch.load(folder / state, weights_only=True)
    assert saved["world_size"] == 2 and len(saved["rng_ranks"]) == 2
    single = compress(folder, "train", "solver.prototxt", "-o", "x.caffemodel", "--resume", state)
    assert single.returncode == 1
    assert "was written by a run of 2 process(es), this one has 1; resume it with 2" in single.stderr
    again = compress(folder, "train", "solver.prototxt", "-o", "again.caffemodel", "--resume", state, ranks=2)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = blobs(folder / "whole.caffemodel"), blobs(folder / "again.caffemodel")
    for name in ("conv1", "ip1"):
        for x, y in zip(a[name], b[name], strict=True):
            assert np.array_equal(x, y), name


@pytest.mark.parametrize("memory_limit", [1 << 30, 0])  # records held in memory, or streamed
def test_data_layer_shares_are_caffes_skip(folder, memory_limit, monkeypatch):
    """Rank r of 2 keeps records r, r+2, ... across the wrap of a 40-record LMDB; the two shares of a
    batch are the records one process reads in two batches."""
    from compress.data.caffe import build_feeder
    from converters.caffe.prototxt import parse_net_text

    monkeypatch.chdir(folder)
    layer = next(la for la in parse_net_text(NO_DROPOUT).layer if la.type == "Data")
    whole = build_feeder(layer, "TRAIN", memory_limit=memory_limit)
    shares = [build_feeder(layer, "TRAIN", memory_limit=memory_limit).shard(r, 2) for r in range(2)]
    for _ in range(6):  # 6 x 16 records: wraps twice
        one = torch.cat([whole.next_batch()["data"], whole.next_batch()["data"]])
        mine = [s.next_batch()["data"] for s in shares]
        assert torch.equal(one[0::2], mine[0]) and torch.equal(one[1::2], mine[1])
    assert shares[0].state_dict()["position"] == whole.state_dict()["position"]


def test_prune_with_a_solver_on_two_ranks_is_one_process_with_the_batch_doubled(folder):
    """ADMM's Z/U steps are functions of the (identical) weights: the whole run follows the solver. (Against
    one process with the batch doubled: the ranks' shares of a step are its one batch of 16 records.)"""
    (folder / "solver.prototxt").write_text(TEN)
    assert compress(folder, "train", "solver.prototxt", "-o", "t.caffemodel", "--quiet").returncode == 0
    args = ["prune", "t.caffemodel", "--solver", "solver.prototxt", "--method", "admm", "--pcen", "50",
            "--admm-iters", "2", "--max-iter", "4", "--quiet"]
    two = compress(folder, *args, "-o", "two.pt", ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    (folder / "net.prototxt").write_text(NO_DROPOUT.replace("batch_size: 8", "batch_size: 16"))
    one = compress(folder, *args, "-o", "one.pt")
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = blobs(folder / "two.caffemodel"), blobs(folder / "one.caffemodel")
    for name in ("conv1", "ip1"):
        assert np.array_equal(a[name][0] == 0, b[name][0] == 0), name  # the same weights pruned
        for x, y in zip(a[name], b[name], strict=True):
            assert np.abs(x - y).max() <= 1e-5, name
