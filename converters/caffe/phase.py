"""The TRAIN and TEST phase nets of a train_val definition, as ``caffe train`` builds them.

After BVLC ``net.cpp`` (``Net::Init``, ``FilterNet``, ``ForwardFromTo``) and ``solver.cpp``
(``InitTrainNet``/``InitTestNets``, ``Test``):

- The definition is filtered to the phase by the layers' ``include``/``exclude`` rules against the net
  state (phase, level, stages), the definition's ``state`` merged with the solver's ``train_state`` or
  ``test_state`` as Caffe merges them (the phase given here wins).
- Data layers become named inputs, all their tops: the data and the label (``(batch,)`` as Caffe's data
  layers shape it). Losses, ``Accuracy``, ``Silence`` and every layer fed by a label stay.
- Loss weights: a layer's ``loss_weight`` list (one per top), or 1 for the first top of a ``*Loss``
  layer (``LossLayer::LayerSetUp``); a loss layer without tops gets an automatic one, which counts in
  the objective but is no output. ``run`` returns the objective, the sum over layers in order of
  ``loss_weight * sum(top)`` taken when the layer runs, and the net's outputs: the blobs no later layer
  consumes, data tops included, in Caffe's (name) order; Caffe displays exactly these.
- Weights: every blob is filled with its layer's Caffe filler (``converters/caffe/layers/fillers.py``;
  a seeded generator makes it repeatable), blobs named by ``param { name }`` are shared, a TEST net
  shares the blobs of the TRAIN net's layers of the same name (the same ``nn.Parameter`` objects and
  BatchNorm buffers, bound again before every ``run`` as Caffe's ``Test`` calls
  ``ShareTrainedLayersWith``), then trained blobs are copied in by layer name. TRAIN parameters with
  ``lr_mult`` 0 do not require gradients (Caffe computes no diff for them).
- Phase behaviour: a TRAIN net is in training mode (Dropout masks and scales, BatchNorm uses and
  updates batch statistics unless ``use_global_stats``), a TEST net in eval mode.
- ``netdef`` is the deploy definition of the phase: its data layers replaced by ``Input`` layers of the
  data top's shape (the phase's batch size: write a TEST net's netdef as ``<name>_deploy.prototxt``),
  training-only and label-fed layers removed.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from converters.caffe.builder import deploy_netdef, output_blobs, plan_net, to_cpu
from converters.caffe.layers.base import CaffeBlobs, layer_error
from converters.caffe.layers.fillers import caffe_blob_fillers
from converters.caffe.layers.normalization import CaffeBatchNorm
from converters.caffe.net import CaffeNet, LayerNode
from converters.caffe.params import (
    bind,
    copy_trained_layers,
    param_specs,
    share_named_params,
    share_trained_layers,
    slot_tensor,
)
from converters.errors import ConversionError

PHASES = {"TRAIN": 0, "TEST": 1}


@dataclass(frozen=True)
class PhaseOutput:
    """What one forward pass of a phase net gives a solver: Caffe's net loss and its output blobs."""

    objective: torch.Tensor  # 0-d: sum of loss_weight * sum(top) over the weighted tops
    outputs: dict[str, torch.Tensor]  # output blob name -> value, in Caffe's display order


class PhaseNet(CaffeNet):
    """A :class:`CaffeNet` of one phase of a train_val net, with its losses. ``phase``: "TRAIN" or
    "TEST"; ``loss_weights``: {layer name: ((top index, weight), ...)}; ``layer_params``: the phase's
    ``LayerParameter`` by layer name (read by :func:`converters.caffe.params.param_specs`)."""

    def __init__(self, name: str, inputs: dict[str, tuple[int, ...]], nodes: list[LayerNode],
                 modules: dict[str, nn.Module], outputs: list[str], netdef: str, *, phase: str,
                 loss_weights: dict[str, tuple[tuple[int, float], ...]], layer_params: dict) -> None:
        super().__init__(name, inputs, nodes, modules, outputs, netdef)
        self.phase = phase
        self.loss_weights = dict(loss_weights)
        self.layer_params = dict(layer_params)
        self._shared: list[tuple[tuple, tuple]] = []  # (our slot, the source net's slot)

    def run(self, batch: Mapping[str, torch.Tensor]) -> PhaseOutput:
        """One forward pass on ``batch`` ({input blob name: tensor}, e.g. ``data`` and ``label``)."""
        for ours, theirs in self._shared:
            bind(ours, slot_tensor(theirs))
        blobs = self._bind_inputs((), dict(batch))
        objective = None
        for node, tops in self.run_nodes(blobs):
            for i, weight in self.loss_weights.get(node.name, ()):
                term = tops[i].sum() * weight
                objective = term if objective is None else objective + term
        if objective is None:
            objective = torch.zeros((), device=next(iter(blobs.values())).device)
        return PhaseOutput(objective, {name: blobs[name] for name in self.outputs})


def build_phase_net(net, phase: str, *, blobs: dict | None = None,
                    input_shapes: dict[str, tuple[int, ...]] | None = None, state=None,
                    share_with: PhaseNet | None = None, generator: torch.Generator | None = None,
                    memory_limit: int | None = None, source: str = "the caffemodel") -> PhaseNet:
    """The ``phase`` ("TRAIN" or "TEST") net of ``net`` (a current-format ``NetParameter``).

    ``blobs``: trained blobs by layer name (``read_caffemodel(path).blobs``), copied over the fillers'
    values; layers the net lacks are listed in ``build_report.ignored``. ``input_shapes``: {top: shape}
    for the data layers' tops (their channels and size, which an LMDB does not declare; labels default
    to ``(batch,)``). ``state``: a ``caffe_pb2.NetState`` (the solver's ``train_state``/``test_state``)
    merged into the definition's. ``share_with``: the TRAIN net whose blobs a TEST net uses.
    ``generator``: the torch generator the fillers draw from (seeded from ``random_seed``).
    """
    if phase not in PHASES:
        raise ConversionError(f"phase must be one of {', '.join(PHASES)}, found {phase!r}")
    definition, automatic = _phase_definition(net, phase, state)
    plan = plan_net(definition, blobs, phase, input_shapes=input_shapes, memory_limit=memory_limit,
                    keep_training=True)
    layers = {layer.name: layer for layer in plan.layers}
    for layer in plan.layers:
        _allocate(layer, plan.modules[layer.name], generator)
    outputs = sorted(b for b in output_blobs(plan.nodes, inputs=plan.inputs) if b not in automatic)
    result = PhaseNet(definition.name or "net", plan.inputs, plan.nodes, plan.modules, outputs,
                      deploy_netdef(definition, plan), phase=phase,
                      loss_weights={layer.name: w for layer in plan.layers if (w := loss_weights(layer))},
                      layer_params=layers)
    share_named_params(result, layers)
    if share_with is not None:
        result._shared = share_trained_layers(result, share_with)
    if blobs is not None:
        plan.report.ignored = copy_trained_layers(result, blobs, source)
    specs = param_specs(result)  # also checks the multipliers (BatchNorm, shared names)
    if phase == "TRAIN":
        for spec in specs:
            if spec.lr_mult == 0 and isinstance(spec.param, nn.Parameter):
                spec.param.requires_grad_(False)
    for module in result.modules():
        if isinstance(module, CaffeBatchNorm):
            module.update_in_eval = phase == "TEST"
    result.blob_shapes = plan.shapes
    result.build_report = plan.report
    return result.train(phase == "TRAIN")


def phase_layers(net, phase: str, state=None) -> list:
    """The ``LayerParameter``s of ``net`` that ``phase`` keeps (its include/exclude rules against the
    merged state), in order: what a caller needs to find the phase's data layers."""
    from converters.caffe.netinit import filter_phase

    if phase not in PHASES:
        raise ConversionError(f"phase must be one of {', '.join(PHASES)}, found {phase!r}")
    return filter_phase(_phase_definition(net, phase, state)[0], phase)


def loss_weights(layer) -> tuple[tuple[int, float], ...]:
    """The non-zero ``(top index, loss weight)`` pairs of ``layer`` (``Layer::SetLossWeights``)."""
    weights = list(layer.loss_weight)
    if not weights and layer.type.endswith("Loss"):
        weights = [1.0]  # LossLayer::LayerSetUp: a loss layer's first top has weight 1 by default
    if weights and len(weights) != len(layer.top):
        raise layer_error(layer, f"loss_weight must be unspecified or given once per top: {len(weights)} "
                                 f"weight(s) {weights} for {len(layer.top)} top(s) {list(layer.top)}")
    pairs = tuple((i, float(w)) for i, w in enumerate(weights) if w != 0)
    if pairs and layer.type == "Accuracy":
        raise layer_error(layer, "an Accuracy layer cannot carry a loss_weight (Caffe cannot "
                                 "backpropagate through it)")
    return pairs


def _phase_definition(net, phase: str, state):
    """A copy of ``net`` with the merged state, and the names given to automatic loss tops."""
    from converters.caffe.proto import caffe_pb2

    definition = caffe_pb2.NetParameter()
    definition.CopyFrom(net)
    if state is not None:
        definition.state.MergeFrom(state)
    definition.state.phase = PHASES[phase]
    automatic = set()
    for layer in definition.layer:
        if layer.type.endswith("Loss") and not layer.top:  # LossLayer::AutoTopBlobs
            layer.top.append(f"({layer.name} automatic top)")
            automatic.add(layer.top[0])
    return definition, automatic


def _allocate(layer, module: nn.Module, generator: torch.Generator | None) -> None:
    """Give a meta-built module CPU memory and fill its blobs as Caffe's ``LayerSetUp`` does."""
    to_cpu(module)
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            t.zero_()
    if not isinstance(module, CaffeBlobs):
        return
    blobs = module.get_caffe_blobs()
    fillers = caffe_blob_fillers(layer)
    if len(fillers) != len(blobs):
        raise layer_error(layer, f"{len(blobs)} blobs but {len(fillers)} fillers (internal mismatch)")
    for i, (blob, filler) in enumerate(zip(blobs, fillers, strict=True)):
        try:
            filler.fill_(blob, generator)
        except ConversionError as e:
            raise layer_error(layer, f"blob {i}: {e}") from None

