"""What a layer allocates while it runs, measured on the meta device before anything is allocated.

The memory guard (``converters/caffe/memory.py``) must see more than the blobs a net keeps: a layer's
forward pass builds temporaries that can dwarf its output. ``LRN`` with ``local_size: 2147483647``
pads a copy of its input by that many channels; a ``Convolution`` with ``pad: 30000`` on an 8x8 input
lowers a 60,006 x 60,006 image to columns (43 GB) before the matrix product. Two measures cover it:

* :func:`allocated_bytes` runs a call on meta tensors under a ``TorchDispatchMode`` that adds up
  every tensor an ATen operator returns except views and in-place results: all the memory the call
  asks the allocator for, freed or not (an upper bound of its peak). Used on each layer's forward
  pass and on its weight initialization (Caffe fillers build random masks the size of a blob).
* :data:`WORKSPACE` adds what a kernel allocates inside one operator, invisible to the dispatcher:
  the im2col/col2im columns and the padded input of CPU convolutions (per sample: the kernels
  lower one image at a time).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _Allocations(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in torch._dynamo.disable unless this says no; that
        # imports torch._dynamo and sympy (1-2 s) on the first call, and nothing here runs compiled
        return False

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns  # one entry per output, or one for a list of tensors
        for i, t in enumerate(tree_leaves(out)):
            aliased = bool(returns) and returns[min(i, len(returns) - 1)].alias_info is not None
            if isinstance(t, torch.Tensor) and not aliased:
                self.nbytes += t.numel() * t.element_size()
        return out


def allocated_bytes(call: Callable[[], object]) -> tuple[object, int]:
    """``(call(), bytes of every new tensor its operators returned)``; meant for meta tensors."""
    mode = _Allocations()
    with mode:
        result = call()
    return result, mode.nbytes


def _conv_workspace(m: nn.Conv2d, bottoms: list[torch.Tensor], tops) -> int:
    x, y = bottoms[0], tops[0]
    (kh, kw), (ph, pw) = m.kernel_size, m.padding
    columns = x.shape[1] * kh * kw * y.shape[2] * y.shape[3]
    padded = x.shape[1] * (x.shape[2] + 2 * ph) * (x.shape[3] + 2 * pw) if ph or pw else 0
    return (columns + padded) * x.element_size()


def _deconv_workspace(m: nn.ConvTranspose2d, bottoms: list[torch.Tensor], tops) -> int:
    x, y = bottoms[0], tops[0]
    kh, kw = m.kernel_size
    return y.shape[1] * kh * kw * x.shape[2] * x.shape[3] * x.element_size()


# module type -> bytes its forward allocates inside one operator (the columns of one sample)
WORKSPACE: dict[type, Callable[..., int]] = {
    nn.ConvTranspose2d: _deconv_workspace,
    nn.Conv2d: _conv_workspace,
}


def workspace_bytes(module: nn.Module, bottoms: list[torch.Tensor], tops) -> int:
    """Bytes ``module``'s kernels allocate beyond the tensors they return (0 for most layers)."""
    for kind in type(module).__mro__:
        if kind in WORKSPACE:
            return int(WORKSPACE[kind](module, bottoms, tops))
    return 0
