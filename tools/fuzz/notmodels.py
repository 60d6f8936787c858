"""Files that are not models, as users hand them over by mistake: a README, an image, an ONNX model, an
archive, a NumPy array, a plain pickle or state dict, a prototxt or caffemodel under a ``.pt`` name,
files with other formats' magic numbers, random bytes, an empty file."""
from __future__ import annotations

import io
import random
import zipfile

from tools.fuzz import seeds
from tools.fuzz.case import Case


def generate(rng: random.Random) -> Case:
    kind = rng.choice(list(_OTHER_FILES))
    name, data = _OTHER_FILES[kind](rng)
    return Case("not-a-model", kind, {name: data}, name)


def _readme(rng):
    text = b"# compress\n\nA tool.\n" * rng.randint(1, 50)
    return rng.choice(["README.md", "README.pt", "notes.txt"]), text


def _png(rng):
    return rng.choice(["m.png", "m.pt"]), b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(200))


def _jpeg(rng):
    return "m.jpg", b"\xff\xd8\xff\xe0" + bytes(rng.randrange(256) for _ in range(200))


def _onnx(rng):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, producer_name="pytorch")
    return rng.choice(["m.onnx", "m.pt", "model"]), model.SerializeToString()


def _random(rng):
    n = rng.choice([1, 100, 5000])
    return rng.choice(["m.pt", "m.bin", "m"]), bytes(rng.randrange(256) for _ in range(n))


def _empty(rng):
    return rng.choice(["m.pt", "empty"]), b""


def _zip(rng):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("readme.txt", "hello")
    return rng.choice(["m.zip", "m.pt"]), out.getvalue()


def _npy(rng):
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3), np.float32))
    return "m.npy", buf.getvalue()


def _plain_pickle(rng):
    import pickle

    return "m.pt", pickle.dumps({"state_dict": {"w": [1.0, 2.0]}}, protocol=rng.choice([2, 4, 5]))


def _state_dict(rng):
    import torch

    return "m.pt", seeds.save_dict({"conv1.weight": torch.zeros(2, 2)})


def _prototxt_as_pt(rng):
    return "m.pt", seeds.lenet_prototxt().encode()


def _caffemodel_as_pt(rng):
    return rng.choice(["m.pt", "m.bin"]), seeds.lenet_caffemodel()[:4096]


def _magic(rng):
    magic = rng.choice([b"\x1f\x8b\x08\x00", b"BZh91AY", b"\xfd7zXZ\x00", b"\x89HDF\r\n\x1a\n", b"%PDF-1.4",
                        b"\x7fELF\x02\x01\x01", b"GIF89a"])
    return "m.pt", magic + bytes(rng.randrange(256) for _ in range(100))


_OTHER_FILES = {"readme": _readme, "png": _png, "jpeg": _jpeg, "onnx": _onnx, "random": _random,
                "empty": _empty, "zip": _zip, "npy": _npy, "pickle": _plain_pickle,
                "state-dict": _state_dict, "prototxt-as-pt": _prototxt_as_pt,
                "caffemodel-as-pt": _caffemodel_as_pt, "magic": _magic}
