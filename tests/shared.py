"""Where the tests find the real-Caffe reference material: ``<repository root>/../shared``.

    from tests.shared import reference
    lenet = reference("caffe_train", "lenet")   # skips the test when that directory is absent

``COMPRESS_SHARED`` names the shared directory instead (a git worktree or a clone elsewhere has no
``../shared`` beside it). A clean clone with no shared directory skips these tests with
:data:`SKIP_REASON`, and ``tests/conftest.py`` counts them in one line of the test summary.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_REASON = "the real-Caffe reference (../shared/reference) is not present"


def shared_dir() -> Path:
    """``$COMPRESS_SHARED`` when set, else ``../shared`` beside the repository root."""
    env = os.environ.get("COMPRESS_SHARED")
    return Path(env).expanduser() if env else ROOT.parent / "shared"


def reference(*parts: str) -> Path:
    """``shared/reference/<parts>``; the calling test is skipped (with :data:`SKIP_REASON`) when it is
    absent."""
    path = shared_dir().joinpath("reference", *parts)
    if not path.exists():
        pytest.skip(f"{SKIP_REASON}: no {path}")
    return path
