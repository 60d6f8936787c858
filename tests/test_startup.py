"""Start-up: ``compress --help``, ``compress zoo list``, ``compress info`` of a zoo net or a model file, and
the usage errors answer without importing torch (importing it alone costs seconds). Structural, not
timed: each command runs in a fresh interpreter that reports whether torch was imported
(``bench/startup.py`` measures the times)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# runs the CLI in-process, then says what it imported (after the command, whatever its exit status)
PROBE = """
import json, sys
from compress.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
heavy = [m for m in ("torch", "onnx", "onnxruntime") if m in sys.modules]
print("\\n" + json.dumps({"rc": rc, "heavy": heavy}))
"""


def _run(*argv: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    from compress.modelfile import load_model, save_model

    path = tmp_path_factory.mktemp("startup") / "lenet.pt"
    lenet = load_model("lenet")
    save_model(path, lenet.net, lenet.meta)
    return str(path)


@pytest.mark.parametrize("argv, rc", [
    (["--help"], 0),
    (["zoo", "list"], 0),
    (["info", "lenet"], 0),
    (["info", "alexnet"], 0),
    (["info", "zoo/resnet20.prototxt"], 0),
    (["info", "no-such-model"], 1),
    (["prune", "--bogus"], 2),
    (["prune"], 2),
    (["prune", "--help"], 0),
    (["quantize", "lenet"], 2),  # --bits missing
    (["quantize", "--method", "nope"], 2),
    (["quantize", "lenet", "--bits", "4", "-o", "x.pt", "--rho", "1"], 1),  # ptq takes no --rho
    (["quantize", "lenet", "--bits", "9", "-o", "x.pt"], 1),
    (["convert"], 2),
    (["export", "--bogus"], 2),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_no_torch_for(argv, rc):
    assert _run(*argv) == {"rc": rc, "heavy": []}


def test_no_torch_for_info_of_a_model_file(model_file):
    assert _run("info", model_file) == {"rc": 0, "heavy": []}


def test_torch_still_comes_when_needed(tmp_path):
    bad = tmp_path / "odd.prototxt"  # a kernel larger than its input: the torch builder says so
    bad.write_text((ROOT / "zoo/lenet.prototxt").read_text().replace("kernel_size: 5", "kernel_size: 50", 1))
    assert _run("info", str(bad)) == {"rc": 1, "heavy": ["torch"]}


def test_the_declared_pruning_methods_are_the_registered_ones():
    from compress.prune.method_params import PARAMS
    from compress.prune.methods import available, method_class

    assert list(PARAMS) == available()
    assert all(method_class(name).params is PARAMS[name] for name in PARAMS)


def test_the_declared_quantization_methods_are_the_registered_ones():
    from compress.quant.method_params import PARAMS, RAMP_SHAPES
    from compress.quant.methods import METHODS
    from compress.quant.regularizer import RAMPS

    assert list(PARAMS) == list(METHODS)
    assert all(METHODS[name].params is PARAMS[name] for name in PARAMS)
    assert RAMP_SHAPES == tuple(RAMPS)
