"""Low-bit integer tensors for ONNX: packed storage types, and the compact sparse encoding.

Storage types (ONNX packs sub-byte integers into ``raw_data``, low bits first: two INT4 or four INT2
per byte; ``onnx.numpy_helper`` does it from ``ml_dtypes`` arrays):

    weight bits  storage  DequantizeLinear needs   index bits  storage  Cast needs
    2            INT2     opset 25                 2           UINT2    opset 25
    3, 4         INT4     opset 21                 4           UINT4    opset 21
    5..8         INT8     opset 13 (per axis)      8           UINT8    opset 6

Sparse encoding of a quantized weight (codes ``q``, flattened in C order) in the spirit of Deep
Compression's relative indices (Han et al. 2016: 4-bit gaps in conv, 5-bit in fc layers, a filler zero
where a gap exceeds the range): only the nonzero codes are stored, each with the number of zeros
skipped before it, ``d_i = p_i - p_{i-1} - 1`` (``p_{-1} = -1``), as a ``k``-bit unsigned integer.
A gap of more than ``2^k - 1`` zeros is bridged by filler entries (code 0, skip ``2^k - 1``). Positions
come back as ``p = cumsum(d + 1) - 1``: inside the graph, ``Cast``, ``Add``, ``CumSum``, ``Sub``.
:func:`choose_encoding` picks, per tensor, the smallest of dense packed and sparse with each allowed
``k`` (counted exactly, fillers included).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

from converters.errors import ConversionError


@dataclass(frozen=True)
class Storage:
    bits: int  # storage width
    data_type: int  # TensorProto enum
    dtype: object  # numpy / ml_dtypes dtype
    min_opset: int


def _ml(name: str):
    import ml_dtypes

    return getattr(ml_dtypes, name)


def _type(name: str) -> int:
    value = getattr(TensorProto, name, None)
    if value is None:
        import onnx

        raise ConversionError(f"this onnx ({onnx.__version__}) has no {name} type; 2-bit tensors need "
                              "onnx >= 1.20")
    return value


def weight_storage(bits: int) -> Storage:
    """The signed storage type of ``bits``-bit codes (2: INT2, 3-4: INT4, 5-8: INT8)."""
    if bits == 2:
        return Storage(2, _type("INT2"), _ml("int2"), 25)
    if 3 <= bits <= 4:
        return Storage(4, TensorProto.INT4, _ml("int4"), 21)
    if 5 <= bits <= 8:
        return Storage(8, TensorProto.INT8, np.int8, 13)
    raise ConversionError(f"weights of {bits} bits have no packed storage type (2 to 8 bits)")


def index_storage(bits: int) -> Storage:
    """The unsigned storage type of ``bits``-bit skip counts (2: UINT2, 4: UINT4, 8: UINT8)."""
    if bits == 2:
        return Storage(2, _type("UINT2"), _ml("uint2"), 25)
    if bits == 4:
        return Storage(4, TensorProto.UINT4, _ml("uint4"), 21)
    if bits == 8:
        return Storage(8, TensorProto.UINT8, np.uint8, 6)
    raise ConversionError(f"index width must be 2, 4 or 8 bits, got {bits}")


HALF_SCALES_MIN = 16  # scales worth a Cast node: each saves 2 bytes, the node costs about 60


def scales(name: str, s: np.ndarray) -> tuple[list[TensorProto], list[NodeProto]]:
    """The float32 scales ``s`` under ``name`` as the file stores them: float16 and a ``Cast`` to float32
    when every value is exactly a float16 (the quantizer rounds them so, :func:`compress.quant.scale.
    half_storable`) and there are enough of them to pay for the node, which onnxruntime folds at load;
    float32 otherwise. Either way ``name`` holds exactly ``s``."""
    s = np.asarray(s, dtype=np.float32)
    half = s.astype(np.float16)
    if s.size >= HALF_SCALES_MIN and np.array_equal(half.astype(np.float32), s):
        stored = numpy_helper.from_array(half, f"{name}_f16")
        return [stored], [helper.make_node("Cast", [stored.name], [name], name=f"{name}/Cast",
                                           to=TensorProto.FLOAT)]
    return [numpy_helper.from_array(s, name)], []


def pack(values: np.ndarray, storage: Storage, name: str) -> TensorProto:
    """``values`` (integers in the storage type's range) as a packed initializer."""
    info = np.iinfo(np.int64)
    lo, hi = (-(1 << (storage.bits - 1)), (1 << (storage.bits - 1)) - 1) if _signed(storage) else \
        (0, (1 << storage.bits) - 1)
    v = np.asarray(values)
    if v.size and (int(v.min(initial=info.max)) < lo or int(v.max(initial=info.min)) > hi):
        raise ConversionError(f"{name}: values {int(v.min())}..{int(v.max())} do not fit "
                              f"{storage.bits}-bit storage ({lo}..{hi})")
    return numpy_helper.from_array(v.astype(storage.dtype), name)


def unpack(tensor: TensorProto) -> np.ndarray:
    """A packed initializer back as int64 values (the inverse of :func:`pack`)."""
    return numpy_helper.to_array(tensor).astype(np.int64)


def _signed(storage: Storage) -> bool:
    return storage.data_type in (TensorProto.INT8, TensorProto.INT4, getattr(TensorProto, "INT2", -1))


def encode_positions(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Skip counts of sorted flat ``positions`` at ``index_bits``, with fillers: ``(skips, is_real)``,
    where ``is_real`` marks the entries that carry a stored value (fillers carry code 0)."""
    p = np.asarray(positions, dtype=np.int64)
    gaps = np.diff(p, prepend=-1) - 1
    if gaps.size and int(gaps.min()) < 0:
        raise ConversionError("positions must be strictly increasing")
    span = 1 << index_bits  # one entry advances at most span positions
    fillers = gaps // span
    total = int(p.size + fillers.sum())
    skips = np.full(total, span - 1, dtype=np.int64)
    real = np.zeros(total, dtype=bool)
    at = np.cumsum(fillers + 1) - 1  # index of each real entry after its fillers
    skips[at] = gaps - fillers * span
    real[at] = True
    return skips, real


def decode_positions(skips: np.ndarray) -> np.ndarray:
    """Flat positions of every entry (fillers included): ``cumsum(skips + 1) - 1``, as the graph does."""
    return np.cumsum(np.asarray(skips, dtype=np.int64) + 1) - 1


def entries(positions: np.ndarray, index_bits: int) -> int:
    """How many entries (values + fillers) the sparse encoding of ``positions`` needs at ``index_bits``."""
    gaps = np.diff(np.asarray(positions, dtype=np.int64), prepend=-1) - 1
    return int(len(gaps) + (gaps >> index_bits).sum())


@dataclass(frozen=True)
class Encoding:
    kind: str  # "dense" or "sparse"
    value_bits: int  # storage width of the codes
    index_bits: int | None  # sparse: width of the skip counts
    entries: int  # stored codes (dense: every weight; sparse: nonzero codes + fillers)
    payload_bytes: int  # packed codes + packed skips

    def describe(self) -> str:
        if self.kind == "dense":
            return f"INT{self.value_bits} dense"
        return f"INT{self.value_bits} values + UINT{self.index_bits} skips ({self.entries} entries)"


def choose_encoding(codes: np.ndarray, weight_bits: int, opset: int, *, sparse: bool = True) -> Encoding:
    """The smallest encoding of ``codes`` that ``opset`` allows: dense packed, or sparse with 2/4/8-bit
    skips (ties go to dense: no index arithmetic in the graph)."""
    vs = weight_storage(weight_bits)
    flat = np.asarray(codes).reshape(-1)
    best = Encoding("dense", vs.bits, None, flat.size, _bytes(flat.size, vs.bits))
    if not sparse:
        return best
    nz = np.flatnonzero(flat)
    for k in (2, 4, 8):
        if index_storage(k).min_opset > opset:
            continue
        n = entries(nz, k)
        size = _bytes(n, vs.bits) + _bytes(n, k)
        if size < best.payload_bytes:
            best = Encoding("sparse", vs.bits, k, n, size)
    return best


def _bytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8
