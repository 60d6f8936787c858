"""The fuzz suite itself (tools/fuzz): its runner's classification, its generators, the malicious
pickles (real, and refused), and a fast slice of a campaign that must end with no non-clean outcome."""
from __future__ import annotations

import os
import signal
import time

import pytest

from compress.errors import CompressError
from tools.fuzz import Limits, failures, payloads, run_campaign, run_limited, seeds, summary_table, wire
from tools.fuzz.campaign import TARGETS, make_case

# The runner forks and limits children through /proc and rlimits: Linux only.
pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")


@pytest.mark.parametrize("call, outcome", [
    (lambda: None, "ok"),
    (lambda: (_ for _ in ()).throw(CompressError("one clear line")), "clean"),
    (lambda: (_ for _ in ()).throw(CompressError("two\nlines")), "other"),
    (lambda: (_ for _ in ()).throw(CompressError("x" * 1001)), "other"),
    (lambda: (_ for _ in ()).throw(ValueError("a plain ValueError")), "other"),
    (lambda: (_ for _ in ()).throw(KeyError("attribute 'forward' already exists")), "other"),
    (lambda: bytearray(1 << 40), "memory"),
    (lambda: time.sleep(30), "timeout"),
    (lambda: os.kill(os.getpid(), signal.SIGSEGV), "signal"),
])
def test_runner_classifies_every_way_a_call_ends(call, outcome):
    assert run_limited(call, Limits(memory=256 << 20, timeout=1.5)).outcome == outcome


def test_runner_sees_code_that_ran(tmp_path):
    marker = tmp_path / "MARKER"
    assert run_limited(lambda: marker.write_text("ran"), marker=marker).outcome == "code"


def test_wire_tree_serializes_back_to_the_same_bytes():
    from converters.caffe.proto import caffe_pb2

    for data in (seeds.lenet_caffemodel(), seeds.lenet_v1()[0]):
        tree = wire.parse(data, caffe_pb2.NetParameter.DESCRIPTOR)
        assert wire.serialize(tree) == data
        blobs = [f for f, _ in wire.walk(tree) if getattr(f.descriptor, "name", "") == "BlobProto"]
        assert len(blobs) == 8  # LeNet: weights and biases of conv1, conv2, ip1, ip2


def test_v1_seed_is_the_zoo_lenet_in_the_v1_format(tmp_path):
    import torch

    from compress.modelfile import load_model

    data, text = seeds.lenet_v1()
    assert "layers {" in text and "type: CONVOLUTION" in text and "input_dim: 28" in text
    (tmp_path / "v1.caffemodel").write_bytes(data)
    v1, zoo = load_model(str(tmp_path / "v1.caffemodel")), load_model("lenet")
    x = torch.randn(1, 1, 28, 28)
    assert torch.equal(v1.net(x), zoo.net(x))


@pytest.mark.parametrize("target", list(TARGETS))
def test_cases_are_replayable_from_seed_and_index(tmp_path, target):
    """The same seed, index and directory give the same mutated bytes (a pickle's payload names its
    directory), and another index gives another case."""
    for i in range(3):
        first = make_case(7, i, tmp_path, (target,))
        written = {name: (tmp_path / name).read_bytes() for name in first.files}
        second = make_case(7, i, tmp_path, (target,))
        assert first.target == target and first.mutation == second.mutation and first.argv == second.argv
        assert first.files == second.files == written
    assert make_case(7, 3, tmp_path, (target,)).files != make_case(7, 4, tmp_path, (target,)).files


def _refused_without_running(path, marker) -> str:
    from compress.modelfile import load_model

    verdict = run_limited(lambda: load_model(str(path)), Limits(timeout=60), marker=marker)
    assert verdict.outcome == "clean", verdict
    return verdict.detail


@pytest.mark.parametrize("name", sorted(payloads.pickles("m")))
def test_malicious_pickles_run_code_without_weights_only_and_are_refused_here(tmp_path, name):
    import torch

    marker = tmp_path / "MARKER"
    raw = payloads.pickles(str(marker))[name]
    archive = payloads.wrap(raw, "zip", seeds.lenet_model_file())
    (tmp_path / "m.pt").write_bytes(archive)
    # Proof that the payload is real: a plain torch.load runs it (in a forked child).
    run_limited(lambda: torch.load(tmp_path / "m.pt", weights_only=False))
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:  # Popen's child may touch it later
        time.sleep(0.05)
    assert marker.exists(), f"{name} did not run under weights_only=False"
    marker.unlink()
    for how in payloads.WRAPPINGS:
        path = tmp_path / f"{how}.pt"
        path.write_bytes(payloads.wrap(raw, how, seeds.lenet_model_file()))
        detail = _refused_without_running(path, marker)
        assert "refused: its pickle calls" in detail and "weights_only" not in detail
        time.sleep(0.05 if "Popen" in name else 0)
        assert not marker.exists()


def test_fast_slice_of_a_campaign_has_only_clean_outcomes():
    start = time.monotonic()
    limits = Limits(memory=2 << 30, timeout=60)
    results = run_campaign(36, seed=20240601, jobs=2, limits=limits)
    table = summary_table(results)
    assert len(results) == 36 and not failures(results), table + "\n".join(map(str, failures(results)))
    assert {"ok", "clean"} <= {r.outcome for r in results}
    # Only a hang fails here: every case has its own time limit (a case past it is a "timeout" above),
    # so a slow or busy machine makes the slice slower, never red; the seeds take a minute at most.
    assert time.monotonic() - start < 36 * limits.timeout / 2 + 120


def test_the_training_seed_trains_and_its_state_resumes(tmp_path):
    """The unmutated set-up of the training targets is a working LeNet run: `compress train` and
    `compress train --resume` of the snapshot state both succeed (a mutation is then what fails)."""
    from tools.fuzz import training
    from tools.fuzz.campaign import _after, load_and_check

    for resume in (False, True):
        case = training.case("solverstate" if resume else "solver", "seed", {}, resume=resume)
        directory = tmp_path / str(resume)
        directory.mkdir()
        case.write(directory)
        verdict = _after(run_limited(lambda c=case, d=directory: load_and_check(c, d)), case, directory)
        assert verdict.outcome == "ok", verdict
        assert (directory / "out.caffemodel").is_file() and (directory / "lenet_iter_4.caffemodel").is_file()


def test_a_training_run_past_the_work_bound_is_drawn_again():
    from tools.fuzz import lenet_setup, training

    files = dict(lenet_setup.files())
    assert training.within_bounds(files)
    edits = [("max_iter: 4", "max_iter: 2147483647"), ("max_iter: 4", "max_iter: 4\niter_size: 100000"),
             ("test_iter: 2", "test_iter: 2147483647"), ("snapshot: 2", "snapshot: 1\nmax_iter: 100")]
    for old, new in edits:
        solver = lenet_setup.SOLVER.replace(old, new)
        assert not training.within_bounds({**files, "solver.prototxt": solver.encode()}), new


@pytest.mark.parametrize("kind, bits, dequantize", [
    ("4bit", 4, "DequantizeLinear"), ("2bit", 2, "DequantizeLinear"), ("sparse-2bit", 2, "SparseDequantize")])
def test_the_quantized_seeds_are_the_tools_own_outputs(tmp_path, kind, bits, dequantize):
    import onnx

    from compress.modelfile import read_model_file

    model_file, onnx_file = seeds.quantized(kind)
    (tmp_path / "q.pt").write_bytes(model_file)
    assert read_model_file(tmp_path / "q.pt").meta["quantization"]["bits"] == bits
    assert dequantize in {n.op_type for n in onnx.load_from_string(onnx_file).graph.node}
