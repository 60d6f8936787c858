"""compress verify: onnxruntime vs PyTorch on the same inputs; bad files and shapes are clear errors."""
from __future__ import annotations

import json
import sys
import types
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from compress.cli import main
from converters.caffe.net import CaffeNet, LayerNode
from converters.errors import ConversionError
from converters.onnx.verify import verify_onnx


class InnerProduct(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


def tiny_net(size: int = 12) -> CaffeNet:
    """conv1 (1->4, 3x3) -> relu -> pool -> ip (10 classes); input data (N, 1, size, size)."""
    torch.manual_seed(0)
    half = (size - 2) // 2
    mods = {"conv1": nn.Conv2d(1, 4, 3), "relu1": nn.ReLU(), "pool1": nn.MaxPool2d(2),
            "ip": InnerProduct(4 * half * half, 10)}
    blobs = ["data", "conv1", "conv1", "pool1", "ip"]
    nodes = [LayerNode(n, t, (blobs[i],), (blobs[i + 1],), n)
             for i, (n, t) in enumerate([("conv1", "Convolution"), ("relu1", "ReLU"), ("pool1", "Pooling"),
                                         ("ip", "InnerProduct")])]
    return CaffeNet("tiny", {"data": (1, 1, size, size)}, nodes, mods, ["ip"], "").eval()


def export(module: nn.Module, path, shape, input_names=("data",), output_names=("ip",)) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(shape),), str(path), dynamo=False,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes={input_names[0]: {0: "N"}})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export(tiny_net(), path, (1, 1, 12, 12))
    return path


def perturbed(src, dst, delta=0.5):
    model = onnx.load(str(src))
    for init in model.graph.initializer:
        if init.name == "conv1.weight":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(delta), init.name))
    onnx.save(model, str(dst))
    return dst


def test_correct_export_passes(exported):
    r = verify_onnx(exported, tiny_net(), batch_size=8, seed=0, repeats=3, threads=1)
    assert r.passed
    assert r.max_abs_err < 1e-5 and r.max_rel_err < 1e-5
    assert r.top1_agreement == 1.0
    assert r.batch_size == 8 and r.inputs == {"data": (8, 1, 12, 12)} and r.outputs == ("ip",)
    assert r.ort_latency_ms > 0


def test_given_inputs_and_seed_reproducible(exported):
    x = np.zeros((3, 1, 12, 12), np.float32)
    x[:, 0, 5, 5] = [1.0, 2.0, 4.0]
    r = verify_onnx(exported, tiny_net(), inputs=x, repeats=1, threads=1)
    assert r.passed and r.batch_size == 3
    a = verify_onnx(exported, tiny_net(), seed=3, repeats=1, threads=1)
    b = verify_onnx(exported, tiny_net(), seed=3, repeats=1, threads=1)
    assert a.max_abs_err == b.max_abs_err


def test_perturbed_export_fails_with_its_error(exported, tmp_path):
    bad = perturbed(exported, tmp_path / "bad.onnx")
    r = verify_onnx(bad, tiny_net(), repeats=1, threads=1)
    assert not r.passed
    assert r.max_abs_err > 0.1 and r.max_rel_err > 1e-2
    # tiny perturbation: within a loose tolerance, outside a tight one
    slight = perturbed(exported, tmp_path / "slight.onnx", delta=1e-4)
    assert verify_onnx(slight, tiny_net(), atol=1e-2, repeats=1, threads=1).passed
    assert not verify_onnx(slight, tiny_net(), atol=1e-7, rtol=0, repeats=1, threads=1).passed


@pytest.mark.parametrize("content", [b"", b"this is not an onnx file\x00\xff" * 10])
def test_corrupt_onnx_is_a_clear_error(tmp_path, content):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(content)
    with pytest.raises(ConversionError, match=r"corrupt\.onnx: not a valid ONNX model"):
        verify_onnx(path, tiny_net(), repeats=1)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        verify_onnx(tmp_path / "nope.onnx", tiny_net())


def test_input_shape_mismatch_names_both_shapes(tmp_path):
    path = tmp_path / "big.onnx"
    export(tiny_net(14), path, (1, 1, 14, 14))
    with pytest.raises(ConversionError, match=r"ONNX input 'data' has shape \['N', 1, 14, 14\], "
                                              r"the model's input 'data' has shape \[1, 1, 12, 12\]"):
        verify_onnx(path, tiny_net(12), repeats=1)


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 3)
        self.b = nn.Linear(6, 5)

    def forward(self, x):
        return self.a(x), self.b(x)


def two_head_net(heads: TwoHeads) -> CaffeNet:
    nodes = [LayerNode("a", "InnerProduct", ("data",), ("a",), "a"),
             LayerNode("b", "InnerProduct", ("data",), ("b",), "b")]
    return CaffeNet("two", {"data": (1, 6)}, nodes, {"a": heads.a, "b": heads.b}, ["a", "b"], "")


def test_multiple_outputs_compared_by_name(tmp_path):
    heads = TwoHeads()

    class Swapped(nn.Module):  # ONNX declares the outputs in the other order
        def __init__(self):
            super().__init__()
            self.heads = heads

        def forward(self, x):
            a, b = self.heads(x)
            return b, a

    path = tmp_path / "two.onnx"
    export(Swapped(), path, (1, 6), output_names=("b", "a"))
    r = verify_onnx(path, two_head_net(heads), repeats=1, threads=1)
    assert r.passed and set(r.outputs) == {"a", "b"} and r.max_abs_err < 1e-5
    other = tmp_path / "renamed.onnx"
    export(Swapped(), other, (1, 6), output_names=("x", "y"))
    with pytest.raises(ConversionError, match=r"ONNX outputs \['x', 'y'\] do not match the model's outputs"):
        verify_onnx(other, two_head_net(heads), repeats=1)


@pytest.fixture
def fake_models(monkeypatch):
    """``--against tiny`` resolves to the tiny net (the CLI's model loading is tested elsewhere)."""
    fake = types.ModuleType("compress.modelfile")
    fake.load_model = lambda spec, prototxt=None: types.SimpleNamespace(net=tiny_net(), meta={}, path=spec)
    monkeypatch.setitem(sys.modules, "compress.modelfile", fake)


def test_cli_summary_and_json(exported, fake_models, capsys):
    assert main(["verify", str(exported), "--against", "tiny", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "max abs error" in out and "top-1 agreement  100.0%" in out and "PASSED" in out
    assert main(["verify", str(exported), "--against", "tiny", "--json", "--batch-size", "4"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["passed"] is True and d["batch_size"] == 4 and d["top1_agreement"] == 1.0
    assert d["against"] == "tiny" and d["inputs"] == {"data": [4, 1, 12, 12]}


def test_cli_fails_on_perturbed_export(exported, fake_models, tmp_path, capsys):
    bad = perturbed(exported, tmp_path / "bad.onnx")
    assert main(["verify", str(bad), "--against", "tiny", "--repeats", "1"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out
    assert captured.err.startswith("Error: ") and "does not match tiny: max abs error" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_cli_corrupt_file_one_line(fake_models, tmp_path, capsys):
    path = tmp_path / "x.onnx"
    path.write_bytes(b"\x08\x07garbage")
    assert main(["verify", str(path), "--against", "tiny"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "not a valid ONNX model" in err and len(err.splitlines()) == 1


def test_end_to_end_model_file_export_verify(tmp_path, capsys):
    """The real chain: zoo LeNet, pruned by hand, saved, exported with sparse initializers, verified."""
    from compress.modelfile import load_model, save_model
    from converters.onnx import export_onnx

    net = load_model("lenet").net
    with torch.no_grad():
        for name in ("conv1", "conv2", "ip1", "ip2"):
            w = net.layer(name).weight
            w[w.abs() < w.abs().flatten().kthvalue(int(0.9 * w.numel())).values] = 0.0
    model, onnx_path = tmp_path / "lenet_pruned.pt", tmp_path / "lenet_pruned.onnx"
    save_model(model, net, {"method": "magnitude"})
    export_onnx(net, onnx_path)
    assert main(["verify", str(onnx_path), "--against", str(model), "--data", "synthetic",
                 "--batch-size", "4", "--repeats", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["passed"] and d["max_abs_err"] < 1e-5 and d["inputs"] == {"data": [4, 1, 28, 28]}
    # against a different (unpruned) LeNet the same file fails
    assert main(["verify", str(onnx_path), "--against", "lenet", "--repeats", "1"]) == 1
    assert "FAILED" in capsys.readouterr().out


# -- issue 17: graphs that fail when run, and NaN or infinity on either side ----------------------

def _edited(src, dst, edit):
    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst


def _group_3(model):  # 1 input channel, 3 groups: the checker passes it, onnxruntime's Conv does not
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    next(a for a in conv.attribute if a.name == "group").i = 3


def test_a_graph_that_loads_but_fails_when_run_is_one_error(exported, tmp_path):
    bad = _edited(exported, tmp_path / "group.onnx", _group_3)
    with pytest.raises(ConversionError, match=r"group\.onnx: onnxruntime failed to run it on inputs of "
                                              r"\[\[8, 1, 12, 12\]\] \(.*group"):
        verify_onnx(bad, tiny_net(), repeats=1)


def test_a_reference_computing_nan_is_an_error_naming_its_first_layer(exported):
    net = tiny_net()
    with torch.no_grad():
        net.layer("conv1").bias[1] = float("nan")
    with pytest.raises(ConversionError, match=r"the model computes NaN or infinity on these inputs "
                                              r"\(first at layer 'conv1' \(Convolution\) top 'conv1'\)"):
        verify_onnx(exported, net, repeats=1)


def test_an_export_computing_infinity_is_an_error_naming_the_output(exported, tmp_path):
    bad = perturbed(exported, tmp_path / "inf.onnx", delta=3e38)  # finite weights whose sums overflow
    with pytest.raises(ConversionError, match=r"inf\.onnx: onnxruntime computes NaN or infinity in output "
                                              r"'ip' on these inputs"):
        verify_onnx(bad, tiny_net(), repeats=1)


def test_an_export_holding_nan_is_refused_on_load(exported, tmp_path):
    bad = perturbed(exported, tmp_path / "nan.onnx", delta=np.nan)
    with pytest.raises(ConversionError, match=r"nan\.onnx: initializer 'conv1.weight': 36 of 36 values are "
                                              r"NaN or infinite"):
        verify_onnx(bad, tiny_net(), repeats=1)


def test_cli_graph_that_fails_when_run_is_one_line_on_stderr(exported, fake_models, tmp_path, capfd):
    bad = _edited(exported, tmp_path / "group.onnx", _group_3)
    assert main(["verify", str(bad), "--against", "tiny", "--repeats", "1"]) == 1
    err = capfd.readouterr().err  # onnxruntime logs its failures to the file descriptor unless told not to
    assert err.startswith("Error: ") and "group.onnx: onnxruntime" in err and len(err.splitlines()) == 1, err
