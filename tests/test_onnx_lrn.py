"""LRN written as squares, a 1x1 window convolution and a power (the ``lrn="fast"`` form of
converters.onnx.lrn.rewrite_lrn) computes Caffe's ACROSS_CHANNELS LRN: against the PyTorch net for Caffe's
usual betas and an odd one, and window by window at the channel ends with inputs that are distinct powers
of two."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from converters import caffe
from converters.caffe.prototxt import parse_net_text
from converters.onnx.export import export_onnx
from tests.test_export import ALEXNET, build, run_ort
from tests.test_quant_export import SHAPES


def _x(name: str) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SHAPES[name]).astype(np.float32)


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _lrn_net(beta: float):
    return build(ALEXNET.replace("beta: 0.75", f"beta: {beta}"))


@pytest.mark.parametrize("beta", [0.75, 0.5, 1.0, 0.6])
def test_fast_lrn_computes_caffes_lrn(tmp_path, beta):
    net = _lrn_net(beta)
    fast_path = export_onnx(net, tmp_path / "f.onnx", lrn="fast").path
    native = export_onnx(net, tmp_path / "n.onnx", lrn="native").path
    assert "LRN" not in _ops(fast_path) and _ops(native).count("LRN") == 2
    x = np.abs(_x("alexnet")) * 50  # large activations: the window sum matters
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    for path in (fast_path, native):
        got = run_ort(path, x)
        assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()


def test_lrn_window_matches_caffes_at_the_channel_ends(tmp_path):
    """One LRN on 7 channels, each input a distinct power of two: every output names its window."""
    text = ('name: "l"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 7 '
            'dim: 1 dim: 1 } } }\nlayer { name: "norm" type: "LRN" bottom: "data" top: "norm" lrn_param { '
            'local_size: 5 alpha: 1 beta: 0.75 k: 2 } }\n')
    net = caffe.load(parse_net_text(text))
    path = export_onnx(net, tmp_path / "l.onnx", lrn="fast").path
    x = (2.0 ** np.arange(7, dtype=np.float32)).reshape(1, 7, 1, 1)
    sq = x.reshape(-1).astype(np.float64) ** 2
    want = [x.reshape(-1)[c] / (2 + sum(sq[max(0, c - 2):c + 3]) / 5) ** 0.75 for c in range(7)]
    got = run_ort(path, x).reshape(-1)
    assert np.allclose(got, want, rtol=1e-6, atol=0)
