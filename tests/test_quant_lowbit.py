"""Packed low-bit tensors (bit for bit, odd lengths) and the sparse skip encoding (round trips, fillers,
sizes), against hand-computed bytes and counts."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from converters.errors import ConversionError
from converters.onnx import lowbit


def test_int4_packs_two_per_byte_low_nibble_first():
    t = lowbit.pack(np.array([1, -2, 7, -8, 3]), lowbit.weight_storage(4), "w")
    assert t.data_type == TensorProto.INT4
    # (1 | 0xE << 4), (7 | 0x8 << 4), (3): two's complement nibbles, an odd length padded with 0
    assert t.raw_data == bytes([0xE1, 0x87, 0x03])
    assert lowbit.unpack(t).tolist() == [1, -2, 7, -8, 3]


def test_int2_packs_four_per_byte_low_bits_first():
    t = lowbit.pack(np.array([1, -1, 0, -2, 1]), lowbit.weight_storage(2), "w")
    assert t.data_type == TensorProto.INT2
    assert t.raw_data == bytes([0b10_00_11_01, 0b01])
    assert lowbit.unpack(t).tolist() == [1, -1, 0, -2, 1]


@pytest.mark.parametrize("bits, signed", [(b, s) for s in (True, False) for b in (2, 4, 8)])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 1001])
def test_round_trip_bit_for_bit(bits, signed, n):
    rng = np.random.default_rng(n * 10 + bits)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    v = rng.integers(lo, hi + 1, size=n)
    storage = lowbit.weight_storage(bits) if signed else lowbit.index_storage(bits)
    t = lowbit.pack(v, storage, "t")
    assert len(t.raw_data) == (n * bits + 7) // 8
    assert np.array_equal(lowbit.unpack(t), v)


def test_weight_storage_widths():
    assert [lowbit.weight_storage(b).bits for b in range(2, 9)] == [2, 4, 4, 8, 8, 8, 8]
    assert [lowbit.weight_storage(b).min_opset for b in (2, 3, 4, 8)] == [25, 21, 21, 13]
    with pytest.raises(ConversionError, match="9 bits"):
        lowbit.weight_storage(9)
    with pytest.raises(ConversionError, match="do not fit"):
        lowbit.pack(np.array([8]), lowbit.weight_storage(4), "w")


def test_skip_encoding_by_hand():
    skips, real = lowbit.encode_positions(np.array([0, 3, 40]), 4)
    # gaps 0, 2, 36 zeros; 36 > 15: two fillers of 16 positions each, then 4 more zeros
    assert skips.tolist() == [0, 2, 15, 15, 4]
    assert real.tolist() == [True, True, False, False, True]
    assert lowbit.decode_positions(skips).tolist() == [0, 3, 19, 35, 40]
    assert lowbit.entries(np.array([0, 3, 40]), 4) == 5


@pytest.mark.parametrize("k", [2, 4, 8])
def test_skip_encoding_round_trip(k):
    rng = np.random.default_rng(k)
    n = 5000
    pos = np.flatnonzero(rng.random(n) < 0.03)
    skips, real = lowbit.encode_positions(pos, k)
    assert skips.max() < (1 << k)
    assert np.array_equal(lowbit.decode_positions(skips)[real], pos)
    assert len(skips) == lowbit.entries(pos, k)
    assert lowbit.decode_positions(skips).max() == pos.max()  # no filler runs past the last value


def test_choose_encoding_counts_bytes():
    dense = np.arange(-7, 8).repeat(10)  # 150 codes, one zero in 15
    e = lowbit.choose_encoding(dense, 4, 21)
    assert (e.kind, e.payload_bytes) == ("dense", 75)
    sparse = np.zeros(1000, dtype=np.int64)
    sparse[[5, 300, 301, 999]] = [1, -7, 3, 2]
    # gaps 5, 294, 0, 697: with 8-bit skips (256 positions per entry) 1 + 2 fillers, 7 entries:
    # 4 B of codes + 7 B of skips; 4-bit skips would need 4 + 18 + 43 fillers (65 B)
    e = lowbit.choose_encoding(sparse, 4, 21)
    assert (e.kind, e.index_bits, e.entries, e.payload_bytes) == ("sparse", 8, 7, 11)
    assert lowbit.choose_encoding(sparse, 4, 25).payload_bytes == 11  # 2-bit skips do not help here
    assert lowbit.choose_encoding(sparse, 4, 21, sparse=False).kind == "dense"
    every_fourth = np.zeros(400, dtype=np.int64)
    every_fourth[::4] = 1  # gaps of 3: fits 2-bit skips exactly (opset 25 only)
    assert lowbit.choose_encoding(every_fourth, 8, 25).index_bits == 2
    assert lowbit.choose_encoding(every_fourth, 8, 21).index_bits == 4
