"""Shared pytest set-up: deterministic, single-threaded torch (the CI machine has 2 cores), and the real-Caffe
reference material, ``<repository root>/../shared/reference`` (or ``$COMPRESS_SHARED/reference``: a git
worktree or a clone elsewhere has no ``../shared`` beside it). A clean clone without it skips the tests that
need it, and the summary counts them in one line."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_MISSING = "the real-Caffe reference (../shared/reference) is not present"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


def shared_dir() -> Path:
    """``$COMPRESS_SHARED`` when set, else ``../shared`` beside the repository root."""
    env = os.environ.get("COMPRESS_SHARED")
    return Path(env).expanduser() if env else ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """``shared/reference``; a test that asks for it is skipped when it is absent."""
    path = shared_dir() / "reference"
    if not path.is_dir():
        pytest.skip(f"{REFERENCE_MISSING}: no {path}")
    return path


@pytest.fixture
def caffe_lenet(shared_reference: Path) -> Path:
    """Real Caffe 1.0's LeNet run (``reference/caffe_train/lenet``): its solver and train_val, initial
    weights, the weights after 20 iterations and the log (``reference.json``)."""
    return shared_reference / "caffe_train" / "lenet"


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and REFERENCE_MISSING in str(r.longrepr[2])]
    if skipped:
        n = len(skipped)
        terminalreporter.write_line(f"{n} test{'s' if n > 1 else ''} skipped: {REFERENCE_MISSING}")
