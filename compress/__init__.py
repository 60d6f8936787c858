"""compress: Caffe-compatible model compression.

Library first: every CLI command is a thin wrapper over a function in this package
(``compress.modelfile``, ``compress.prune``, ``compress.report``, ``compress.export``).
"""
from __future__ import annotations

__version__ = "0.1.0"
