"""Sparse initializers: move a weight into ``graph.sparse_initializer`` only where that is smaller.

COO in ONNX stores the non-zero values (4 bytes each for float32) plus INT64 indices (8 bytes each;
1-D linearized indices, sorted, as ``onnx.checker`` requires), i.e. 12 bytes per non-zero against 4
bytes per value dense: it only pays above ~67% zeros. Each candidate is measured exactly (serialized
size of both encodings) and the smaller one is kept, so a sparse export is never larger than the dense
one. Negative zeros are kept as explicit values (the bit pattern decides), so onnxruntime, which
densifies sparse initializers at load time, computes bit-identical results.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper


def _nonzero_linear(arr: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(arr).reshape(-1)
    if flat.dtype == np.float32:
        return np.flatnonzero(flat.view(np.uint32))  # -0.0 is kept: bit-identical round trip
    return np.flatnonzero(flat)


def sparse_tensor(dense: TensorProto) -> onnx.SparseTensorProto:
    """The COO encoding of ``dense``: values named like the tensor, sorted INT64 linear indices."""
    arr = numpy_helper.to_array(dense)
    idx = _nonzero_linear(arr).astype(np.int64)
    values = numpy_helper.from_array(arr.reshape(-1)[idx], name=dense.name)
    indices = numpy_helper.from_array(idx, name=f"{dense.name}_indices")
    return onnx.helper.make_sparse_tensor(values, indices, list(arr.shape))


def sparsify(model: onnx.ModelProto) -> list[str]:
    """Move each float32 initializer whose sparse encoding is smaller into ``sparse_initializer``.

    Modifies ``model`` in place and returns the names of the moved initializers.
    """
    graph = model.graph
    keep: list[TensorProto] = []
    moved: list[str] = []
    for init in graph.initializer:
        sp = _smaller_sparse(init)
        if sp is None:
            keep.append(init)
        else:
            graph.sparse_initializer.append(sp)
            moved.append(init.name)
    if moved:
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return moved


def _smaller_sparse(init: TensorProto) -> onnx.SparseTensorProto | None:
    if init.data_type != TensorProto.FLOAT or len(init.dims) == 0:
        return None
    arr = numpy_helper.to_array(init)
    nnz = int(_nonzero_linear(arr).size)
    if nnz * 12 >= arr.size * 4:  # cannot win: skip building the COO tensor
        return None
    sp = sparse_tensor(init)
    return sp if sp.ByteSize() < init.ByteSize() else None


def densify(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every sparse initializer turned back into a dense one."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for sp in out.graph.sparse_initializer:
        values = numpy_helper.to_array(sp.values)
        idx = numpy_helper.to_array(sp.indices)
        dense = np.zeros(int(np.prod(sp.dims)), dtype=values.dtype)
        if idx.ndim == 2:  # [NNZ, rank] form
            idx = np.ravel_multi_index(tuple(idx.T), tuple(sp.dims))
        dense[idx] = values
        out.graph.initializer.append(numpy_helper.from_array(dense.reshape(tuple(sp.dims)), sp.values.name))
    del out.graph.sparse_initializer[:]
    return out
