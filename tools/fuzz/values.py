"""Values that break loaders: boundary integers, non-finite floats, names that collide or are not text.

Each list comes from a defect class seen in real loaders: products that wrap int64, 32-bit limits,
NaN parameters, layer names equal to attributes of ``nn.Module`` or of the net, names that differ only
in ``.`` vs ``_`` (the same attribute once dots are replaced), names that are not UTF-8, and names long
enough to flood a message.
"""
from __future__ import annotations

import math
import random

INTS = [0, 1, -1, 2, 3, 4, 7, 8, 16, 255, 256, 1000, 4096, 30000, 65535, 65536, 2**31 - 1, 2**31, 2**32,
        2**32 + 1, 2**40, 2**62, 2**63 - 1, -(2**31), -(2**63)]
FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-30, 1e30, -1e30, 3.4e38, -3.4e38, 1e-45, math.inf, -math.inf,
          math.nan]
RESERVED = ["forward", "nodes", "inputs", "outputs", "training", "eval", "name", "layer", "netdef",
            "_modules", "_parameters", "blob_shapes", "build_report", "_attrs", "T_destination", "cuda",
            "state_dict", "node", "__class__", "__dict__"]
NAMES = [*RESERVED, "", " ", "c.1", "c_1", "a.b", "a_b", "layer_c_1", "data", "conv1", "ip1", "prob", "label",
         "inception_3a/1x1", "ü名", "x" * 3000, "dots.in.a.name", "tab\tname", "new\nline", "loss"]
TYPES = ["Convolution", "InnerProduct", "Pooling", "ReLU", "Softmax", "LRN", "Concat", "Eltwise", "Split",
         "Reshape", "Flatten", "BatchNorm", "Scale", "PReLU", "Sigmoid", "TanH", "Dropout", "Deconvolution",
         "Input", "Data", "DummyData", "MemoryData", "SoftmaxWithLoss", "Accuracy", "Silence", "NoSuchType",
         "", "x" * 3000]
BAD_BYTES = [b"\xff", b"bad\xffname", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\x80abc"]


def int_value(rng: random.Random) -> int:
    return rng.choice(INTS) if rng.random() < 0.8 else rng.randint(-(2**20), 2**20)


def float_value(rng: random.Random) -> float:
    return rng.choice(FLOATS) if rng.random() < 0.8 else rng.uniform(-1e3, 1e3)


def name_value(rng: random.Random) -> str:
    return rng.choice(NAMES)


def name_bytes(rng: random.Random) -> bytes:
    """A name as raw bytes: one of :data:`NAMES`, or bytes that are not UTF-8."""
    return rng.choice(BAD_BYTES) if rng.random() < 0.3 else name_value(rng).encode()
