"""Top-1/top-5 accuracy and cross-entropy loss of a classifier on a test set (``compress eval``).

:func:`evaluate` runs a PyTorch module or an onnxruntime session over a loader of ``(x, y)`` batches and
counts as Caffe's layers do:

- **Accuracy** follows BVLC Caffe's ``AccuracyLayer`` (``src/caffe/layers/accuracy_layer.cpp``): a sample
  is right at top-k when fewer than k *other* classes score at least as high as the true class, so ties
  count against the prediction, and a NaN score is never right.
- **Loss** is the mean cross-entropy of the logits (``SoftmaxWithLoss``). A Caffe net ending in Softmax
  is evaluated on the Softmax's bottom blob (:class:`compress.logits.Logits`); a model
  whose output is already a probability (an ONNX file ending in Softmax) gets ``-log(max(p_y, 1e-20))``,
  Caffe's ``MultinomialLogisticLoss`` with its ``kLOG_THRESHOLD``.

:func:`evaluate_model` is the library side of ``compress eval``: it loads any model the tool accepts
(zoo name, model file, ``.caffemodel``, or an ``.onnx`` file run by onnxruntime) and any data source of
:func:`compress.data.get_data`, evaluates the *whole* test split unless ``limit`` says otherwise, and
returns an :class:`EvalReport` that says how many images were seen and whether the number means anything
(synthetic data has random labels).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.device import ort_providers, resolve_device
from compress.errors import CompressError
from compress.logits import Logits

LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD (include/caffe/layers/loss_layer.hpp)
TOP_K = 5
SCHEMA = "compress.eval/1"


@dataclass(frozen=True)
class EvalResult:
    """What one pass over a loader measured. Accuracies are fractions in [0, 1]; ``top5`` is None for
    a net with fewer than 5 classes; ``loss`` is the mean cross-entropy in nats. With ``metrics`` (and
    not sharded over ranks): ROC AUC, average precision and F1 (:mod:`compress.metrics`; ``averaging``
    says whose: the positive class of two, or the macro one-vs-rest mean)."""

    images: int
    classes: int
    top1: float
    top5: float | None
    loss: float
    auc: float | None = None
    ap: float | None = None
    f1: float | None = None
    averaging: str | None = None


def topk_hits(scores: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Per sample, whether the true class is within the top ``k`` by Caffe's rule: the number of
    classes scoring at least the true class's score (itself included) is between 1 and ``k``."""
    rank = (scores >= scores.gather(1, y[:, None])).sum(1)
    return (rank >= 1) & (rank <= k)


def _scores(out: Any, where: str) -> torch.Tensor:
    """One output of shape (N, classes) or (N, classes, 1, 1) as a float (N, classes) tensor."""
    if isinstance(out, dict):
        if len(out) != 1:
            raise CompressError(f"{where}: the model has {len(out)} outputs ({', '.join(out)}); "
                                "evaluation needs a classifier with one")
        out = next(iter(out.values()))
    if out.dim() == 4 and out.shape[2:] == (1, 1):
        out = out.flatten(1)
    if out.dim() != 2:
        raise CompressError(f"{where}: expected class scores of shape (N, classes), "
                            f"found {list(out.shape)}")
    return out.float()


class _OrtModel:
    """An onnxruntime session called like a module: float32 NCHW in, the first output back. A graph
    with a fixed batch size is fed in slices of that size (the last one zero-padded)."""

    def __init__(self, session, where: str) -> None:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise CompressError(f"{where}: the ONNX graph has {len(inputs)} inputs; evaluation needs one")
        self.session, self.where = session, where
        self.input = inputs[0].name
        self.output = session.get_outputs()[0].name
        batch = inputs[0].shape[0]
        self.batch = batch if isinstance(batch, int) and batch > 0 else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np

        a = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        if self.batch is None:
            return torch.from_numpy(self._run(a))
        parts = []
        for i in range(0, len(a), self.batch):
            chunk = a[i:i + self.batch]
            pad = self.batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
            parts.append(self._run(chunk)[:self.batch - pad])
        return torch.from_numpy(np.concatenate(parts))

    def _run(self, a):
        try:
            return self.session.run([self.output], {self.input: a})[0]
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types; say what failed, briefly
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            raise CompressError(f"{self.where}: onnxruntime failed on a batch of {list(a.shape)} "
                                f"({reason})") from None


@torch.no_grad()
def evaluate(model: nn.Module | Any, loader: Iterable, *, device: torch.device | str = "cpu",
             probabilities: bool = False, max_batches: int | None = None, where: str = "model",
             metrics: bool = False) -> EvalResult:
    """Top-1, top-5 and mean cross-entropy of ``model`` over ``loader``'s ``(x, y)`` batches.

    ``model`` is a module returning logits (wrap a Caffe net in :class:`compress.logits.Logits`) or an
    onnxruntime ``InferenceSession``. ``probabilities``: the output is already a softmax, so the loss is
    ``-log(max(p_y, 1e-20))``. A module's train/eval flag is restored afterwards. With a
    ``DistributedSampler`` in an initialized process group the counts are summed over the ranks. For
    mixed precision, call it inside ``torch.autocast``.
    """
    is_module = isinstance(model, nn.Module)
    run = model if is_module else _OrtModel(model, where)
    device = torch.device(device) if is_module else torch.device("cpu")
    was_training = model.training if is_module else False
    if is_module:
        model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # images, top-1, top-k hits, loss
    classes = 0
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []  # (class probabilities, labels) for the metrics
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            s = _scores(run(x), where).to(device)
            if len(s) != len(y):
                raise CompressError(f"{where}: the model gave {len(s)} rows of class scores for a batch of "
                                    f"{len(y)} images")
            if not bool(torch.isfinite(s).all()):
                raise CompressError(f"{where}: {_nonfinite(run, x)} on test batch {i + 1}; accuracy and loss "
                                    "would mean nothing")
            classes = s.shape[1]
            if int(y.min()) < 0 or int(y.max()) >= classes:
                raise CompressError(f"{where}: labels must be in [0, {classes}) for a net with {classes} "
                                    f"outputs, found {int(y.min())}..{int(y.max())}")
            if probabilities:
                loss = -s.gather(1, y[:, None]).clamp_min(LOG_THRESHOLD).log().sum()
            else:
                loss = torch.nn.functional.cross_entropy(s, y, reduction="sum")
            if metrics:
                p = s if probabilities else torch.softmax(s.double(), dim=1)
                kept.append((p.float().cpu(), y.cpu()))
            counts = [torch.tensor(len(y), device=device), topk_hits(s, y, 1).sum(),
                      topk_hits(s, y, TOP_K).sum(), loss]
            sums += torch.stack([c.double() for c in counts])
    finally:
        if is_module:
            model.train(was_training)
    sampler = getattr(loader, "sampler", None)
    sharded = torch.distributed.is_available() and torch.distributed.is_initialized() \
        and isinstance(sampler, torch.utils.data.DistributedSampler)
    if sharded:
        torch.distributed.all_reduce(sums)
    images = int(sums[0])
    if images == 0:
        raise CompressError(f"{where}: no images to evaluate")
    extra = {}
    if kept and not sharded:
        from compress.metrics import class_metrics

        m = class_metrics(torch.cat([p for p, _ in kept]).numpy(), torch.cat([t for _, t in kept]).numpy())
        extra = {"auc": m.auc, "ap": m.ap, "f1": m.f1, "averaging": m.averaging}
    return EvalResult(images=images, classes=classes, top1=float(sums[1]) / images,
                      top5=float(sums[2]) / images if classes >= TOP_K else None,
                      loss=float(sums[3]) / images, **extra)


def _nonfinite(run: Any, x: torch.Tensor) -> str:
    """Where NaN or infinity first appears: an ONNX graph's output, or a Caffe net's first such layer."""
    from converters.caffe.names import shown

    if isinstance(run, _OrtModel):
        return f"onnxruntime computes NaN or infinity in output {shown(run.output)}"
    find = getattr(getattr(run, "net", run), "first_nonfinite", None)  # a CaffeNet, or one in Logits
    origin = find(x) if find is not None else None
    return f"the model computes NaN or infinity (first at {origin or 'its output'})"


@dataclass(frozen=True)
class EvalReport:
    """An :class:`EvalResult` with what was evaluated on what: ``test_images`` is the size of the whole
    test split, ``limit`` the user's ``--limit``; ``meaningful`` is False where the labels are random
    (synthetic data), and then ``note`` says so."""

    model: str
    backend: str  # "pytorch" or "onnxruntime"
    device: str
    data: str
    test_images: int
    limit: int | None
    meaningful: bool
    result: EvalResult
    note: str | None = None

    @property
    def limited(self) -> bool:
        """Whether ``limit`` left part of the test split out."""
        return self.result.images < self.test_images

    def as_dict(self) -> dict:
        """The JSON record of ``compress eval --json``: accuracy and loss are null when meaningless."""
        r = asdict(self.result)
        if not self.meaningful:
            r.update(top1=None, top5=None, loss=None, auc=None, ap=None, f1=None)
        return {"schema": SCHEMA, "model": self.model, "backend": self.backend, "device": self.device,
                "data": self.data, "test_images": self.test_images, "limit": self.limit,
                "limited": self.limited, "meaningful": self.meaningful, "note": self.note, **r}


@dataclass(frozen=True)
class _Loaded:
    model: Any  # Logits module or onnxruntime session
    input_shape: tuple[int, ...]
    classes: int
    preprocess: dict | None
    probabilities: bool
    backend: str


def evaluate_model(spec: str, data: str, *, limit: int | None = None, batch_size: int = 100,
                   prototxt: str | None = None, device: str = "auto") -> EvalReport:
    """Evaluate ``spec`` (zoo name, model file, ``.caffemodel``, ``.onnx``) on the test split of ``data``
    (any :func:`compress.data.get_data` spec), all of it unless ``limit`` keeps the first N images."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise CompressError(f"limit must be a positive integer, found {limit!r}")
    if Path(spec).suffix.lower() == ".onnx":
        if prototxt is not None:
            raise CompressError(f"--prototxt applies to a .caffemodel, but {spec} is an ONNX file")
        loaded, dev = _load_onnx(spec, device)
    else:
        dev = resolve_device(device)
        loaded = _load_torch(spec, prototxt)
        loaded.model.to(dev)
    test = _test_loader(data, loaded, batch_size, limit)
    result = evaluate(loaded.model, test.loader, device=dev, probabilities=loaded.probabilities, where=spec,
                      metrics=True)
    note = None
    if not test.meaningful:
        note = (f"{data} data has random labels, so accuracy and loss would mean nothing (the model ran on "
                f"{result.images:,} images; evaluate on real data for a result)")
    return EvalReport(model=spec, backend=loaded.backend, device=str(dev), data=data,
                      test_images=test.size, limit=limit, meaningful=test.meaningful, result=result,
                      note=note)


def _load_torch(spec: str, prototxt: str | None) -> _Loaded:
    from compress.modelfile import load_model
    from converters.caffe import blob_shapes

    model = load_model(spec, prototxt)
    net = model.net
    if len(net.inputs) != 1:
        raise CompressError(f"{spec}: the net has {len(net.inputs)} inputs ({', '.join(net.inputs)}); "
                            "evaluation needs one")
    logits = Logits(net)
    shape = blob_shapes(net)[logits.blob or net.outputs[0]]
    return _Loaded(logits, tuple(next(iter(net.inputs.values()))), _class_count(shape, spec),
                   model.meta.get("preprocess"), False, "pytorch")


def _load_onnx(path: str, device: str) -> tuple[_Loaded, torch.device]:
    import json

    from converters.onnx.verify import open_session, read_onnx

    proto = read_onnx(path)
    providers = ort_providers(device)
    dev = torch.device(device if providers[0] == "CUDAExecutionProvider" else "cpu")
    session = open_session(path, providers=providers)  # threads: OMP_NUM_THREADS (--threads)
    dims = session.get_inputs()[0].shape
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        raise CompressError(f"{path}: expected an image input (N, C, H, W) with fixed C, H, W, found {dims}")
    out = proto.graph.output[0].name
    producer = next((n for n in proto.graph.node if out in n.output), None)
    out_dims = session.get_outputs()[0].shape
    classes = out_dims[1] if len(out_dims) >= 2 and isinstance(out_dims[1], int) else None
    if classes is None:
        classes = int(_OrtModel(session, path)(torch.zeros((1, *dims[1:]))).shape[1])
    props = {p.key: p.value for p in proto.metadata_props}
    try:
        meta = json.loads(props.get("compress_meta", "{}"))
    except ValueError:
        meta = {}
    preprocess = meta.get("preprocess") if isinstance(meta, dict) else None
    probabilities = producer is not None and producer.op_type == "Softmax"
    return _Loaded(session, (1, *dims[1:]), _class_count((1, classes), path), preprocess, probabilities,
                   "onnxruntime"), dev


def _class_count(shape: tuple[int, ...], where: str) -> int:
    flat = math.prod(shape[1:]) if len(shape) > 1 else 0
    if len(shape) < 2 or flat != shape[1] or shape[1] < 1:
        raise CompressError(f"{where}: expected class scores of shape (N, classes), found {list(shape)}")
    return int(shape[1])


@dataclass(frozen=True)
class _Test:
    loader: Any
    size: int  # images in the whole test split
    meaningful: bool


def _test_loader(data: str, loaded: _Loaded, batch_size: int, limit: int | None) -> _Test:
    """The test split of ``data`` shaped and preprocessed for the model, its first ``limit`` images."""
    from torch.utils.data import DataLoader, Subset

    from compress.data import get_data

    splits = get_data(data, loaded.input_shape, batch_size=batch_size, num_classes=loaded.classes,
                      preprocess=loaded.preprocess)
    _check_class_count(data, splits.meta, loaded.classes)
    test = splits.test
    size = len(test.dataset)
    if limit is not None and limit < size:
        test = DataLoader(Subset(test.dataset, range(limit)), batch_size=batch_size, shuffle=False,
                          num_workers=0, collate_fn=test.collate_fn)
    return _Test(test, size, splits.meta.get("source") != "synthetic")


def _check_class_count(data: str, meta: dict, outputs: int) -> None:
    """The data's classes must be the model's outputs: a folder with fewer classes than the model (one
    folder of images taken for one class, a subset of the labels) gives a number that means nothing."""
    found = meta.get("classes_found")
    if found is None or found == outputs:
        return
    names = meta.get("classes")
    what = f"{found} class{'es' if found != 1 else ''}"
    if names:
        shown = ", ".join(str(n)[:40] for n in names[:5]) + (", ..." if len(names) > 5 else "")
        what += f" ({shown}{'; layout ' + meta['layout'] if meta.get('layout') else ''})"
    hint = ""
    root = meta.get("root")
    if root and any(Path(root).glob("*.txt")):
        hint = ("; its .txt files look like Caffe ImageData lists: evaluate with --solver and the net that "
                "reads them")
    raise CompressError(f"{data}: the data has {what} but the model has {outputs} outputs; give the test "
                        f"data the model was trained on{hint}")


__all__ = ["EvalReport", "EvalResult", "evaluate", "evaluate_model", "topk_hits"]
