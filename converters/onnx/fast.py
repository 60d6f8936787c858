"""Quantized weights in the forms stock onnxruntime runs fast (the default of ``compress export``).

onnxruntime keeps every ``DequantizeLinear`` for its QDQ fusions, so a packed weight that reaches a float
Conv or Gemm through one is dequantized again on every run (measured on LeNet with onnxruntime 1.32: 1.6x
slower at 8 bits, 5.4x at 4 bits). Plain operators on constants fold once, when the session loads. So each
quantized weight keeps the storage :mod:`converters.onnx.quantized` picks (packed codes, dense or sparse:
the file is as small) and gets one of two run-time forms:

``nbits``
    an InnerProduct (``Gemm``, ``transB=1``) whose codes fit 4 bits (2-4-bit grids) and that has at least
    :data:`NBITS_MIN_WEIGHTS` weights runs as ``com.microsoft.MatMulNBits`` (4-bit, blocks of
    :data:`NBITS_BLOCK` along K, each block of row ``n`` with the layer's scale ``s_n``, zero point 8,
    ``accuracy_level`` 0: float32 arithmetic on ``(code) * s_n``, the very weights of the model file). Its
    ``B`` and ``scales`` are computed from the stored codes by plain operators, which onnxruntime folds at
    load, so the kernel reads 4-bit weights at every run: an eighth of the memory traffic of float32, what
    a fully connected layer at batch 1 is bound by (AlexNet's fc6, 37.7M weights: 2.5-2.7x faster alone;
    at batch 32 the same speed). Smaller layers stay float (LeNet's ip1, 400k weights: MatMulNBits was
    0.73-0.86x of the float Gemm), as do 8-bit grids (onnxruntime's 8-bit and 2-bit MatMulNBits kernels
    at accuracy level 0 ran 20x slower than float32; higher levels quantize the activations).
``float``
    everything else: ``Cast`` of the codes to float32 times the scales (what ``DequantizeLinear``
    computes, to the bit), folded at load into the float32 weight: the float model's speed.

Both forms need onnxruntime >= :data:`MIN_ORT` (see :func:`check_onnxruntime`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NBITS_MIN_WEIGHTS = 1 << 20
NBITS_BLOCK = 128
NBITS_BITS = 4  # the one MatMulNBits width with a fast float kernel (accuracy level 0)
MS_DOMAIN = "com.microsoft"
MIN_ORT = (1, 20)  # MatMulNBits' bias input, Cast from INT4; see docs/DEPLOY.md for what was measured


@dataclass(frozen=True)
class Form:
    kind: str  # "float" or "nbits" (or "dequantize": the --pack form, DequantizeLinear at every run)
    why: str  # one phrase: what runs, and at what cost

    def describe(self) -> str:
        return self.why


def choose_form(layer: str, bits: int, shape: tuple[int, ...], gemm: onnx.NodeProto | None) -> Form:
    """The run-time form of a quantized weight of ``shape`` read by ``gemm`` (None: read by anything else)."""
    n = int(np.prod(shape))
    if gemm is not None and len(shape) == 2 and _plain_gemm(gemm):
        if bits > NBITS_BITS:
            if n >= NBITS_MIN_WEIGHTS:
                return Form("float", f"decoded to float32 at load: {bits}-bit codes have no fast MatMulNBits "
                                     "kernel in onnxruntime (float32 speed and memory)")
        elif n >= NBITS_MIN_WEIGHTS:
            return Form("nbits", "runs as MatMulNBits (4-bit weights read at every run, decoded at load)")
    return Form("float", "decoded to float32 at load")


def _plain_gemm(node: onnx.NodeProto) -> bool:
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    return (node.op_type == "Gemm" and a.get("transB", 0) == 1 and a.get("transA", 0) == 0
            and a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0)


def float_weight(name: str, q: TensorProto, scales: np.ndarray, ndim: int):
    """``Cast(q) * s`` -> ``name`` (float32, folded at load): the dense codes' float form."""
    from converters.onnx import lowbit

    s = np.asarray(scales, dtype=np.float32).reshape(-1)
    s = s.reshape(()) if s.size == 1 else s.reshape((-1,) + (1,) * (ndim - 1))
    inits, nodes = lowbit.scales(f"{name}_scale", s)
    nodes += [helper.make_node("Cast", [q.name], [f"{name}_codes"], name=f"{name}/Cast",
                               to=TensorProto.FLOAT),
              helper.make_node("Mul", [f"{name}_codes", f"{name}_scale"], [name], name=f"{name}/Mul")]
    return inits, nodes


def nbits_layer(gemm: onnx.NodeProto, name: str, codes: np.ndarray, bits: int, scales: np.ndarray,
                sparse_index_bits: int | None):
    """``(initializers, decoding nodes, MatMulNBits node)`` that replace ``gemm`` (``Y = X W^T + b``,
    ``W`` of shape ``(N, K)`` with integer ``codes`` on a ``bits``-bit grid). The stored codes are unsigned,
    ``u = q + L`` (``L = 2^(bits-1) - 1``, MatMulNBits' zero point, so zero is ``u = L``), padded along K to
    whole blocks with zeros:

    - dense 4-bit codes are stored as ``B`` itself (packed two per byte, low nibble first: ONNX's UINT4
      packing is MatMulNBits' layout), nothing to decode;
    - dense 2-bit codes are stored as UINT2, widened to bytes and paired into nibbles at load;
    - sparse codes (``sparse_index_bits``: the skip width) store ``u XOR L`` (so a filler, 0, is a zero
      weight) with :mod:`converters.onnx.lowbit`'s skips; at load each entry is shifted into its nibble
      and ``ScatterElements(reduction="add")`` writes the bytes directly (about a byte per weight of
      memory while the session loads, instead of the four of a float weight), then ``XOR (L | L << 4)``.

    The scales (one per row, every block of row ``n`` taking ``s_n``) and zero points are expanded from
    ``N`` values at load too."""
    from converters.onnx import lowbit

    n, k = codes.shape
    blocks = -(-k // NBITS_BLOCK)
    kp = blocks * NBITS_BLOCK
    levels = (1 << (bits - 1)) - 1
    p = f"{name}_nbits"
    mk = helper.make_node
    const = _consts(p)
    u = np.full((n, kp), levels, np.int64)
    u[:, :k] = codes + levels
    inits: list = []
    nodes: list = []
    if sparse_index_bits is None and bits > 2:
        lo, hi = u[:, 0::2], u[:, 1::2]
        inits.append(numpy_helper.from_array((lo | (hi << 4)).astype(np.uint8).reshape(n, blocks, -1),
                                             f"{p}_B"))
    elif sparse_index_bits is None:
        q = lowbit.pack(u, lowbit.index_storage(2), f"{name}_q")
        inits.append(q)
        nodes += [mk("Cast", [q.name], [f"{p}_u8"], name=f"{p}/Cast", to=TensorProto.UINT8),
                  mk("Reshape", [f"{p}_u8", const(f"{p}_pairs", [n * kp // 2, 2])], [f"{p}_pairs2"],
                     name=f"{p}/Pairs"),
                  mk("Slice", [f"{p}_pairs2", const(f"{p}_0", [0]), const(f"{p}_1", [1]),
                               const(f"{p}_ax1", [1])], [f"{p}_lo"], name=f"{p}/Lo"),
                  mk("Slice", [f"{p}_pairs2", f"{p}_1", const(f"{p}_2", [2]), f"{p}_ax1"], [f"{p}_hi"],
                     name=f"{p}/Hi"),
                  mk("BitShift", [f"{p}_hi", const(f"{p}_4", 4, np.uint8)], [f"{p}_hi4"], name=f"{p}/Shift",
                     direction="LEFT"),
                  mk("BitwiseOr", [f"{p}_lo", f"{p}_hi4"], [f"{p}_bytes"], name=f"{p}/Or"),
                  mk("Reshape", [f"{p}_bytes", const(f"{p}_blob", [n, blocks, NBITS_BLOCK // 2])], [f"{p}_B"],
                     name=f"{p}/B")]
    else:
        flat = u.reshape(-1)
        real_pos = np.flatnonzero(flat != levels)
        skips, real = lowbit.encode_positions(real_pos, sparse_index_bits)
        values = np.zeros(skips.size, dtype=np.int64)
        values[real] = flat[real_pos] ^ levels
        width = 2 if bits == 2 else 4
        q = lowbit.pack(values, lowbit.index_storage(width), f"{name}_q")
        skip = lowbit.pack(skips, lowbit.index_storage(sparse_index_bits), f"{name}_skip")
        inits += [q, skip]
        nodes += [mk("Cast", [skip.name], [f"{p}_skip64"], name=f"{p}/CastSkip", to=TensorProto.INT64),
                  mk("Add", [f"{p}_skip64", const(f"{p}_one", 1)], [f"{p}_steps"], name=f"{p}/Steps"),
                  mk("CumSum", [f"{p}_steps", const(f"{p}_zero", 0)], [f"{p}_ends"], name=f"{p}/CumSum"),
                  mk("Sub", [f"{p}_ends", f"{p}_one"], [f"{p}_pos"], name=f"{p}/Positions"),
                  mk("Div", [f"{p}_pos", const(f"{p}_two", 2)], [f"{p}_byte"], name=f"{p}/Byte"),
                  mk("Mod", [f"{p}_pos", f"{p}_two"], [f"{p}_odd"], name=f"{p}/Odd"),
                  mk("Mul", [f"{p}_odd", const(f"{p}_four", 4)], [f"{p}_shift64"], name=f"{p}/ShiftBy"),
                  mk("Cast", [f"{p}_shift64"], [f"{p}_shift"], name=f"{p}/CastShift", to=TensorProto.UINT8),
                  mk("Cast", [q.name], [f"{p}_v"], name=f"{p}/CastValues", to=TensorProto.UINT8),
                  mk("BitShift", [f"{p}_v", f"{p}_shift"], [f"{p}_nibbles"], name=f"{p}/Nibbles",
                     direction="LEFT"),
                  mk("ConstantOfShape", [const(f"{p}_bytes_n", [n * kp // 2])], [f"{p}_zeros"],
                     name=f"{p}/Zeros", value=numpy_helper.from_array(np.array([0], np.uint8))),
                  mk("ScatterElements", [f"{p}_zeros", f"{p}_byte", f"{p}_nibbles"], [f"{p}_xored"],
                     name=f"{p}/Scatter", axis=0, reduction="add"),
                  mk("BitwiseXor", [f"{p}_xored", const(f"{p}_ll", levels | (levels << 4), np.uint8)],
                     [f"{p}_bytes"], name=f"{p}/Xor"),
                  mk("Reshape", [f"{p}_bytes", const(f"{p}_blob", [n, blocks, NBITS_BLOCK // 2])], [f"{p}_B"],
                     name=f"{p}/B")]
    s = np.asarray(scales, dtype=np.float32).reshape(-1)
    s = np.full(n, s[0], np.float32) if s.size == 1 else s
    inits.append(numpy_helper.from_array(s.reshape(n, 1), f"{p}_scale"))
    zp_bytes = -(-blocks // 2)
    nodes += [mk("Expand", [f"{p}_scale", const(f"{p}_sshape", [n, blocks])], [f"{p}_scales2"],
                 name=f"{p}/Expand"),
              mk("Reshape", [f"{p}_scales2", const(f"{p}_flat", [-1])], [f"{p}_scales"],
                 name=f"{p}/Scales"),
              mk("ConstantOfShape", [const(f"{p}_zshape", [n, zp_bytes])], [f"{p}_zp"],
                 name=f"{p}/ZeroPoints",
                 value=numpy_helper.from_array(np.array([levels | (levels << 4)], np.uint8)))]
    inits += const.tensors
    bias = gemm.input[2] if len(gemm.input) > 2 and gemm.input[2] else ""
    inputs = [gemm.input[0], f"{p}_B", f"{p}_scales", f"{p}_zp"] + (["", bias] if bias else [])
    matmul = mk("MatMulNBits", inputs, list(gemm.output), name=gemm.name, domain=MS_DOMAIN, K=k, N=n,
                bits=NBITS_BITS, block_size=NBITS_BLOCK)
    return inits, nodes, matmul


class _consts:
    """Named constants of one layer's decoding, created on first use."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.tensors, self.names = prefix, [], set()

    def __call__(self, name: str, value, dtype=np.int64) -> str:
        if name not in self.names:
            self.names.add(name)
            self.tensors.append(numpy_helper.from_array(np.array(value, dtype), name))
        return name


def nbits_reference(b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, k: int) -> np.ndarray:
    """The float32 weight ``(N, K)`` that MatMulNBits computes with from its ``B`` (uint8 ``(N, blocks,
    block/2)``), ``scales`` (``N * blocks``) and ``zero_points`` (uint8 ``(N, ceil(blocks/2))``, two 4-bit
    values a byte): for tests and ``decode_weights``."""
    n, blocks, half = b.shape
    lo, hi = (b & 0x0F).astype(np.int64), (b >> 4).astype(np.int64)
    zp = np.stack([zero_points & 0x0F, zero_points >> 4], axis=-1).reshape(n, -1)[:, :blocks].astype(np.int64)
    codes = (np.stack([lo, hi], axis=-1).reshape(n, blocks, half * 2) - zp[:, :, None]).reshape(n, -1)[:, :k]
    s = np.asarray(scales, np.float32).reshape(n, blocks)
    per = np.repeat(s, half * 2, axis=1)[:, :k]
    return codes.astype(np.float32) * per


def check_onnxruntime(need: tuple[int, int] = MIN_ORT) -> str | None:
    """None when the installed onnxruntime (if any) runs the fast forms, else one line saying what is
    needed. Without onnxruntime here there is nothing to check: the file is written for elsewhere."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    try:
        have = tuple(int(p) for p in ort.__version__.split(".")[:2])
    except ValueError:
        return None
    if have >= need:
        return None
    want = ".".join(map(str, need))
    return (f"the fast form needs onnxruntime >= {want} (MatMulNBits with a bias, Cast from INT4/INT2); this "
            f"onnxruntime is {ort.__version__}: upgrade it, or give --pack for the portable DequantizeLinear "
            "form")
