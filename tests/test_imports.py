"""The import graph of compress/ and converters/ (``python -m tools.imports``): no circle anywhere, the floors
look only down (the training engine imports no technique), and the detector itself finds what it claims to
(a circle through a lazy import, ``from package import submodule``, a relative import, a stale path)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.imports import circles, import_graph

ROOT = Path(__file__).resolve().parents[1]

#: package prefixes each floor must not import (the engine and the helpers below it sit under the techniques)
FLOORS = {
    "converters": ("compress",),
    "compress.train": ("compress.prune", "compress.quant", "compress.solver", "compress.report",
                       "compress.commands"),
    "compress.quant": ("compress.prune", "compress.solver", "compress.report", "compress.commands"),
    "compress.solver": ("compress.prune", "compress.quant", "compress.report", "compress.commands"),
    "compress.prune": ("compress.quant", "compress.report", "compress.commands"),
    "compress.evaluate": ("compress.train", "compress.prune", "compress.quant", "compress.solver"),
    "compress.device": ("compress.train", "compress.prune", "compress.quant", "compress.solver"),
    "compress.layers": ("compress.train", "compress.prune", "compress.quant", "compress.solver"),
    "compress.logits": ("compress.train", "compress.prune", "compress.quant", "compress.solver"),
}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_check_passes_as_anyone_runs_it():
    out = subprocess.run([sys.executable, "-m", "tools.imports"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.rstrip().endswith(", 0 circles"), out.stdout


def test_no_floor_imports_one_above_it():
    modules, edges, _ = import_graph()
    assert "compress.train.trainer" in modules and "compress.prune.fronts" in modules
    wrong = [f"{e.source} -> {e.target} ({e.where(modules)})" for e in edges
             for floor, above in FLOORS.items() if _within(e.source, floor)
             and any(_within(e.target, a) for a in above)]
    assert wrong == []


def test_the_fuzz_suite_and_the_tools_are_not_installed():
    from setuptools import find_packages

    shipped = find_packages(where=str(ROOT), include=["compress*", "converters*", "zoo*"])
    assert "compress.train" in shipped and "compress.prune.methods" in shipped
    assert not [p for p in shipped if "fuzz" in p or p.startswith("tools")]


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_circle_through_a_lazy_import_and_a_submodule_import_is_found(tmp_path):
    root = _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",  # b is a submodule: the edge goes to pkg.b, not pkg
        "pkg/b.py": "def f():\n    from .sub import c\n",  # relative, inside a function
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "import pkg.a as a\n",
        "pkg/d.py": "from pkg.a import thing\n",  # into the circle, not part of it
    })
    modules, edges, unknown = import_graph(root, roots=("pkg",), users=())
    assert unknown == []
    lazy = {(e.source, e.target): e.lazy for e in edges}
    assert lazy == {("pkg.a", "pkg.b"): False, ("pkg.b", "pkg.sub.c"): True, ("pkg.sub.c", "pkg.a"): False,
                    ("pkg.d", "pkg.a"): False}
    assert circles(modules, edges) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


def test_an_import_of_a_module_that_is_not_there_is_named(tmp_path):
    root = _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "try:\n    from pkg.gone import x\nexcept ImportError:\n    pass\n",
        "tests/test_x.py": "from pkg.moved import y\nimport os\n",
    })
    modules, edges, unknown = import_graph(root, roots=("pkg",), users=("tests",))
    assert edges == [] and circles(modules, edges) == []
    assert unknown == ["pkg/a.py:2 pkg.gone", "tests/test_x.py:1 pkg.moved"]
