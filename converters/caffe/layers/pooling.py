"""Pooling (MAX, AVE) with Caffe's exact output size, window clipping and AVE divisor.

Caffe: ``out = ceil((H + 2p - k) / s) + 1``, decremented when ``p > 0`` and the last window would start
at or past ``H + p``. A MAX window takes the maximum over its part inside the input; an AVE window sums
its part inside the input and divides by its size clipped to the padded input ``[-p, H + p)``.
PyTorch's ``ceil_mode=True, count_include_pad=True`` pooling computes the same whenever its own output
size agrees and ``p <= k / 2``, so that fast path is used then; otherwise (``p > k / 2``, or ``p = 0`` with
``stride > kernel`` where PyTorch drops a last window Caffe keeps) the input is padded explicitly.
A window lying wholly outside the input (possible only in the second case) gives what Caffe gives:
``-FLT_MAX`` for MAX, and for AVE ``0 / size`` (NaN when that size is 0). The parameters are checked
by ``converters/caffe/shapes/pooling.py`` (shared with the torch-free shape inference).

On the CPU, MAX pooling runs PyTorch's channels-last kernel (:class:`_ChannelsLastMax`): the kernel for
contiguous (N, C, H, W) input walks each window element by element, 4-8 ms for LeNet's first pooling at
one thread, against about 1 ms vectorized over the channels. Both kernels scan a window in row order and
take an element greater than the maximum so far or NaN, so the outputs and chosen indices are the same,
bit for bit; the backward pass is PyTorch's own on those indices.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from converters.caffe.layers.base import is_channels_last, register, tracing
from converters.caffe.shapes.pooling import caffe_pool_size, pool_geometry

FLT_MAX = torch.finfo(torch.float32).max


def torch_pool_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """PyTorch's ``ceil_mode=True`` pooled size (the decrement is applied even when ``pad == 0``)."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


class CaffePooling(nn.Module):
    def __init__(self, method: str, kernel: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int], global_pooling: bool = False) -> None:
        super().__init__()
        self.method = method
        self.kernel_size = kernel
        self.stride = stride
        self.padding = pad
        self.global_pooling = global_pooling

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        if self.global_pooling:
            return 1, 1
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return caffe_pool_size(h, kh, sh, ph), caffe_pool_size(w, kw, sw, pw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pooling:
            if is_channels_last(x):
                x = x.contiguous()
            if self.method == "MAX":
                return x.amax(dim=(2, 3), keepdim=True)
            return x.mean(dim=(2, 3), keepdim=True)
        h, w = x.shape[-2:]
        out = self.output_size(h, w)
        native = self._native(h, w, out)
        if native and self.method == "MAX":
            if _channels_last_max(x):
                return _ChannelsLastMax.apply(x, self.kernel_size, self.stride, self.padding)
            # a channels-last blob takes the channels-last kernel as it is, and its output stays so
            return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, ceil_mode=True)
        if is_channels_last(x):  # the other paths keep the layout they had
            x = x.contiguous()
        if native:
            return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, ceil_mode=True,
                                count_include_pad=True)
        return self._explicit(x, h, w, out)

    def _native(self, h: int, w: int, out: tuple[int, int]) -> bool:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (2 * ph <= kh and 2 * pw <= kw
                and out == (torch_pool_size(h, kh, sh, ph), torch_pool_size(w, kw, sw, pw)))

    def _explicit(self, x: torch.Tensor, h: int, w: int, out: tuple[int, int]) -> torch.Tensor:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (oh, ow) = out
        # Pad so that every window lies inside: left by p, right up to the end of the last window.
        right_h = max(0, (oh - 1) * sh + kh - ph - h)
        right_w = max(0, (ow - 1) * sw + kw - pw - w)
        if self.method == "MAX":
            xp = F.pad(x, (pw, right_w, ph, right_h), value=-FLT_MAX)
            return F.max_pool2d(xp, (kh, kw), (sh, sw))[..., :oh, :ow]
        xp = F.pad(x, (pw, right_w, ph, right_h))
        total = F.avg_pool2d(xp, (kh, kw), (sh, sw), divisor_override=1)[..., :oh, :ow]
        return total / _ave_divisor(h, w, out, self.kernel_size, self.stride, self.padding, x)

    def extra_repr(self) -> str:
        if self.global_pooling:
            return f"{self.method}, global_pooling=True"
        return f"{self.method}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def _channels_last_max(x: torch.Tensor) -> bool:
    """Whether ``x`` takes the channels-last MAX kernel: a contiguous 4-d floating CPU tensor (a
    channels-last one already gets that kernel), outside tracing and export (which must see the plain
    ``max_pool2d``)."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.is_floating_point() and x.is_contiguous()
            and not tracing())


class _ChannelsLastMax(torch.autograd.Function):
    """``F.max_pool2d(x, kernel, stride, pad, ceil_mode=True)`` computed on a channels-last copy of ``x``;
    the output stays channels-last (the net passes it on as it is, or makes it contiguous), the gradient
    comes back in ``x``'s contiguous layout."""

    @staticmethod
    def forward(ctx, x, kernel, stride, pad):
        y, index = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last),
                                                           kernel, stride, pad, (1, 1), True)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x, index.contiguous())  # a plane's h * W + w: the same in either layout
            ctx.geometry = kernel, stride, pad
        return y

    @staticmethod
    def backward(ctx, grad):
        x, index = ctx.saved_tensors
        kernel, stride, pad = ctx.geometry
        gi = torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, kernel, stride, pad,
                                                             (1, 1), True, index)
        return gi, None, None, None


def _ave_divisor(h, w, out, kernel, stride, pad, like: torch.Tensor) -> torch.Tensor:
    """Caffe's AVE divisor per output cell: the window clipped to ``[-p, size + p)``, not to the input."""
    def lengths(size, n, k, s, p):
        start = torch.arange(n, device=like.device) * s - p  # int64: exact for any size
        return ((start + k).clamp(max=size + p) - start).to(like.dtype)

    lh = lengths(h, out[0], kernel[0], stride[0], pad[0])
    lw = lengths(w, out[1], kernel[1], stride[1], pad[1])
    return lh[:, None] * lw[None, :]


@register("Pooling")
def build(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    g = pool_geometry(layer, [tuple(b.shape) for b in bottoms])
    return CaffePooling(g.method, g.kernel, g.stride, g.pad, global_pooling=g.global_pooling)
