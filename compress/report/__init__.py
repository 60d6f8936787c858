"""Per-layer sparsity reports: rows as data (``rows``), rendered as Markdown/CSV/JSON (``render``)
or a bar chart (``plot``)."""
from __future__ import annotations

from compress.report.render import RENDERERS, format_count, format_percent, render
from compress.report.rows import LayerRow, Report, build_report, layer_rows

__all__ = ["RENDERERS", "LayerRow", "Report", "build_report", "format_count", "format_percent",
           "layer_rows", "render"]
