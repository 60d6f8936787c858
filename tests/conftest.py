"""Shared pytest set-up: deterministic, single-threaded torch (the CI machine has 2 cores), and one line
in the summary counting the tests skipped for want of the real-Caffe reference (tests/shared.py)."""
from __future__ import annotations

import pytest
import torch

from tests.shared import SKIP_REASON


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and SKIP_REASON in str(r.longrepr[2])]
    if skipped:
        n = len(skipped)
        terminalreporter.write_line(f"{n} test{'s' if n > 1 else ''} skipped: {SKIP_REASON}")
