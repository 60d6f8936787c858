"""Sparse initializers: move a weight into ``graph.sparse_initializer`` only where that is smaller.

COO in ONNX stores the non-zero values (4 bytes each for float32) plus INT64 indices (8 bytes each;
1-D linearized indices, sorted, as ``onnx.checker`` requires), i.e. 12 bytes per non-zero against 4
bytes per value dense: it only pays above ~67% zeros. Each candidate is measured exactly (serialized
size of both encodings) and the smaller one is kept, so a sparse export is never larger than the dense
one. onnxruntime densifies sparse initializers at load time and computes identical results (a
``-0.0`` left by ``w * mask`` counts as zero and comes back as ``+0.0``, an equal value).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper


def _nonzero_linear(arr: np.ndarray) -> np.ndarray:
    # -0.0 (what ``w * mask`` leaves) counts as zero and comes back as +0.0: equal values
    return np.flatnonzero(np.ascontiguousarray(arr).reshape(-1))


def sparse_tensor(dense: TensorProto) -> onnx.SparseTensorProto:
    """The COO encoding of ``dense``: values named like the tensor, sorted INT64 linear indices."""
    arr = numpy_helper.to_array(dense)
    idx = _nonzero_linear(arr).astype(np.int64)
    values = numpy_helper.from_array(arr.reshape(-1)[idx], name=dense.name)
    indices = numpy_helper.from_array(idx, name=f"{dense.name}_indices")
    return onnx.helper.make_sparse_tensor(values, indices, list(arr.shape))


WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def weight_names(model: onnx.ModelProto) -> set[str]:
    """The weight inputs of Conv/ConvTranspose/Gemm/MatMul nodes: what pruning makes sparse
    (biases stay dense: small, and all-zero only in an untrained net)."""
    return {n.input[1] for n in model.graph.node if n.op_type in WEIGHT_OPS and len(n.input) > 1}


def sparsify(model: onnx.ModelProto, names: set[str] | None = None) -> list[str]:
    """Move each float32 weight (``names``, default :func:`weight_names`) whose sparse encoding is
    smaller into ``sparse_initializer``. Modifies ``model`` in place; returns the moved names.
    """
    graph = model.graph
    names = weight_names(model) if names is None else names
    keep: list[TensorProto] = []
    moved: list[str] = []
    for init in graph.initializer:
        sp = _smaller_sparse(init) if init.name in names else None
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
