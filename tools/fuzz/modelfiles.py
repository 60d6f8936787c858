"""Mutated model files and malicious pickles.

Model files start from the zoo LeNet's and are changed at three levels: the dict ``torch.save`` wrote
(format and version, a mutated netdef, ``meta`` nested deep or not an object or with a known key of the
wrong type, blobs that are ``None``, sparse, on the meta device, of another dtype or shape, missing,
extra, shared), the zip archive (a storage deflated into a zip bomb, the pickle compressed, records
missing or duplicated), and the bytes (cut, flipped, overwritten). Malicious pickles come from
``payloads.py``.
"""
from __future__ import annotations

import io
import json
import random
import warnings
import zipfile

from tools.fuzz import payloads, prototxts, seeds, values
from tools.fuzz.case import MARKER, Case, mutate_bytes


def generate(rng: random.Random) -> Case:
    base = seeds.lenet_model_file()
    if rng.random() < 0.15:
        data, kind = mutate_bytes(rng, base)
        return Case("modelfile", f"bytes-{kind}", {"m.pt": data}, "m.pt")
    if rng.random() < 0.15:
        data, kind = zip_mutation(rng, base)
        return Case("modelfile", f"zip-{kind}", {"m.pt": data}, "m.pt")
    data = _lenet_dict()
    kind = rng.choice(list(_DICT_OPS))
    data = _DICT_OPS[kind](rng, data)
    return Case("modelfile", f"dict-{kind}", {"m.pt": seeds.save_dict(data)}, "m.pt")


def generate_pickle(rng: random.Random, directory: str) -> Case:
    every = payloads.pickles(f"{directory}/{MARKER}")
    name, how = rng.choice(sorted(every)), rng.choice(payloads.WRAPPINGS)
    data = payloads.wrap(every[name], how, seeds.lenet_model_file())
    suffix = rng.choice([".pt", ".pt", ".pth", ".pkl", ".bin"])
    return Case("pickle", f"{name}@{how}", {f"m{suffix}": data}, f"m{suffix}", payload=True)


# -- dict mutations --------------------------------------------------------------------------------

def _lenet_dict() -> dict:
    import torch

    data = torch.load(io.BytesIO(seeds.lenet_model_file()), weights_only=True)
    data["blobs"] = {k: list(v) for k, v in data["blobs"].items()}
    return data


def _format(rng, d):
    d["format"] = rng.choice(["compress-modl", "", None, 1, "COMPRESS-MODEL"])
    if rng.random() < 0.3:
        del d["format"]
    return d


def _version(rng, d):
    d["version"] = rng.choice([0, 2, -1, 2**63, "1", True, None, 1.0, [1]])
    return d


def _netdef(rng, d):
    if rng.random() < 0.2:
        d["netdef"] = rng.choice([None, b"bytes", 5, "", "x" * 100000])
    else:
        d["netdef"] = prototxts.generate(rng).files["net.prototxt"].decode("utf-8", errors="replace")
    return d


def _meta(rng, d):
    kind = rng.choice(["deep", "deep", "string", "list", "number", "null", "invalid", "wrong-type", "big"])
    depth = rng.choice([33, 100, 1000, 100000])
    d["meta"] = {
        "deep": "[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth,
        "string": json.dumps("a string"), "list": json.dumps([1, 2]), "number": "5", "null": "null",
        "invalid": "{not json", "big": json.dumps({"history": [{"epoch": i} for i in range(20000)]}),
        "wrong-type": json.dumps({rng.choice(["targets", "preprocess", "history", "accuracy_after",
                                              "hyperparameters", "source", "initialized"]):
                                  rng.choice([5, "x", [1], {"a": 1}, None, True])}),
    }[kind]
    if rng.random() < 0.1:
        d["meta"] = rng.choice([{"a": 1}, None, 5, b"{}"])
    return d


def _blobs(rng, d):
    import torch

    blobs = d["blobs"]
    name = rng.choice(sorted(blobs))
    kind = rng.choice(["none", "sparse", "meta", "int", "bool", "complex", "double", "half", "shape",
                       "missing", "extra", "empty", "tuple", "nested", "key", "nan", "view", "scalar",
                       "shared", "parameter", "not-dict", "transposed"])
    w = blobs[name][0]
    if kind == "none":
        blobs[name][0] = None
    elif kind == "sparse":
        blobs[name][0] = w.to_sparse()
    elif kind == "meta":
        blobs[name][0] = torch.empty(w.shape, device="meta")
    elif kind in ("int", "bool", "complex", "double", "half"):
        dtype = {"int": torch.int64, "bool": torch.bool, "complex": torch.complex64, "double": torch.float64,
                 "half": torch.float16}[kind]
        blobs[name][0] = w.to(dtype)
    elif kind == "shape":
        blobs[name][0] = w.reshape(-1)[: max(1, w.numel() - rng.choice([0, 1]))].reshape(-1, 1)
    elif kind == "missing":
        del blobs[name]
    elif kind == "extra":
        blobs[rng.choice(["nope", "data", "prob", "x" * 3000])] = [torch.zeros(2)]
    elif kind == "empty":
        blobs[name] = []
    elif kind == "tuple":
        blobs[name] = tuple(blobs[name])
    elif kind == "nested":
        blobs[name] = [blobs[name]]
    elif kind == "key":
        blobs[1] = blobs.pop(name)
    elif kind == "nan":
        blobs[name][0] = torch.full_like(w, float("nan"))
    elif kind == "view":  # a slice of a larger storage: torch.save writes the whole storage
        blobs[name][0] = torch.zeros(w.numel() * 3)[w.numel():2 * w.numel()].reshape(w.shape)
    elif kind == "scalar":
        blobs[name][0] = torch.tensor(1.0)
    elif kind == "shared":
        other = rng.choice(sorted(blobs))
        blobs[name] = blobs[other]
    elif kind == "parameter":
        blobs[name][0] = torch.nn.Parameter(w.clone())
    elif kind == "transposed" and w.dim() == 2:
        blobs[name][0] = w.t().contiguous().t()
    else:
        d["blobs"] = rng.choice([None, [], "blobs", {"conv1": None}])
    return d


def _shape(rng, d):
    d = rng.choice([[d], "a string", 5, None, (1, 2)])
    return d


def _extra(rng, d):
    d[rng.choice(["extra", 5, "Format"])] = rng.choice([values.name_value(rng), None, [1, 2]])
    return d


_DICT_OPS = {"format": _format, "version": _version, "netdef": _netdef, "meta": _meta, "meta2": _meta,
             "blobs": _blobs, "blobs2": _blobs, "blobs3": _blobs, "top-level": _shape, "extra-key": _extra}


def archive_mutation(rng: random.Random, archive: bytes, mutate) -> tuple[bytes, str]:
    """A ``torch.save`` archive (a quantized model file, a solver state) mutated: its bytes (10%), its
    zip entries (10%), or the dict it holds, loaded and saved again around ``mutate(rng, dict) -> name``."""
    import torch

    r = rng.random()
    if r < 0.1:
        data, what = mutate_bytes(rng, archive)
        return data, f"bytes-{what}"
    if r < 0.2:
        data, what = zip_mutation(rng, archive)
        return data, f"zip-{what}"
    d = torch.load(io.BytesIO(archive), weights_only=True)
    what = mutate(rng, d)
    return seeds.save_dict(d), what


# -- zip mutations ---------------------------------------------------------------------------------

def zip_mutation(rng: random.Random, archive: bytes) -> tuple[bytes, str]:
    """One mutation of a ``torch.save`` archive at the zip level (its entries, or its end records)."""
    kind = rng.choice(["bomb", "deflate-all", "drop-record", "dup-record", "swap-storages",
                       "grow-storage", "shrink-storage", "rename-archive", "zip64-disk"])
    if kind == "zip64-disk":  # the zip64 end-of-directory locator names another disk
        data = bytearray(archive)
        locator = data.rfind(b"PK\x06\x07")
        if locator >= 0:
            data[locator + 4 + rng.randrange(4)] = rng.choice([1, 2, 0xFF])
            data[locator + 16 + rng.randrange(4)] = rng.choice([0, 1, 2, 0xFF])  # the number of disks
        return bytes(data), kind
    src = zipfile.ZipFile(io.BytesIO(archive))
    entries = [(i.filename, src.read(i)) for i in src.infolist()]
    storages = [k for k, (n, _) in enumerate(entries) if "/data/" in n]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        if kind == "bomb":  # a storage that inflates to 64 or 256 MB from a few hundred KB
            k = rng.choice(storages)
            size = rng.choice([64, 256]) << 20
            for j, (name, data) in enumerate(entries):
                if j == k:
                    _write_bomb(dst, name, size)
                else:
                    dst.writestr(name, data)
            return out.getvalue(), f"bomb-{size >> 20}MB"
        for j, (name, data) in enumerate(entries):
            if kind == "drop-record" and j == len(entries) // 2:
                continue
            if kind == "grow-storage" and j in storages[:1]:
                data = data + bytes(rng.choice([4, 4096, 1 << 20]))
            if kind == "shrink-storage" and j in storages[-1:]:
                data = data[: len(data) // 2]
            if kind == "swap-storages" and j == storages[0]:
                data = entries[storages[-1]][1]
            if kind == "rename-archive":
                name = "other/" + name.split("/", 1)[1]
            compress = zipfile.ZIP_DEFLATED if kind == "deflate-all" else zipfile.ZIP_STORED
            dst.writestr(name, data, compress_type=compress)
            if kind == "dup-record" and j == 0:
                with warnings.catch_warnings():  # the duplicate is the point
                    warnings.simplefilter("ignore")
                    dst.writestr(name, data)
    return out.getvalue(), kind


def _write_bomb(dst: zipfile.ZipFile, name: str, size: int) -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    chunk = bytes(1 << 20)
    with dst.open(info, "w", force_zip64=True) as f:
        for _ in range(size >> 20):
            f.write(chunk)
