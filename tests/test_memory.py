"""The memory guard (issue 12, item 5): parameters, blobs and the largest temporary of the forward pass,
against the memory the process can actually get (cgroup v1/v2, RLIMIT_AS/RLIMIT_DATA), refused before
anything is allocated."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from compress.cli import main
from converters.caffe import memory
from converters.caffe.builder import build_net
from converters.caffe.footprint import workspace_bytes
from converters.caffe.prototxt import parse_net_text
from converters.errors import ConversionError
from tools.fuzz.runner import Limits, run_limited

GB = 1 << 30
linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="forks under rlimits")


def _net(body: str, shape: str = "dim: 1 dim: 3 dim: 8 dim: 8") -> str:
    return (f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {shape} }} }} }}\n'
            + body)


LRN_HUGE = _net('layer { name: "n" type: "LRN" bottom: "data" top: "y" '
                'lrn_param { local_size: 2147483647 } }')
CONV_PAD = _net('layer { name: "c" type: "Convolution" bottom: "data" top: "y" '
                'convolution_param { num_output: 1 kernel_size: 1 pad: 30000 } }')


def _cli_in_child(tmp_path, argv: list[str], extra_memory: int) -> tuple[int, str]:
    """``main(argv)`` in a forked child whose address space may grow by ``extra_memory`` bytes."""
    err = tmp_path / "stderr.txt"

    def call():
        with open(err, "w") as f:
            sys.stderr = f
            return {"rc": main(argv)}

    verdict = run_limited(call, Limits(memory=extra_memory, timeout=120))
    assert verdict.outcome == "ok", verdict
    return verdict.extra["rc"], err.read_text()


def test_lrn_local_size_is_refused_for_its_forward_pass_not_after_loading():
    # Before: it loaded and `convert` exited 0; the first forward pass then asked for 550 GB.
    with pytest.raises(ConversionError, match=r"the largest is the forward pass of layer 'n' \(LRN\)"):
        build_net(parse_net_text(LRN_HUGE), memory_limit=8 * GB)


def test_convolution_columns_count_not_just_its_output():
    # The 1x1x60000x60000 output (14.4 GB) fits in 20 GB; lowering the padded input to columns (43 GB)
    # does not. Before, the guard saw the output only and the forward pass died asking for 43 GB.
    with pytest.raises(ConversionError, match=r"largest is the forward pass of layer 'c' \(Convolution\)"):
        build_net(parse_net_text(CONV_PAD), memory_limit=20 * GB)


def test_conv_workspace_is_columns_plus_padded_input():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, device="meta")
    x, y = torch.empty(2, 3, 8, 8, device="meta"), torch.empty(2, 4, 8, 8, device="meta")
    assert workspace_bytes(conv, [x], [y]) == (3 * 3 * 3 * 8 * 8 + 3 * 10 * 10) * 4
    deconv = torch.nn.ConvTranspose2d(3, 4, 2, stride=2, device="meta")
    assert workspace_bytes(deconv, [x], [torch.empty(2, 4, 16, 16, device="meta")]) == 4 * 2 * 2 * 8 * 8 * 4


def test_weights_already_in_memory_are_not_counted_twice():
    text = _net('layer { name: "ip" type: "InnerProduct" bottom: "data" top: "y" '
                'inner_product_param { num_output: 100000 } }', "dim: 1 dim: 192")  # 76.8 MB of weights
    w = np.zeros((100000, 192), np.float32)
    net = build_net(parse_net_text(text), {"ip": [w, np.zeros(100000, np.float32)]}, memory_limit=40 << 20)
    assert net.layer("ip").weight.data_ptr() == torch.from_numpy(w).data_ptr()  # adopted, not copied
    with pytest.raises(ConversionError, match=r"the parameters of layer 'ip' \(InnerProduct\)"):
        build_net(parse_net_text(text), memory_limit=40 << 20)  # initialized: they must be allocated


@linux_only
def test_cli_refuses_weights_over_the_process_address_space_limit(tmp_path):
    # Before: an InnerProduct with 6.9 GB of weights died in _initialize with a traceback under a
    # 6 GB limit. Here 1.2 GB of weights under a limit 1 GB above the current address space.
    proto = tmp_path / "wide.prototxt"
    proto.write_text(_net('layer { name: "ip" type: "InnerProduct" bottom: "data" top: "y" '
                          'inner_product_param { num_output: 300000 } }', "dim: 1 dim: 1000"))
    out = tmp_path / "out.pt"
    rc, err = _cli_in_child(tmp_path, ["convert", str(proto), "-o", str(out)], 1 * GB)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "the parameters of layer 'ip' (InnerProduct) at 1.2 GB" in err and "RLIMIT_AS" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["stderr.txt", "wide.prototxt"]


@linux_only
def test_cli_refuses_the_lrn_under_a_limit_and_writes_nothing(tmp_path):
    proto = tmp_path / "lrn.prototxt"
    proto.write_text(LRN_HUGE)
    out = tmp_path / "out.pt"
    rc, err = _cli_in_child(tmp_path, ["convert", str(proto), "-o", str(out)], 1 * GB)
    assert rc == 1 and "forward pass of layer 'n' (LRN)" in err and "refused before allocating" in err
    assert not out.exists()


@linux_only
def test_available_memory_sees_rlimit_as_and_rlimit_data():
    def call():
        import resource

        used = memory._key_values("/proc/self/status")["VmSize"] * 1024
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (used + 300_000_000, hard))
        a = memory.available_memory()
        return {"nbytes": a.nbytes, "bound": a.bound}

    v = run_limited(call, Limits(memory=8 * GB))
    assert v.outcome == "ok", v
    assert v.extra["bound"].startswith("RLIMIT_AS") and 220_000_000 < v.extra["nbytes"] <= 270_000_000


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cgroup_room_is_limit_minus_usage_less_reclaimable_pages(tmp_path, version):
    own = tmp_path / "user.slice" / "job"
    own.mkdir(parents=True)
    if version == "v2":
        files = ("memory.max", "memory.current", "inactive_file")
        (tmp_path / "memory.max").write_text("max\n")  # the root: no limit, skipped
    else:
        files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        (tmp_path / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (own / files[0]).write_text("1000000000\n")
    (own / files[1]).write_text("400000000\n")
    (own / "memory.stat").write_text(f"anon 300000000\n{files[2]} 100000000\n")
    room = memory._room(str(tmp_path), "/user.slice/job", files[0], files[1], files[2], version)
    assert [r.nbytes for r in room] == [700_000_000]
    assert room[0].bound == f"cgroup {version} memory limit 1.0 GB"


def test_available_memory_is_the_smallest_bound(monkeypatch):
    monkeypatch.setattr(memory, "_meminfo", lambda: memory.Available(8 * GB, "MemAvailable"))
    monkeypatch.setattr(memory, "_cgroup", lambda: [memory.Available(3 * GB, "cgroup v2 memory limit")])
    monkeypatch.setattr(memory, "_rlimits", lambda: [memory.Available(5 * GB, "RLIMIT_AS")])
    expected = int(3 * GB * (1 - memory.HEADROOM))
    assert memory.available_memory() == memory.Available(expected, "cgroup v2 memory limit")


def test_reader_refuses_blob_data_that_does_not_fit(tmp_path, monkeypatch):
    from converters.caffe import reader
    from tests.nets import TINY, write_net

    _, model = write_net(tmp_path, TINY)
    monkeypatch.setattr(reader, "available_memory", lambda: memory.Available(500, "RLIMIT_AS 500 B"))
    with pytest.raises(ConversionError, match=r"would not fit in the 500 B available to this process "
                                              r"\(RLIMIT_AS 500 B\); refused before reading"):
        reader.read_caffemodel(model)
