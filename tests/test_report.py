"""compress report: the ADMM paper's per-layer table, CSV/JSON, baseline, plot, newest prune output."""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import types

import pytest
import torch
from torch import nn

from compress.errors import CompressError
from compress.report.latest import latest_pruned
from compress.report.render import format_count, format_percent, render
from compress.report.rows import build_report, layer_rows
from converters.caffe.net import CaffeNet, LayerNode


class InnerProduct(nn.Linear):
    """Caffe's InnerProduct flattens its bottom."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


def lenet(kept: dict[str, tuple[int, int]] | None = None) -> CaffeNet:
    """Caffe's LeNet (weights only: 430.5K). ``kept[layer] = (filters, channels)``: keep that
    top-left block of filters x input channels nonzero (all 1.0), zero the rest."""
    layers = [
        ("conv1", "Convolution", nn.Conv2d(1, 20, 5)), ("pool1", "Pooling", nn.MaxPool2d(2)),
        ("conv2", "Convolution", nn.Conv2d(20, 50, 5)), ("pool2", "Pooling", nn.MaxPool2d(2)),
        ("ip1", "InnerProduct", InnerProduct(800, 500)), ("relu1", "ReLU", nn.ReLU()),
        ("ip2", "InnerProduct", InnerProduct(500, 10)),
    ]
    blobs = ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "ip1", "ip2"]
    nodes = [LayerNode(name, t, (blobs[i],), (blobs[i + 1],), name) for i, (name, t, _) in enumerate(layers)]
    net = CaffeNet("LeNet", {"data": (64, 1, 28, 28)}, nodes, {n: m for n, _, m in layers}, ["ip2"], "")
    with torch.no_grad():
        for name, (f, c) in (kept or {}).items():
            w = net.layer(name).weight
            w.zero_()
            w[:f, :c] = 1.0
    return net.eval()


# conv1 100 of 500, conv2 2K of 25K, ip1 3.6K of 400K, ip2 350 of 5K: the paper's 6.05K of 430.5K
PAPER = {"conv1": (4, 1), "conv2": (8, 10), "ip1": (60, 60), "ip2": (10, 35)}
META = {"method": "admm", "sparsity": "elem", "accuracy_before": 0.9911, "accuracy_after": 0.992,
        "source": "zoo:lenet"}


def paper_report(**kw):
    return build_report(lenet(PAPER), META, model="lenet_admm.pt", **kw)


@pytest.mark.parametrize("n, text", [
    (500, "0.5K"), (25000, "25K"), (400000, "400K"), (430500, "430.5K"), (37748736, "37.7M"),
    (6050, "6.05K"), (3600, "3.6K"), (350, "0.35K"), (100, "0.1K"), (2000, "2K"), (0, "0"),
    (60954656, "61M"), (2_900_000, "2.9M"), (999_960, "1M"), (1_600_000, "1.6M"), (5, "0.005K"),
])
def test_format_count_like_the_paper(n, text):
    assert format_count(n) == text


@pytest.mark.parametrize("fraction, text", [
    (0.2, "20%"), (0.009, "0.9%"), (0.08, "8%"), (0.07, "7%"), (1.0, "100%"), (0.0, "0%"),
    (6050 / 430500, "1.41%"), (0.0476, "4.76%"), (0.028, "2.8%"), (0.81, "81%"),
    (2 / 60954656, "<0.01%"), (1 - 2 / 60954656, ">99.9%"), (0.9999, ">99.9%"),
    (0.999, "99.9%"),
])
def test_format_percent(fraction, text):
    assert format_percent(fraction) == text


def test_rows_counts_weights_channels_and_macs():
    rows = {r.name: r for r in layer_rows(lenet(PAPER))}
    assert list(rows) == ["conv1", "conv2", "ip1", "ip2"]  # Caffe names, execution order, no pooling
    assert [(r.weights, r.nonzero) for r in rows.values()] == [(500, 100), (25000, 2000), (400000, 3600),
                                                               (5000, 350)]
    c2 = rows["conv2"]
    assert (c2.type, c2.shape) == ("Convolution", (50, 20, 5, 5))
    assert (c2.filters, c2.filters_kept, c2.channels, c2.channels_kept) == (50, 8, 20, 10)
    assert (rows["ip1"].filters_kept, rows["ip1"].channels, rows["ip1"].channels_kept) == (60, 800, 60)
    # conv1: 24x24 output positions; conv2: 8x8; Linear: in*out
    assert (rows["conv1"].macs, rows["conv1"].macs_nonzero) == (500 * 576, 100 * 576)
    assert (c2.macs, c2.macs_nonzero, c2.macs_structured) == (25000 * 64, 2000 * 64, 8 * 10 * 25 * 64)
    assert (rows["ip1"].macs, rows["ip1"].macs_nonzero) == (400000, 3600)
    assert c2.kept == pytest.approx(0.08)


def test_structured_macs_count_whole_filters_and_channels():
    net = lenet()
    with torch.no_grad():
        w = net.conv2.weight
        w.zero_()
        w[0, 0, 0, 0] = 1.0  # 2 scattered nonzeros: filters 0, 3 and channels 0, 5 survive
        w[3, 5, 2, 2] = -2.0
    r = layer_rows(net)[1]
    assert (r.nonzero, r.filters_kept, r.channels_kept) == (2, 2, 2)
    assert r.macs_nonzero == 2 * 64
    assert r.macs_structured == 2 * 2 * 25 * 64  # a 2x2 block of 5x5 kernels after thinning


def test_grouped_and_transposed_conv_and_plain_modules():
    net = nn.Sequential()
    net.add_module("g", nn.Conv2d(4, 6, 3, padding=1, groups=2))
    net.add_module("up", nn.ConvTranspose2d(6, 2, 2, stride=2))
    with torch.no_grad():
        net.g.weight.zero_()
        net.g.weight[0, 1, 0, 0] = 1.0  # group 0: filter 0 reads input channel 1
        net.g.weight[4, 0, 1, 1] = 1.0  # group 1: filter 4 reads input channel 2 (= 2 + 0)
        net.up.weight.zero_()
        net.up.weight[5, 1] = 1.0  # (in, out, kh, kw): input channel 5 -> output filter 1
    g, up = layer_rows(net, input_shapes={"x": (1, 4, 5, 5)})
    assert (g.type, g.filters, g.filters_kept, g.channels, g.channels_kept) == ("Conv2d", 6, 2, 4, 2)
    assert (g.macs, g.nonzero, g.macs_structured) == (6 * 2 * 9 * 25, 2, 2 * 9 * 25)
    assert (up.filters, up.filters_kept, up.channels, up.channels_kept) == (2, 1, 6, 1)
    assert (up.macs, up.macs_nonzero, up.macs_structured) == (6 * 2 * 4 * 25, 4 * 25, 4 * 25)
    assert layer_rows(net)[0].macs is None  # no input shape known: no MACs, still counts


def test_markdown_is_the_papers_table_cell_by_cell():
    text = render(paper_report(), "markdown")
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:4] == ["Layer", "Weights", "Weights after prune", "Weights after prune %"]
    table = [[c.strip().strip("*") for c in line.strip("|").split("|")] for line in lines[2:7]]
    assert [row[:4] for row in table] == [
        ["conv1", "0.5K", "0.1K", "20%"],
        ["conv2", "25K", "2K", "8%"],
        ["ip1", "400K", "3.6K", "0.9%"],
        ["ip2", "5K", "0.35K", "7%"],
        ["Total", "430.5K", "6.05K", "1.41%"],
    ]
    col = dict(zip(header, table[1], strict=True))
    assert (col["Filters kept"], col["Channels kept"]) == ("8/50", "10/20")
    macs = (col["MACs"], col["MACs after (nonzero)"], col["MACs after (channels)"])
    assert macs == ("1.6M", "128K", "128K")
    assert "Compression: 71.2x (6.05K of 430.5K weights kept, 98.6% pruned; biases not counted)" in text
    assert "Method: admm (elem)" in text
    assert "Accuracy (top-1): 99.11% before, 99.20% after" in text
    assert paper_report().compression == pytest.approx(430500 / 6050)


def test_total_only_without_per_layer():
    lines = render(paper_report(), "markdown", per_layer=False).splitlines()
    assert lines[2].startswith("| **Total** | **430.5K** | **6.05K** | **1.41%**")
    assert lines[3] == ""


def test_unpruned_model_reports_zero_percent_pruned():
    report = build_report(lenet(), {})
    assert report.compression == 1.0
    text = render(report, "markdown")
    assert "| **Total** | **430.5K** | **430.5K** | **100%**" in text
    assert "Not pruned: 0 of 430.5K weights (0%) are zero, as trained" in text and "Compression" not in text
    assert "Method" not in text and "Accuracy" not in text


def test_csv_raw_integers():
    rows = list(csv.DictReader(io.StringIO(render(paper_report(), "csv"))))
    assert [r["layer"] for r in rows] == ["conv1", "conv2", "ip1", "ip2", "Total"]
    assert rows[2]["weights"] == "400000" and rows[2]["nonzero"] == "3600"
    assert float(rows[2]["kept"]) == pytest.approx(0.009)
    assert rows[4]["weights"] == "430500" and rows[4]["nonzero"] == "6050"
    assert rows[1]["macs"] == "1600000" and rows[1]["baseline_nonzero"] == ""


def test_json_stable_schema():
    d = json.loads(render(paper_report(), "json"))
    assert d["schema"] == "compress.report/1"
    assert (d["method"], d["model"], d["accuracy_after"]) == ("admm", "lenet_admm.pt", 0.992)
    assert d["compression"] == pytest.approx(71.157, abs=1e-3)
    assert [layer["name"] for layer in d["layers"]] == ["conv1", "conv2", "ip1", "ip2"]
    conv1 = d["layers"][0]
    assert conv1 == {"name": "conv1", "type": "Convolution", "shape": [20, 1, 5, 5], "weights": 500,
                     "nonzero": 100, "kept": 0.2, "filters": 20, "filters_kept": 4, "channels": 1,
                     "channels_kept": 1, "macs": 288000, "macs_nonzero": 57600, "macs_structured": 57600,
                     "baseline_nonzero": None}
    assert d["total"]["weights"] == 430500 and d["total"]["nonzero"] == 6050


def test_unknown_format_lists_the_formats():
    with pytest.raises(CompressError, match="unknown report format 'xml'; choose from markdown, csv, json"):
        render(paper_report(), "xml")


def test_baseline_comparison():
    dense = lenet()
    with torch.no_grad():
        dense.ip2.weight[0, 0] = 0.0  # the baseline has one zero of its own
    report = paper_report(baseline=dense, baseline_name="lenet.pt")
    rows = {r.name: r for r in report.rows}
    assert rows["ip2"].baseline_nonzero == 4999 and rows["conv1"].baseline_nonzero == 500
    assert report.baseline_compression == pytest.approx(430499 / 6050)
    text = render(report, "markdown")
    assert "Against baseline lenet.pt: 71.2x" in text
    assert "| Baseline nonzero | vs baseline |" in text.splitlines()[0]


def test_baseline_mismatch_is_a_clear_error():
    other = lenet()
    other.ip2 = InnerProduct(500, 12)  # same name, other shape
    with pytest.raises(CompressError, match=r"baseline layer 'ip2' has weight shape \(12, 500\), "
                                            r"the model has \(10, 500\)"):
        paper_report(baseline=other)
    seq = nn.Sequential(nn.Conv2d(1, 20, 5))
    with pytest.raises(CompressError, match="missing in the baseline: conv1, conv2, ip1, ip2; "
                                            "only in the baseline: 0"):
        paper_report(baseline=seq)


def _write_model(path, meta, mtime):
    torch.save({"format": "compress-model", "version": 1, "netdef": "", "blobs": {"ip": [torch.zeros(3)]},
                "meta": json.dumps(meta)}, path)
    os.utime(path, (mtime, mtime))


def test_latest_pruned_picks_newest_prune_output(tmp_path):
    _write_model(tmp_path / "old_admm.pt", {"method": "admm"}, 1_000_000)
    _write_model(tmp_path / "new_rvsm.pt", {"method": "rvsm"}, 2_000_000)
    _write_model(tmp_path / "converted.pt", {"source": "lenet.caffemodel"}, 3_000_000)  # not pruned
    torch.save({"state_dict": {}}, tmp_path / "checkpoint.pt")  # not a model file
    (tmp_path / "notes.pt").write_text("not torch at all")
    assert latest_pruned(tmp_path).name == "new_rvsm.pt"


def test_latest_pruned_none_found(tmp_path):
    _write_model(tmp_path / "converted.pt", {"source": "x"}, 1_000_000)
    with pytest.raises(CompressError, match="no pruned model file"):
        latest_pruned(tmp_path)


def test_plot_without_matplotlib_says_which_extra(monkeypatch, tmp_path):
    from compress.report.plot import plot_kept

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(CompressError, match=r"install the plot extra: pip install 'compress\[plot\]'"):
        plot_kept(paper_report(), tmp_path / "kept.png")
    assert not (tmp_path / "kept.png").exists()


def test_plot_draws_kept_percent_per_layer(monkeypatch, tmp_path):
    """With a stand-in for matplotlib's Figure: one bar per layer at its kept %, log scale, PNG bytes."""
    from compress.report.plot import plot_kept

    calls = {}

    class Bar:
        def __init__(self, x, h):
            self.x, self.h = x, h

        def get_x(self):
            return self.x

        def get_width(self):
            return 0.8

        def get_height(self):
            return self.h

    class Axes:
        def bar(self, names, heights, **kw):
            calls["bar"] = (list(names), list(heights))
            return [Bar(i, h) for i, h in enumerate(heights)]

        def set_yscale(self, s):
            calls["yscale"] = s

        def __getattr__(self, name):
            return lambda *a, **k: None

    class Figure:
        def __init__(self, **kw):
            pass

        def add_subplot(self, *a):
            return Axes()

        def tight_layout(self):
            pass

        def savefig(self, buf, format, dpi):
            buf.write(b"\x89PNG fake")

    fake = types.ModuleType("matplotlib.figure")
    fake.Figure = Figure
    monkeypatch.setitem(sys.modules, "matplotlib", types.ModuleType("matplotlib"))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", fake)
    plot_kept(paper_report(), tmp_path / "kept.png")
    names, heights = calls["bar"]
    assert names == ["conv1", "conv2", "ip1", "ip2"]
    assert heights == pytest.approx([20, 8, 0.9, 7])
    assert calls["yscale"] == "log"
    assert (tmp_path / "kept.png").read_bytes() == b"\x89PNG fake"


# --- the command line ------------------------------------------------------------------------------

@pytest.fixture
def fake_models(monkeypatch):
    """MODEL specs resolve to hand-made nets: "dense" (unpruned LeNet), "other" (another ip2 shape),
    anything else the paper's pruned LeNet (model loading itself is tested with modelfile)."""
    def load_model(spec, prototxt=None):
        if spec == "dense":
            return types.SimpleNamespace(net=lenet(), meta={}, path=None)
        if spec == "other":
            net = lenet()
            net.ip2 = InnerProduct(500, 12)
            return types.SimpleNamespace(net=net, meta={}, path=None)
        return types.SimpleNamespace(net=lenet(PAPER), meta=META, path=str(spec))

    fake = types.ModuleType("compress.modelfile")
    fake.load_model = load_model
    monkeypatch.setitem(sys.modules, "compress.modelfile", fake)


def test_cli_markdown_per_layer(fake_models, capsys):
    from compress.cli import main

    assert main(["report", "lenet_admm.pt", "--per-layer"]) == 0
    out = capsys.readouterr().out
    assert "| ip1 | 400K | 3.6K | 0.9% |" in out and "Compression: 71.2x" in out
    assert main(["report", "dense"]) == 0  # unpruned: said so, no error, Total row only
    out = capsys.readouterr().out
    assert "| conv1 |" not in out and "Not pruned: 0 of 430.5K weights (0%) are zero" in out
    assert main(["report", "lenet_admm.pt", "--json"]) == 0  # machine formats have every layer
    d = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in d["layers"]] == ["conv1", "conv2", "ip1", "ip2"] and d["pruned"] is True
    assert main(["report", "lenet_admm.pt", "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6  # header, 4 layers, Total


def test_cli_writes_csv_and_json_files(fake_models, tmp_path, capsys):
    from compress.cli import main

    out = tmp_path / "r.csv"
    assert main(["report", "m.pt", "--per-layer", "--format", "csv", "-o", str(out)]) == 0
    assert out.read_text().splitlines()[-1].startswith("Total,,430500,6050,")
    assert main(["report", "m.pt", "--per-layer", "--format", "json", "--baseline", "dense"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["baseline"] == "dense" and d["total"]["baseline_nonzero"] == 430500


def test_cli_errors_are_one_line(fake_models, tmp_path, capsys):
    from compress.cli import main

    assert main(["report", "m.pt", "--baseline", "other"]) == 1
    err = capsys.readouterr().err
    assert err == "Error: baseline layer 'ip2' has weight shape (12, 500), the model has (10, 500)\n"
    assert main(["report", "m.pt", "-o", str(tmp_path / "missing" / "r.md")]) == 1
    assert "output directory does not exist" in capsys.readouterr().err


def test_cli_without_model_picks_the_newest_prune_output(fake_models, tmp_path, monkeypatch, capsys):
    from compress.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["report", "--per-layer"]) == 1
    assert "no pruned model file" in capsys.readouterr().err
    _write_model(tmp_path / "a.pt", {"method": "admm"}, 1_000_000)
    _write_model(tmp_path / "b.pt", {"method": "admm"}, 2_000_000)
    assert main(["report", "--per-layer"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "Reporting the newest pruned model here: b.pt\n"
    assert "| **Total** | **430.5K** | **6.05K** |" in captured.out


def test_cli_plot_without_matplotlib_writes_nothing(fake_models, tmp_path, monkeypatch, capsys):
    from compress.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "r.md"
    assert main(["report", "m.pt", "--plot", str(tmp_path / "k.png"), "-o", str(out)]) == 1
    assert "pip install 'compress[plot]'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_real_model_file_newest_in_directory(tmp_path, monkeypatch, capsys):
    """Without fakes: a zoo LeNet pruned to the paper's counts, saved with save_model, reported."""
    from compress.cli import main
    from compress.modelfile import load_model, save_model

    net = load_model("lenet").net
    with torch.no_grad():
        for name, (f, c) in PAPER.items():
            w = net.layer(name).weight
            w.zero_()
            w[:f, :c] = 0.5
    save_model(tmp_path / "lenet_admm.pt", net, META)
    save_model(tmp_path / "dense.pt", load_model("lenet").net, {"source": "zoo:lenet"})  # newer, not pruned
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--per-layer", "--baseline", "dense.pt"]) == 0
    captured = capsys.readouterr()
    assert "lenet_admm.pt" in captured.err
    assert "| conv2 | 25K | 2K | 8% | 8/50 | 10/20 | 1.6M | 128K | 128K | 25K | 8% |" in captured.out
    assert "Compression: 71.2x" in captured.out
