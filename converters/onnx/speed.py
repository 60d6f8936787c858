"""How fast onnxruntime runs ONNX files, side by side (``compress bench``).

Several files are measured in one run, interleaved (a round runs each file once, in turn), so load from
other processes hits them alike, and each file is reported against the first: medians, never absolute
times from separate runs. Per file:

- session load time and peak resident memory, in a fresh child process (``python -m
  converters.onnx.speed FILE``): what a deployment pays to open the file, not hidden by sessions the
  parent already holds;
- latency p50/p90 per batch size (random float32 inputs in the graph's shapes, the batch dimension set)
  and throughput (images per second at the p50);
- a profile summary (onnxruntime's ``enable_profiling``: the median time of each node over a few runs,
  summed per operator type), and the weights that a ``DequantizeLinear`` rebuilds on every run (a
  quantized weight that no kernel reads directly costs its dequantization each time).

Sessions use onnxruntime's default options except the thread count (``intra_op_num_threads``; one
inter-op thread), so the figures are what a user gets with stock settings.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from converters.caffe.names import shown
from converters.errors import ConversionError, reason

PROFILE_RUNS = 10  # profiled runs per file (at the first batch size), after the timed rounds
TOP_OPS = 5


@dataclass(frozen=True)
class Latency:
    batch: int
    p50_ms: float
    p90_ms: float
    throughput: float  # images per second at the p50
    speedup: float  # the first file's p50 / this file's p50 (> 1: faster than the first)


@dataclass(frozen=True)
class OpTime:
    op_type: str
    share: float  # of the summed node medians
    us: float  # summed median microseconds per run
    nodes: int
    top_node: str  # the slowest node of this type


@dataclass(frozen=True)
class FileBench:
    path: str
    bytes: int
    load_s: float  # InferenceSession creation in a fresh process
    peak_rss: int  # that process's peak resident memory, bytes
    session_rss: int  # peak minus the process's memory before the session (python + onnxruntime)
    latencies: tuple[Latency, ...]
    ops: tuple[OpTime, ...] = ()
    dequantized_per_run: tuple[str, ...] = ()  # weights rebuilt by a DequantizeLinear on every run
    dequantize_share: float = 0.0  # of the profiled node time


@dataclass(frozen=True)
class BenchReport:
    files: tuple[FileBench, ...]
    batches: tuple[int, ...]
    threads: int
    rounds: int
    onnxruntime: str
    load_average: tuple[float, float, float]
    cpus: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return {"schema": "compress.bench/1", **asdict(self)}


def bench(paths: list[str], *, batches: tuple[int, ...] = (1, 32), threads: int = 1, rounds: int = 20,
          profile: bool = True, memory: bool = True) -> BenchReport:
    """Measure ``paths`` side by side (see the module docstring); ratios are against ``paths[0]``."""
    import onnxruntime as ort

    if not paths:
        raise ConversionError("no ONNX file to measure")
    if rounds < 1 or threads < 1 or not batches or min(batches) < 1:
        raise ConversionError(f"rounds, threads and batch sizes must be >= 1, got {rounds}, {threads}, "
                              f"{list(batches)}")
    sessions = [_session(p, threads) for p in paths]
    feeds = {b: [_feeds(s, b, p) for s, p in zip(sessions, paths, strict=True)] for b in batches}
    times = {b: _interleaved(sessions, feeds[b], rounds, paths) for b in batches}
    files = []
    for i, path in enumerate(paths):
        lat = []
        for b in batches:
            t = times[b][i]
            p50, base = _pct(t, 50), _pct(times[b][0], 50)
            lat.append(Latency(b, p50 * 1e3, _pct(t, 90) * 1e3, b / p50, base / p50))
        load_s, peak, own = _load_probe(path, threads, batches[0]) if memory else (float("nan"), 0, 0)
        ops, dq, dq_share = profile_ops(path, feeds[batches[0]][i], threads) if profile else ((), (), 0.0)
        files.append(FileBench(path, os.path.getsize(path), load_s, peak, own, tuple(lat), ops, dq, dq_share))
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return BenchReport(tuple(files), tuple(batches), threads, rounds, ort.__version__,
                       tuple(round(x, 2) for x in load), os.cpu_count() or 1)


def medians(paths: list[str], *, batches: tuple[int, ...] = (1,), threads: int = 1, rounds: int = 5,
            budget_s: float | None = None) -> dict[int, list[float]]:
    """``{batch: [median seconds per file]}``, the files interleaved; with ``budget_s`` the rounds stop
    early (after at least 3) once that much time has gone into a batch size: a quick check, not a bench."""
    sessions = [_session(p, threads) for p in paths]
    out = {}
    for b in batches:
        feeds = [_feeds(s, b, p) for s, p in zip(sessions, paths, strict=True)]
        times = _interleaved(sessions, feeds, rounds, paths, budget_s)
        out[b] = [statistics.median(t) for t in times]
    return out


def _session(path: str, threads: int, profile_dir: str | None = None):
    import onnxruntime as ort

    if not os.path.isfile(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if profile_dir is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(profile_dir, "profile")
    try:
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types; say what failed, briefly
        raise ConversionError(f"{path}: onnxruntime cannot load it ({reason(e)})") from None


def _feeds(session, batch: int, path: str) -> dict[str, np.ndarray]:
    """Random float32 inputs of the graph's shapes with the batch dimension ``batch``; a graph whose
    batch is fixed to another size, or with other open dimensions, is refused."""
    rng = np.random.default_rng(0)
    feeds = {}
    for arg in session.get_inputs():
        dims = list(arg.shape)
        if arg.type != "tensor(float)":
            raise ConversionError(f"{path}: input {shown(arg.name)} is {arg.type}; only float inputs are fed")
        if dims and not isinstance(dims[0], int):
            dims[0] = batch
        elif dims and dims[0] != batch:
            raise ConversionError(f"{path}: input {shown(arg.name)} has a fixed batch of {dims[0]}, "
                                  f"not {batch}")
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise ConversionError(f"{path}: input {shown(arg.name)} has open dimensions {arg.shape} "
                                  "besides the batch")
        feeds[arg.name] = rng.standard_normal(dims, dtype=np.float32)
    return feeds


def _run(session, feeds: dict, path: str) -> None:
    try:
        session.run(None, feeds)
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"{path}: onnxruntime failed to run it ({reason(e)})") from None


def _interleaved(sessions, feeds, rounds: int, paths, budget_s: float | None = None) -> list[list[float]]:
    for s, f, p in zip(sessions, feeds, paths, strict=True):  # warm-up: first-run allocations
        _run(s, f, p)
    times: list[list[float]] = [[] for _ in sessions]
    start = time.perf_counter()
    for r in range(rounds):
        if budget_s is not None and r >= 3 and time.perf_counter() - start > budget_s:
            break
        for s, f, t, p in zip(sessions, feeds, times, paths, strict=True):
            t0 = time.perf_counter()
            _run(s, f, p)
            t.append(time.perf_counter() - t0)
    return times


def _pct(values: list[float], q: int) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) > 1 else values[0]


def profile_ops(path: str, feeds: dict, threads: int, runs: int = PROFILE_RUNS):
    """``(top operator types, weights dequantized per run, their share)`` from onnxruntime's profiler:
    each node's median time over ``runs`` runs."""
    with tempfile.TemporaryDirectory() as tmp:
        session = _session(path, threads, profile_dir=tmp)
        for _ in range(runs + 1):
            _run(session, feeds, path)
        events = json.loads(open(session.end_profiling()).read())  # noqa: SIM115 - the dir goes away
    per_node: dict[str, list[float]] = {}
    op_of: dict[str, str] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name[:-len("_kernel_time")]
            per_node.setdefault(node, []).append(float(e.get("dur", 0)))
            op_of[node] = e.get("args", {}).get("op_name", "?")
    med = {n: statistics.median(v) for n, v in per_node.items()}
    total = sum(med.values()) or 1.0
    by_op: dict[str, list[str]] = {}
    for n in med:
        by_op.setdefault(op_of[n], []).append(n)
    ops = sorted((OpTime(op, sum(med[n] for n in ns) / total, sum(med[n] for n in ns), len(ns),
                         max(ns, key=med.__getitem__)) for op, ns in by_op.items()), key=lambda o: -o.us)
    dq_nodes = [n for n in by_op.get("DequantizeLinear", [])]
    weights = _dequantized_weights(path, dq_nodes)
    share = sum(med[n] for n in dq_nodes if n in weights) / total
    return tuple(ops[:TOP_OPS]), tuple(weights.values()), share


def _dequantized_weights(path: str, nodes: list[str]) -> dict[str, str]:
    """``{node: weight}`` for the profiled DequantizeLinear nodes whose input is a stored tensor."""
    if not nodes:
        return {}
    import onnx

    model = onnx.load(path, load_external_data=False)
    stored = {i.name for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.name in nodes and n.op_type == "DequantizeLinear" and n.input[0] in stored:
            out[n.name] = n.output[0]
    return out


def _load_probe(path: str, threads: int, batch: int) -> tuple[float, int, int]:
    """``(load seconds, peak RSS, peak RSS minus the RSS before the session)`` of a fresh process that
    opens ``path`` and runs it once at ``batch``."""
    cmd = [sys.executable, "-m", "converters.onnx.speed", path, str(threads), str(batch)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_root(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConversionError(f"{path}: measuring its load in a fresh process failed ({last})")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return r["load_s"], r["peak_rss"], r["peak_rss"] - r["base_rss"]


def _root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _status(field_name: str) -> int:
    """A memory figure of this process from ``/proc/self/status`` (VmRSS, VmHWM: its own address space,
    unlike ``ru_maxrss``, which can carry the parent's peak across fork and exec), in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _probe_main(path: str, threads: int, batch: int) -> None:
    import onnxruntime  # noqa: F401 - its import is part of the baseline, not of the session

    base = _status("VmHWM")
    t0 = time.perf_counter()
    session = _session(path, threads)
    load_s = time.perf_counter() - t0
    _run(session, _feeds(session, batch, path), path)
    print(json.dumps({"load_s": load_s, "peak_rss": _status("VmHWM"), "base_rss": base}))


if __name__ == "__main__":
    _probe_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
