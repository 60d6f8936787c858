"""Check an ONNX file against the PyTorch net it came from, with onnxruntime.

The same inputs (seeded random, or given) go through onnxruntime and through the net; the result
holds the worst absolute and relative error over all outputs (matched by name), the top-1 agreement
of the first output, and onnxruntime's median latency per batch. ``passed`` follows
``numpy.allclose``'s rule with the output's scale: ``max|ort - torch| <= atol + rtol * max|torch|``
for every output.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from converters.errors import ConversionError


@dataclass(frozen=True)
class VerifyResult:
    max_abs_err: float
    max_rel_err: float  # max |ort - torch| / max |torch| of the same output, worst output
    top1_agreement: float | None  # fraction of samples whose argmax (dim 1) agrees; None: no class axis
    ort_latency_ms: float  # per batch, median of the timed runs after one warm-up
    batch_size: int
    passed: bool
    atol: float
    rtol: float
    inputs: dict[str, tuple[int, ...]]
    outputs: tuple[str, ...]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["inputs"] = {k: list(v) for k, v in self.inputs.items()}
        d["outputs"] = list(self.outputs)
        return d


def read_onnx(onnx_path: str | os.PathLike):
    """The ``onnx.ModelProto`` at ``onnx_path`` (external data not loaded), checked by
    ``onnx.checker``; anything else is one ConversionError naming the file."""
    import onnx

    path = os.fspath(onnx_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    try:
        model = onnx.load(path, load_external_data=False)
        if not model.graph.output or not model.graph.node:
            raise ValueError("no graph nodes or outputs")
        onnx.checker.check_model(model)  # plain check: sparse initializers pass it, full_check does not
    except Exception as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise ConversionError(f"{path}: not a valid ONNX model ({reason})") from None
    return model


def open_session(onnx_path: str | os.PathLike, threads: int | None = None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)):
    """An onnxruntime ``InferenceSession`` of a file that :func:`read_onnx` accepted."""
    import onnxruntime as ort

    path = os.fspath(onnx_path)
    opts = ort.SessionOptions()
    threads = threads or _env_threads()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(path, opts, providers=list(providers))
    except Exception as e:
        reason = " ".join(str(e).split())[:200]
        raise ConversionError(f"{path}: onnxruntime cannot load it ({reason})") from None


def _env_threads() -> int | None:
    """``OMP_NUM_THREADS`` (what ``--threads`` sets), for onnxruntime too; None when unset or not a count."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def _load_session(onnx_path: str | os.PathLike, threads: int | None,
                  providers: tuple[str, ...] = ("CPUExecutionProvider",)):
    read_onnx(onnx_path)
    return open_session(onnx_path, threads, providers)


def _dims(arg) -> list[int | str]:
    return [d if isinstance(d, int) else (d or "?") for d in arg.shape]


def _input_shapes(session, net: nn.Module, batch_size: int, path: str) -> dict[str, tuple[int, ...]]:
    """Shapes to feed: the net's inputs (CHW) with the ONNX batch (fixed in the graph, else ``batch_size``).
    Names are matched in order; the CHW part must agree exactly."""
    onnx_inputs = session.get_inputs()
    net_inputs = dict(getattr(net, "inputs", {}) or {})
    if not net_inputs:
        raise ConversionError("the model does not declare its input shapes (net.inputs)")
    if len(onnx_inputs) != len(net_inputs):
        raise ConversionError(f"{path}: the ONNX graph has {len(onnx_inputs)} input(s) "
                              f"({', '.join(a.name for a in onnx_inputs)}), the model {len(net_inputs)} "
                              f"({', '.join(net_inputs)})")
    shapes = {}
    for arg, (blob, shape) in zip(onnx_inputs, net_inputs.items(), strict=True):
        dims = _dims(arg)
        want = tuple(shape)
        if len(dims) != len(want) or any(isinstance(d, int) and d != w for d, w in zip(dims[1:], want[1:],
                                                                                   strict=False)):
            raise ConversionError(f"{path}: ONNX input {arg.name!r} has shape {dims}, the model's input "
                                  f"{blob!r} has shape {list(want)} (batch first)")
        batch = dims[0] if isinstance(dims[0], int) else batch_size
        shapes[arg.name] = (batch, *want[1:])
    return shapes


def _torch_outputs(net: nn.Module, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The net's outputs on ``feeds``, on the device its parameters are on, as NumPy arrays."""
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    with torch.no_grad():
        out = net(*(torch.from_numpy(a).to(device) for a in feeds.values()))
    if isinstance(out, torch.Tensor):
        names = list(getattr(net, "outputs", None) or ["output"])
        return {names[0]: out.cpu().numpy()}
    if isinstance(out, dict):
        return {k: v.cpu().numpy() for k, v in out.items()}
    return {f"output{i}": v.cpu().numpy() for i, v in enumerate(out)}


def _match_outputs(ort_names: list[str], ref: dict[str, np.ndarray], path: str) -> dict[str, str]:
    """``{ort output name: torch output name}``: one output each, or every output by name."""
    if len(ort_names) == 1 and len(ref) == 1:
        return {ort_names[0]: next(iter(ref))}
    missing = [n for n in ref if n not in ort_names]
    if missing or len(ort_names) != len(ref):
        raise ConversionError(f"{path}: ONNX outputs {ort_names} do not match "
                              f"the model's outputs {list(ref)}")
    return {n: n for n in ref}


def verify_onnx(onnx_path: str | os.PathLike, net: nn.Module, *, batch_size: int = 8, seed: int = 0,
                inputs: dict[str, np.ndarray] | np.ndarray | None = None, atol: float = 1e-4,
                rtol: float = 1e-3, repeats: int = 10, threads: int | None = None,
                providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> VerifyResult:
    """Run the same inputs through ``onnx_path`` (onnxruntime) and ``net`` (PyTorch) and compare.

    ``inputs``: an array (single-input nets) or ``{input name: array}``; default: standard normal
    float32 drawn with ``seed`` in the shapes the ONNX graph and ``net.inputs`` agree on.
    """
    if batch_size < 1 or repeats < 1:
        raise ConversionError(f"batch_size and repeats must be >= 1, got {batch_size} and {repeats}")
    path = os.fspath(onnx_path)
    session = _load_session(path, threads, providers)
    if inputs is not None:
        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs.values())
        batch_size = int(arrays[0].shape[0])
    shapes = _input_shapes(session, net, batch_size, path)
    if inputs is None:
        rng = np.random.default_rng(seed)
        feeds = {n: rng.standard_normal(s, dtype=np.float32) for n, s in shapes.items()}
    else:
        feeds = {}
        for (name, shape), a in zip(shapes.items(), arrays, strict=True):
            a = np.ascontiguousarray(a, dtype=np.float32)
            if tuple(a.shape[1:]) != tuple(shape[1:]) or a.shape[0] != shape[0]:
                raise ConversionError(f"input {name!r}: data has shape {list(a.shape)}, "
                                      f"the ONNX graph expects {list(shape)}")
            feeds[name] = a
    batch = next(iter(feeds.values())).shape[0]
    ort_names = [o.name for o in session.get_outputs()]
    ort_out = session.run(ort_names, feeds)  # warm-up, and the outputs compared
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(ort_names, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    was_training = net.training
    net.eval()
    try:
        ref = _torch_outputs(net, feeds)
    finally:
        net.train(was_training)
    pairs = _match_outputs(ort_names, ref, path)
    got = dict(zip(ort_names, ort_out, strict=True))

    max_abs = max_rel = 0.0
    passed = True
    top1 = None
    for ort_name, ref_name in pairs.items():
        a, b = np.asarray(got[ort_name], dtype=np.float64), ref[ref_name].astype(np.float64)
        if a.shape != b.shape:
            raise ConversionError(f"{path}: output {ort_name!r} has shape {list(a.shape)} in onnxruntime, "
                                  f"{list(b.shape)} in PyTorch")
        err = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        if not np.isfinite(err):
            err = float("inf")
        rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
        max_abs, max_rel = max(max_abs, err), max(max_rel, rel)
        passed &= err <= atol + rtol * scale
        if top1 is None and b.ndim >= 2 and b.shape[1] > 1:
            top1 = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    return VerifyResult(max_abs_err=max_abs, max_rel_err=max_rel, top1_agreement=top1,
                        ort_latency_ms=statistics.median(times), batch_size=int(batch), passed=bool(passed),
                        atol=atol, rtol=rtol, inputs=shapes if inputs is None else
                        {n: tuple(a.shape) for n, a in feeds.items()}, outputs=tuple(pairs))
