"""The README's Python API example runs as written (in a scratch directory)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (Python API)", "exec"), {})  # noqa: S102 - the project's own README
    out = capsys.readouterr().out
    assert "{'numel': 400000, 'nonzero': 3600, 'target': 0.009}" in out
    assert "| **Total** | **430.5K** | **6.05K** |" in out and "conv1 4" in out
    assert (tmp_path / "lenet_q4.onnx").is_file()


def test_readme_links_resolve_and_it_stays_short():
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        assert (README.parent / target).exists(), target
    assert len(text.splitlines()) <= 250
