"""Mutated quantized model files, run through ``info``, ``export``, ``eval`` and ``verify``.

The seeds are real outputs of the tool (``seeds.quantized``): the zoo LeNet quantized by
``compress quantize`` at 4 and 2 bits, and a mostly pruned LeNet at 2 bits (whose ONNX stores the sparse
encoding). A model file is changed where a quantized one differs from others: its grid record
(scales that are NaN, infinite, 0, beyond a float32 or a float, of the wrong count or type; bits, axis
and zero point out of range; layers missing, unknown, or named with 100,000 characters), its weights
(off the grid, NaN, a whole layer zero), its preprocessing record (a NaN mean, an infinite scale);
or at the zip and byte level (``modelfiles.py``).
"""
from __future__ import annotations

import json
import random

from tools.fuzz import seeds
from tools.fuzz.case import Case
from tools.fuzz.modelfiles import archive_mutation

SPECIAL = [float("nan"), float("inf"), float("-inf"), 0, -1, 1e300, 1e-50, 10 ** 400, -10 ** 400, "0.5", True,
           None, [1], 2 ** 64, 3.4e38]
LONG_NAME = "x" * 100000


def generate(rng: random.Random) -> Case:
    kind = rng.choice(seeds.QUANTIZED)
    model, onnx_file = seeds.quantized(kind)
    data, what = archive_mutation(rng, model, _mutate)
    command = rng.choice(["info", "export", "eval", "verify"])
    argv = {"info": ("info", "q.pt"), "export": ("export", "q.pt", "-o", "out.onnx"),
            "eval": ("eval", "q.pt", "--data", seeds.eval_data(), "--limit", "64", "--batch-size", "32",
                     "--device", "cpu"),
            "verify": ("verify", "ref.onnx", "--against", "q.pt", "--batch-size", "4", "--repeats", "1"),
            }[command]
    files = {"q.pt": data, **({"ref.onnx": onnx_file} if command == "verify" else {})}
    return Case("quantized", f"{kind}:{what}>{command}", files, argv=argv, writes=("out.onnx",))


def _mutate(rng: random.Random, d: dict) -> str:
    op = rng.choice(list(_OPS))
    return _OPS[op](rng, d) or op


def _edit_meta(d: dict, edit) -> None:
    meta = json.loads(d["meta"])
    edit(meta)
    d["meta"] = json.dumps(meta)


def _layer(rng, meta) -> tuple[str, dict]:
    layers = meta["quantization"]["layers"]
    name = rng.choice(sorted(layers))
    return name, layers[name]


def _scale(rng, d):
    def edit(meta):
        _, entry = _layer(rng, meta)
        entry["scales"][rng.randrange(len(entry["scales"]))] = rng.choice(SPECIAL)
    _edit_meta(d, edit)


def _scales(rng, d):
    def edit(meta):
        _, entry = _layer(rng, meta)
        s = entry["scales"]
        entry["scales"] = rng.choice([s[:-1], s + [s[0]], [], s[:1], {"0": s[0]}, "scales", None, [s]])
    _edit_meta(d, edit)


def _grid_field(rng, d):
    key = rng.choice(["bits", "axis", "zero_point"])

    def edit(meta):
        _, entry = _layer(rng, meta)
        entry[key] = rng.choice([0, 1, 9, -1, 2, 2 ** 40, 10 ** 400, "4", True, 3.5, None, [0], float("nan")])
        if rng.random() < 0.2:
            del entry[key]
    _edit_meta(d, edit)
    return f"grid-{key}"


def _record(rng, d):
    kind = rng.choice(["drop-layer", "unknown-layer", "long-layer", "rename", "layers", "record", "top"])

    def edit(meta):
        rec = meta["quantization"]
        name = rng.choice(sorted(rec["layers"]))
        if kind == "drop-layer":
            del rec["layers"][name]
        elif kind in ("unknown-layer", "long-layer", "rename"):
            new = {"unknown-layer": "conv9", "long-layer": LONG_NAME, "rename": "ip1 "}[kind]
            rec["layers"][new] = rec["layers"].pop(name) if kind != "unknown-layer" else rec["layers"][name]
        elif kind == "layers":
            rec["layers"] = rng.choice([[], {}, "layers", None, [rec["layers"]]])
        elif kind == "record":
            meta["quantization"] = rng.choice([[], "x", 5, {}, {"layers": None}])
        else:
            rec[rng.choice(["bits", "method", "per_channel", "first_last_bits"])] = rng.choice(SPECIAL)
    _edit_meta(d, edit)
    return f"record-{kind}"


def _weights(rng, d):
    import torch

    layers = sorted(json.loads(d["meta"])["quantization"]["layers"])
    name = rng.choice(layers)
    w, b = d["blobs"][name][0], d["blobs"][name][1]
    kind = rng.choice(["off-grid", "nan", "inf", "bias-nan", "double", "zero-layer", "zero-filter", "huge"])
    flat = w.view(-1)
    i = rng.randrange(flat.numel())
    if kind == "off-grid":
        flat[i] = flat[i] + 1e-4
    elif kind in ("nan", "inf"):
        flat[i] = float(kind)
    elif kind == "bias-nan":
        b.view(-1)[rng.randrange(b.numel())] = float("nan")
    elif kind == "double":
        w.mul_(2)
    elif kind == "zero-layer":
        w.zero_()
    elif kind == "zero-filter":
        w[rng.randrange(w.shape[0])] = 0
    else:
        flat[i] = torch.tensor(3e38)
    return f"weights-{kind}"


def _preprocess(rng, d):
    kind = rng.choice(["mean", "scale", "channel_order", "mean_file", "unknown", "record"])

    def edit(meta):
        pre = meta.setdefault("preprocess", {"scale": 0.00390625, "mean": None, "channel_order": "gray"})
        if not isinstance(pre, dict):
            return
        if kind == "mean":
            pre["mean"] = rng.choice([[float("nan")], [float("inf")], [10 ** 400], [], ["x"], [0.1] * 3,
                                      [True], "mean", [0.5]])
        elif kind == "scale":
            pre["scale"] = rng.choice([float("nan"), float("inf"), 0, -1, 10 ** 400, "x", None, 1e-45])
        elif kind == "channel_order":
            pre["channel_order"] = rng.choice(["RGB", "BGR", "yuv", None, LONG_NAME])
        elif kind == "mean_file":
            pre["mean_file"] = rng.choice(["nope.binaryproto", LONG_NAME, "", "q.pt"])
        elif kind == "unknown":
            pre[rng.choice(["crop", LONG_NAME])] = 1
        else:
            meta["preprocess"] = rng.choice([[], "x", 5, None])
    _edit_meta(d, edit)
    return f"preprocess-{kind}"


def _meta(rng, d):
    key = rng.choice(["accuracy_after", "accuracy_before", "history", "method", "source", "dataset"])
    _edit_meta(d, lambda meta: meta.__setitem__(key, rng.choice(SPECIAL + [LONG_NAME])))
    return f"meta-{key}"


_OPS = {"scale": _scale, "scale2": _scale, "scales": _scales, "grid-field": _grid_field, "record": _record,
        "weights": _weights, "weights2": _weights, "preprocess": _preprocess, "meta": _meta}
