"""BatchNorm/Scale fold by default on ONNX export (not for .caffemodel; --no-fold-bn keeps them); a quantized
model folds with its codes unchanged and its scales multiplied, exactly."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from compress.cli import main
from compress.layers import prunable_layers
from compress.modelfile import save_model
from compress.quant.config import GridConfig
from compress.quant.fold import fold_quantized
from compress.quant.grid import quantize_codes
from compress.quant.ptq import ptq
from compress.quant.record import KEY, make_record, read_grids
from converters import caffe
from tests.nets import DEPTHWISE, RESIDUAL, random_net
from tests.test_export import run_ort

BN_OPS = ("BatchNormalization", "Div", "Sqrt")


def _quantized(text: str, config: GridConfig, negative_scale: str | None = None):
    net = random_net(text)
    if negative_scale:  # a Scale layer with negative factors: the folded codes change sign
        with torch.no_grad():
            net.layer(negative_scale).weight[::2] *= -1
    layers = ptq(net, config)
    record = make_record(config, "ptq", {n: q.grid for n, q in layers.items()})
    return net, {"method": "magnitude", KEY: record}


def _x(shape=(2, 3, 8, 8)):
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


def test_onnx_export_folds_by_default_and_caffemodel_does_not(tmp_path, capsys):
    net = random_net(RESIDUAL)
    model = str(tmp_path / "m.pt")
    save_model(model, net, {"method": "magnitude"})
    with torch.no_grad():
        ref = net(torch.from_numpy(_x())).numpy()
    folded, kept = tmp_path / "f.onnx", tmp_path / "k.onnx"
    assert main(["export", model, "-o", str(folded)]) == 0
    assert "folded 8 BatchNorm/Scale layers into 4" in capsys.readouterr().out
    assert main(["export", model, "-o", str(kept), "--no-fold-bn"]) == 0
    assert "folded" not in capsys.readouterr().out
    ops = lambda p: {n.op_type for n in onnx.load(str(p)).graph.node}  # noqa: E731
    assert not ops(folded) & set(BN_OPS) and ops(kept) & set(BN_OPS)
    for path in (folded, kept):
        assert np.abs(run_ort(str(path), _x()) - ref).max() <= 1e-5
    cm = tmp_path / "m.caffemodel"
    assert main(["export", model, "-o", str(cm)]) == 0
    assert "folded" not in capsys.readouterr().out
    assert sum(n.type == "BatchNorm" for n in caffe.load(tmp_path / "m.prototxt", cm).nodes) == 4


@pytest.mark.parametrize("text, per_channel, negative", [
    (RESIDUAL, True, "conv2a/scale"), (RESIDUAL, False, None), (DEPTHWISE, True, "dw/scale")])
def test_a_quantized_model_folds_with_its_codes(text, per_channel, negative):
    net, meta = _quantized(text, GridConfig(4, per_channel=per_channel), negative)
    grids = read_grids(meta, net)
    result, new_meta = fold_quantized(net, meta, grids)
    assert result.folded and result.max_rel_err <= 1e-5
    new_grids = read_grids(new_meta, result.net)  # every folded weight exactly on its new grid
    before, after = prunable_layers(net), prunable_layers(result.net)
    for name in result.folded:
        q0 = quantize_codes(before[name].weight, grids[name]).to(torch.int64)
        q1 = quantize_codes(after[name].weight, new_grids[name]).to(torch.int64)
        assert torch.equal(q0.abs(), q1.abs()), name  # the codes, up to the sign of the folded factor
        a = result.factors[name]
        assert torch.equal(torch.sign(q1), torch.sign(q0) * torch.sign(a).reshape(-1, 1, 1, 1).long()), name
        assert new_grids[name].scales.numel() == q1.shape[0]  # per-tensor grids become per-channel
        assert new_meta[KEY]["layers"][name]["axis"] == 0


def test_a_quantized_model_exports_folded(tmp_path, capsys):
    net, meta = _quantized(RESIDUAL, GridConfig(4), "conv1/scale")
    model = str(tmp_path / "q.pt")
    save_model(model, net, meta)
    out = tmp_path / "q.onnx"
    assert main(["export", model, "-o", str(out)]) == 0
    assert "folded 8 BatchNorm/Scale layers into 4" in capsys.readouterr().out
    assert not {n.op_type for n in onnx.load(str(out)).graph.node} & set(BN_OPS)
    with torch.no_grad():
        ref = net(torch.from_numpy(_x())).numpy()
    assert np.abs(run_ort(str(out), _x()) - ref).max() <= 1e-5
