"""Learnable blobs of a net: Caffe's ``ParamSpec`` multipliers, sharing by name, sharing between nets.

After BVLC ``net.cpp``: ``AppendParam`` (the net's learnable parameters in layer and blob order; each
blob's ``lr_mult``/``decay_mult`` from the layer's ``param {}`` entries, default 1 and 1; a blob named
by ``param { name: ... }`` that an earlier layer owns is shared, with STRICT or PERMISSIVE shape
checks, and its multipliers merged), ``ShareTrainedLayersWith`` (a TEST net uses the TRAIN net's
blobs, layer by layer name) and ``CopyTrainedLayersFrom`` (trained blobs copied into the net by layer
name). BatchNorm's three statistics blobs get ``lr_mult`` 0, as ``BatchNormLayer::LayerSetUp`` forces.

A Caffe blob of a converted layer is a view of one of its module's parameters or buffers
(``CaffeBlobs.get_caffe_blobs``); :func:`blob_slots` finds which, so that sharing binds the very same
``nn.Parameter`` object into both layers and a solver sees one parameter, as Caffe's solver sees one
learnable blob.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch
from torch import nn

from converters.caffe.layers.base import CaffeBlobs
from converters.caffe.names import shown
from converters.caffe.net import CaffeNet
from converters.errors import ConversionError


@dataclass(frozen=True, eq=False)
class ParamSpec:
    """One learnable blob: the tensor a solver updates and Caffe's multipliers for it."""

    name: str  # the Caffe layer that owns the blob
    blob: int  # its index among that layer's blobs (0: weights, 1: bias, ...)
    param: torch.Tensor  # the nn.Parameter holding it (a buffer for BatchNorm's statistics: lr_mult 0)
    lr_mult: float
    decay_mult: float
    shared_name: str = ""  # ``param { name }`` when the blob is named, else ""
    shared_by: tuple[str, ...] = ()  # the other layers using this blob through that name


def blob_slots(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(submodule, attribute)`` of the parameter or buffer behind each Caffe blob of ``module``."""
    if not isinstance(module, CaffeBlobs):
        return []
    held = [(owner, name, t) for owner in module.modules()
            for name, t in chain(owner.named_parameters(recurse=False), owner.named_buffers(recurse=False))]
    slots = []
    for i, blob in enumerate(module.get_caffe_blobs()):
        found = [(owner, name) for owner, name, t in held
                 if t.numel() == blob.numel() and t.data_ptr() == blob.data_ptr() and not t.is_meta]
        if len(found) != 1:
            raise ConversionError(f"{type(module).__name__}: blob {i} is not exactly one of the module's "
                                  f"parameters or buffers (found {len(found)})")
        slots.append(found[0])
    return slots


def slot_tensor(slot: tuple[nn.Module, str]) -> torch.Tensor:
    return getattr(*slot)


def bind(slot: tuple[nn.Module, str], tensor: torch.Tensor) -> None:
    """Make ``slot`` hold ``tensor`` itself (the same ``nn.Parameter`` object, or the same buffer)."""
    owner, attr = slot
    if slot_tensor(slot) is not tensor:
        setattr(owner, attr, tensor)


def _shareable(layer: str, index: int, tensor: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if tuple(tensor.shape) != tuple(target.shape) or type(tensor) is not type(target):
        raise ConversionError(f"layer {shown(layer)}: cannot share blob {index} {what}: it is held as "
                              f"{type(target).__name__} {tuple(target.shape)} here and as "
                              f"{type(tensor).__name__} {tuple(tensor.shape)} there (e.g. an InnerProduct "
                              f"with and one without transpose)")


def _layer_params(net: CaffeNet) -> dict:
    """The ``LayerParameter`` of each layer: kept by phase nets, else parsed from the deploy netdef."""
    layers = getattr(net, "layer_params", None)
    if layers is None:
        from converters.caffe.prototxt import parse_net_text

        netdef = parse_net_text(net.netdef, filename=f"<netdef of {net.name}>")
        layers = {layer.name: layer for layer in netdef.layer}
    return layers


class _Entry:
    """A learnable blob being collected; Caffe's ``has_params_lr_``/``has_params_decay_`` included."""

    def __init__(self, name, blob, tensor, spec, batch_norm: bool):
        self.name, self.blob, self.tensor = name, blob, tensor
        self.lr, self.has_lr = (spec.lr_mult, spec.HasField("lr_mult")) if spec is not None else (1.0, False)
        self.decay, self.has_decay = (spec.decay_mult, spec.HasField("decay_mult")) if spec else (1.0, False)
        self.key = spec.name if spec is not None else ""
        self.sharers: list[str] = []
        if batch_norm:
            if spec is not None and spec.lr_mult != 0:
                raise ConversionError(f"layer {shown(name)} (BatchNorm): blob {blob} has lr_mult "
                                      f"{spec.lr_mult}; Caffe cannot configure batch normalization "
                                      "statistics as layer parameters (lr_mult must be 0 or absent)")
            self.lr, self.has_lr = 0.0, True

    def merge(self, name: str, spec) -> None:
        """``AppendParam`` for a sharer: its multipliers must agree with those already set."""
        for attr, has, field in (("lr", "has_lr", "lr_mult"), ("decay", "has_decay", "decay_mult")):
            if spec.HasField(field):
                value = getattr(spec, field)
                if getattr(self, has) and getattr(self, attr) != value:
                    raise ConversionError(f"layer {shown(name)}: shared param {shown(self.key)} has "
                                          f"mismatched {field} ({value}; {getattr(self, attr)} where "
                                          f"layer {shown(self.name)} owns it)")
                setattr(self, attr, value)
                setattr(self, has, True)
        self.sharers.append(name)

    def spec(self) -> ParamSpec:
        return ParamSpec(self.name, self.blob, self.tensor, float(self.lr), float(self.decay), self.key,
                         tuple(self.sharers))


def param_specs(net: CaffeNet) -> list[ParamSpec]:
    """One record per learnable blob of ``net``, in Caffe's order (``Net::learnable_params()``: layers
    in order, blobs in order; a blob shared by ``param { name }`` once, under the layer that owns it).

    Every ``nn.Parameter`` of the net is the ``param`` of exactly one record, and so is every
    BatchNorm statistics buffer (``lr_mult`` 0: solvers leave it alone, the layer updates it).
    """
    layers = _layer_params(net)
    entries: list[_Entry] = []
    owners: dict[str, _Entry] = {}
    for node in net.nodes:
        specs = list(layers[node.name].param) if node.name in layers else []
        for i, slot in enumerate(blob_slots(net.layer(node.name))):
            spec = specs[i] if i < len(specs) else None
            key = spec.name if spec is not None else ""
            if key in owners:
                owner = owners[key]
                if slot_tensor(slot) is not owner.tensor:
                    raise ConversionError(f"layer {shown(node.name)}: blob {i} should share param "
                                          f"{shown(key)} with layer {shown(owner.name)} but holds its own "
                                          "tensor (build the net with converters.caffe.phase, or call "
                                          "share_named_params)")
                owner.merge(node.name, spec)
                continue
            entry = _Entry(node.name, i, slot_tensor(slot), spec, node.type == "BatchNorm")
            entries.append(entry)
            if key:
                owners[key] = entry
    return [e.spec() for e in entries]


def share_named_params(net: CaffeNet, layers: dict) -> None:
    """Bind every blob named by ``param { name }`` to the tensor of the first layer that names it."""
    owners: dict[str, tuple[str, int, torch.Tensor, tuple[int, ...]]] = {}
    for node in net.nodes:
        module = net.layer(node.name)
        specs = list(layers[node.name].param) if node.name in layers else []
        shapes = module.caffe_blob_shapes() if isinstance(module, CaffeBlobs) else []
        for i, slot in enumerate(blob_slots(module)):
            key = specs[i].name if i < len(specs) else ""
            if not key:
                continue
            if key not in owners:
                owners[key] = (node.name, i, slot_tensor(slot), tuple(shapes[i]))
                continue
            owner, j, tensor, shape = owners[key]
            if tuple(shapes[i]) != shape:
                permissive = specs[i].share_mode == 1  # ParamSpec.PERMISSIVE: only the counts must agree
                if permissive and math.prod(shapes[i]) == math.prod(shape):
                    raise ConversionError(f"layer {shown(node.name)}: PERMISSIVE sharing of param "
                                          f"{shown(key)} between shapes {list(shape)} and {list(shapes[i])} "
                                          "is not supported (only blobs of one shape can be one tensor)")
                raise ConversionError(f"layer {shown(node.name)}: cannot share param {shown(key)} owned "
                                      f"by layer {shown(owner)}: shape mismatch, owner blob {j} is "
                                      f"{list(shape)}, this layer's blob {i} is {list(shapes[i])}")
            what = f"named {shown(key)} with layer {shown(owner)}"
            _shareable(node.name, i, tensor, slot_tensor(slot), what)
            bind(slot, tensor)


def share_trained_layers(target: CaffeNet, source: CaffeNet) -> list[tuple[tuple, tuple]]:
    """``Net::ShareTrainedLayersWith``: every layer of ``target`` named like a layer of ``source`` uses
    that layer's blobs (the same tensors). Returns the ``(target slot, source slot)`` pairs bound."""
    names = {node.name for node in target.nodes}
    pairs = []
    for node in source.nodes:
        if node.name not in names:
            continue
        theirs, ours = blob_slots(source.layer(node.name)), blob_slots(target.layer(node.name))
        if len(theirs) != len(ours):
            raise ConversionError(f"layer {shown(node.name)}: incompatible number of blobs to share "
                                  f"between the nets ({len(theirs)} and {len(ours)})")
        for i, (src, dst) in enumerate(zip(theirs, ours, strict=True)):
            _shareable(node.name, i, slot_tensor(src), slot_tensor(dst), "between the nets")
            bind(dst, slot_tensor(src))
            pairs.append((dst, src))
    return pairs


@torch.no_grad()
def copy_trained_layers(net: CaffeNet, blobs: dict, source: str = "the caffemodel") -> list[str]:
    """``Net::CopyTrainedLayersFrom``: copy ``blobs`` ({layer name: arrays in Caffe layout}) into the
    layers of ``net`` with the same name, in place (shared tensors stay shared). Layers of ``blobs``
    that ``net`` lacks are ignored and returned; a count or shape mismatch is an error."""
    from converters.caffe.builder import nonfinite, same_blob_shape

    names = {node.name for node in net.nodes}
    ignored = []
    for name, arrays in blobs.items():
        if name not in names:
            ignored.append(name)
            continue
        module = net.layer(name)
        targets = module.get_caffe_blobs() if isinstance(module, CaffeBlobs) else []
        if len(targets) != len(arrays):
            raise ConversionError(f"layer {shown(name)}: incompatible number of blobs: {source} has "
                                  f"{len(arrays)}, the net's layer has {len(targets)}")
        for i, (target, array) in enumerate(zip(targets, arrays, strict=True)):
            have = tuple(int(d) for d in array.shape)
            if not same_blob_shape(tuple(target.shape), have):
                raise ConversionError(f"layer {shown(name)}: cannot copy param {i} weights from "
                                      f"{source}: shape mismatch, source param shape is {list(have)}, "
                                      f"target param shape is {list(target.shape)}; to learn this layer's "
                                      "parameters from scratch rather than copying them, rename the layer")
            value = _as_tensor(array).reshape(target.shape)
            bad = nonfinite(value)
            if bad:
                raise ConversionError(f"layer {shown(name)}: param {i} of {source}: {bad}")
            target.copy_(value)
    return ignored


def _as_tensor(array) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach()
    array = np.asarray(array, dtype=np.float32)
    return torch.from_numpy(array if array.flags.writeable else array.copy())
